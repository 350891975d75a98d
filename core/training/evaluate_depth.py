"""Measuring a monocular depth estimator on held-out procedural scenes (docs/quality_builtin_depth.json).

    python -m core.training.evaluate_depth --scenes 256 --json docs/quality_builtin_depth.json

Marigold's protocol (Ke et al. 2024, after MiDaS): each prediction is aligned to the true
camera z-depth by the per-image least-squares scale (>= 0, as "larger is farther" demands)
and shift over valid pixels (depth_alignment.fit_scale_shift), then per image

    AbsRel  = mean_i |a_i - d_i| / d_i
    delta1  = share of pixels with max(a_i / d_i, d_i / a_i) < 1.25

(aligned depth a clamped to at least 1e-3), averaged over images; and what recompose
asks of it, the order of objects: over every pair of objects in a scene (each at least
MIN_OBJECT_PIXELS pixels, true median depths at least 5% apart), the share whose median
predicted depths are ordered as their true median depths (a tie counts half). Two trivial estimators
are measured by the same code: constant depth (after alignment: the image's mean depth)
and a ramp saying lower rows are nearer (row 0, the top, farthest), which is what a floor
seen from above looks like. Held-out scenes: seeds from DEPTH_TEST_SEED_START, far below
the training scenes' range.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import Tensor

from core.data.depth_scenes import DEPTH_TEST_SEED_START, DepthSceneConfig, render_depth_scenes
from core.training.depth_alignment import align

MIN_DEPTH = 1e-3
MIN_OBJECT_PIXELS = 8
MIN_DEPTH_GAP = 0.05


def constant_depth(images: Tensor) -> Tensor:
    """The same depth everywhere: [B,1,H,W] ones."""
    return torch.ones_like(images[:, :1])


def lower_rows_nearer(images: Tensor) -> Tensor:
    """[B,1,H,W] from 1 at the top row to 0 at the bottom row (larger is farther)."""
    B, _, H, W = images.shape
    return torch.linspace(1, 0, H, dtype=images.dtype).view(1, 1, H, 1).expand(B, 1, H, W)


def depth_errors(pred: Tensor, depth: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """Per-image AbsRel and delta1 [B] of pred [B,1,H,W] (relative) against depth [B,1,H,W]
    (> 0 where valid [B,1,H,W] bool) after the scale-and-shift fit."""
    aligned = align(pred.float(), depth, valid).clamp_min(MIN_DEPTH)
    w = valid.float()
    n = w.sum((1, 2, 3)).clamp_min(1.0)
    d = torch.where(valid, depth, torch.ones_like(depth))
    abs_rel = ((aligned - d).abs() / d * w).sum((1, 2, 3)) / n
    ratio = torch.maximum(aligned / d, d / aligned)
    delta1 = ((ratio < 1.25).float() * w).sum((1, 2, 3)) / n
    return {"abs_rel": abs_rel, "delta1": delta1}


def object_order(pred: Tensor, depth: Tensor, valid: Tensor, objects: Tensor) -> tuple[float, int]:
    """(pairs ordered right, pairs) of objects [B,1,H,W] (ids, 0 the background) by median
    pred [B,1,H,W] against median true depth [B,1,H,W]; see the module docstring."""
    right, pairs = 0.0, 0
    for p, d, m, ids in zip(pred, depth, valid, objects):
        medians = []
        for k in ids.unique().tolist():
            mask = (ids == k) & m
            if k > 0 and int(mask.sum()) >= MIN_OBJECT_PIXELS:
                medians.append((float(p[mask].median()), float(d[mask].median())))
        for i in range(len(medians)):
            for j in range(i + 1, len(medians)):
                (pi, di), (pj, dj) = medians[i], medians[j]
                if abs(di - dj) < MIN_DEPTH_GAP * min(di, dj):
                    continue
                pairs += 1
                right += 0.5 if pi == pj else float((pi < pj) == (di < dj))
    return right, pairs


def measure_depth_estimator(estimator, first_seed: int = DEPTH_TEST_SEED_START, n_scenes: int = 256,
                            batch: int = 32, cfg: DepthSceneConfig | None = None) -> dict:
    """`estimator.predict` (a DepthEstimator) on scenes first_seed..first_seed+n_scenes-1
    against the two trivial estimators: {"estimator": {...}, "constant_depth": {...},
    "lower_rows_nearer": {...}, ...}, each the mean over images of AbsRel and delta1 and
    the pooled object-order accuracy."""
    methods = {"estimator": estimator.predict, "constant_depth": constant_depth,
               "lower_rows_nearer": lower_rows_nearer}
    per_image = {name: {"abs_rel": [], "delta1": []} for name in methods}
    order = {name: [0.0, 0] for name in methods}
    with torch.no_grad():
        for start in range(first_seed, first_seed + n_scenes, batch):
            data = render_depth_scenes(start, min(batch, first_seed + n_scenes - start), cfg)
            for name, predict in methods.items():
                pred = predict(data.images).cpu().float()
                for key, value in depth_errors(pred, data.depth, data.valid).items():
                    per_image[name][key].append(value)
                right, pairs = object_order(pred, data.depth, data.valid, data.objects)
                order[name][0] += right
                order[name][1] += pairs
    out = {name: {**{key: round(float(torch.cat(v).mean()), 4) for key, v in metrics.items()},
                  "object_order": round(order[name][0] / max(1, order[name][1]), 4)}
           for name, metrics in per_image.items()}
    return {**out, "scenes": n_scenes, "object_pairs": order["estimator"][1],
            "seeds": [first_seed, first_seed + n_scenes - 1]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m core.training.evaluate_depth",
                                description="AbsRel and delta1 of a depth estimator on held-out procedural scenes.")
    p.add_argument("--estimator", default="builtin:depth", help="builtin:depth, a trained folder, a Marigold repo")
    p.add_argument("--scenes", type=int, default=256)
    p.add_argument("--first-seed", type=int, default=DEPTH_TEST_SEED_START)
    p.add_argument("--resolution", type=int, default=DepthSceneConfig.resolution,
                   help="render size (the built-in network resizes to its own 48 px and back)")
    p.add_argument("--json", default=None, help="write the numbers here as JSON")
    a = p.parse_args(argv)
    if a.scenes < 1 or a.resolution < 8:
        p.error("--scenes must be positive and --resolution at least 8")
    from core.priors.estimators import load_depth_estimator

    torch.set_num_threads(1)
    t0 = time.time()
    cfg = DepthSceneConfig(resolution=a.resolution)
    result = measure_depth_estimator(load_depth_estimator(a.estimator, device="cpu"), a.first_seed, a.scenes,
                                     cfg=cfg)
    command = "OMP_NUM_THREADS=1 python -m core.training.evaluate_depth " + " ".join(argv or [])
    result = {"estimator_name": a.estimator, **result,
              "scenes_config": f"core.data.depth_scenes.DepthSceneConfig(resolution={a.resolution}): a room with "
                               "1-4 procedural objects, camera inside, fov 35-60 deg, 2x supersampled",
              "alignment": "per-image least-squares scale (>= 0) and shift to camera z-depth over valid pixels",
              "seconds": round(time.time() - t0, 1), "command": command.strip()}
    text = json.dumps(result, indent=2)
    if a.json:
        Path(a.json).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
