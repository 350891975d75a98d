"""Does the built-in Zero123 know which way the camera turned? (image-to-3D shape, issue 15)

Image-to-3D turns cubes into cylinders and pyramids into spheres or cones away from the
reference view. A shape with only 90-degree symmetry looks different after turning the
camera +d and -d from a reference that is not face-on; if the prior's samples for "+d" are no
closer to the true +d view than to the true -d view, its azimuth conditioning is too weak to
tell the two sides apart, and SDS over random azimuths averages them into a body of
revolution (what the assets show).

Plain cubes and pyramids of the classifier's held-out seeds, reference at elevation 15 and
azimuth 17 + 7 i degrees (never face-on), radius 2.5, fov 45; the prior samples the view
turned by +d (DDIM, 40 steps, CFG 3 as `core.training.evaluate_zero123`), compared by PSNR
with the true renders at +d and at -d, each re-composited over the background the sample drew
(read off its border, as the evaluation does). "wins" counts objects whose sample is closer
to +d. For contrast, the PSNR between the two true views says how different they are.

    OMP_NUM_THREADS=1 python bench/zero123_azimuth.py --objects 12 --deltas 30 60 --json docs/zero123_azimuth.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    from core.data.procedural import CLASSIFIER_TEST_SEEDS, ProceduralWorld, ProceduralWorldConfig
    from core.priors import PriorConfig, load
    from core.data.classifier import over_background
    from core.training.evaluate_zero123 import border_background, psnr, sample_novel_views

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="builtin:zero123")
    p.add_argument("--objects", type=int, default=12)
    p.add_argument("--deltas", type=float, nargs="+", default=[30.0, 60.0])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    torch.set_num_threads(1)
    prior = load(PriorConfig(kind="zero123", model=args.model, device="cpu"))
    world = ProceduralWorld(ProceduralWorldConfig(resolution=prior.resolution[0]))
    specs, seed = [], CLASSIFIER_TEST_SEEDS[0]
    while len(specs) < args.objects:
        spec = world.spec(seed)
        seed += 1
        if spec.shape in ("cube", "pyramid") and spec.pattern == "plain":
            specs.append(spec)
    g = torch.Generator().manual_seed(0)
    rows = []
    for d in args.deltas:
        params = []
        for i in range(len(specs)):
            az = 17.0 + 7.0 * i
            params += [(15.0, az, 2.5, 45.0), (15.0, az + d, 2.5, 45.0), (15.0, az - d, 2.5, 45.0)]
        rgb, alpha = world.render([s for s in specs for _ in range(3)], world.cameras(params))
        rgb = rgb.reshape(len(specs), 3, *rgb.shape[1:])          # [n, (ref, +d, -d), 3, H, W]
        alpha = alpha.reshape(len(specs), 3, *alpha.shape[1:])
        sample = sample_novel_views(prior, rgb[:, 0], torch.tensor([[0.0, d, 0.0]]), 40, 3.0, g)[:, 0]
        bg = border_background(sample)
        plus = psnr(sample, over_background(rgb[:, 1], alpha[:, 1], bg))
        minus = psnr(sample, over_background(rgb[:, 2], alpha[:, 2], bg))
        row = {"delta_deg": d, "objects": len(specs), "psnr_to_plus": round(float(plus.mean()), 2),
               "psnr_to_minus": round(float(minus.mean()), 2), "wins_plus": int((plus > minus).sum()),
               "psnr_truth_plus_vs_minus": round(float(psnr(rgb[:, 1], rgb[:, 2]).mean()), 2),
               "psnr_copy_reference": round(float(psnr(rgb[:, 0], rgb[:, 1]).mean()), 2)}
        rows.append(row)
        print(f"turn +{d:.0f} deg: sample vs true +d {row['psnr_to_plus']} dB, vs true -d {row['psnr_to_minus']} dB, "
              f"closer to +d on {row['wins_plus']}/{len(specs)}; true +d vs -d {row['psnr_truth_plus_vs_minus']} dB; "
              f"copying the reference {row['psnr_copy_reference']} dB", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "shapes": [s.shape for s in specs], "rows": rows},
                                        indent=1))


if __name__ == "__main__":
    main()
