"""One object of a video lifted at the CPU default (core/pipelines/video4d/objects.py): the object
is cropped at its first visible frame, lifted with `ObjectLiftConfig()` (built-in Zero123) and
measured at its reference view: PSNR of the render over white against the reference picture
image-to-3D fitted (the crop, re-centred and composited on white) and IoU of alpha > 0.5 with
its mask; plus the lift's wall time with the threads given.

    python -m core.data.video_synth --out /tmp/v24o --frames 24 --size 128
    OMP_NUM_THREADS=1 python bench/video4d_lift.py /tmp/v24o --out /tmp/lift [--steps N] [--no-ramp]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.cameras import spherical_cameras  # noqa: E402
from core.data.reference import load_reference  # noqa: E402
from core.data.video import load_video_clip  # noqa: E402
from core.pipelines.video4d.objects import ObjectLiftConfig, crop_first_visible, lift_object  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="a folder with frames/ and masks/ (core.data.video_synth's layout)")
    parser.add_argument("--out", required=True, help="the lift's run folder (resumed when it exists)")
    parser.add_argument("--object", type=int, default=0, help="index into the clip's object ids")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-ramp", action="store_true", help="constant reference weights")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clip = load_video_clip(Path(args.video) / "frames", Path(args.video) / "masks")
    object_id = clip.object_ids[args.object]
    t, crop = crop_first_visible(clip.frames, clip.masks, object_id)
    cfg = ObjectLiftConfig(reference_ramp=not args.no_ramp, **({"steps": args.steps} if args.steps else {}))
    tic = time.perf_counter()
    scene = lift_object(crop, args.out, cfg)
    wall = time.perf_counter() - tic
    rgb, mask = load_reference(Path(args.out) / "crop.png", crop.size, crop.fill)
    camera = spherical_cameras(torch.tensor([cfg.elevation_deg]), torch.tensor([0.0]), torch.tensor([cfg.radius]),
                               torch.tensor([cfg.fov_deg]), crop.size, crop.size)
    with torch.no_grad():
        out = scene.render(camera, torch.ones(3))
    mse = ((out.rgb[0] - rgb[0].permute(1, 2, 0)) ** 2).mean()
    rendered, target = out.alpha[0, ..., 0] > 0.5, mask[0, 0] > 0.5
    print(json.dumps({"object": object_id, "frame": t, "box": crop.box, "steps": cfg.steps,
                      "reference_ramp": cfg.reference_ramp, "threads": args.threads, "wall_s": round(wall, 1),
                      "reference_psnr_db": round(float(-10 * torch.log10(mse)), 2),
                      "mask_iou": round(float((rendered & target).sum() / (rendered | target).sum()), 3),
                      "gaussians": len(scene)}))


if __name__ == "__main__":
    main()
