"""Measuring a normal estimator on held-out procedural objects (docs/quality_builtin_normals.json).

    python -m core.training.evaluate_normals --objects 256 --out docs/quality_builtin_normals.json
    python -m core.training.evaluate_normals --mesh-checkpoint runs/x/checkpoints/polish.pt

Angular error in degrees between predicted and true camera-space normals over foreground
pixels (alpha > 0.5), pooled over all images, next to the trivial baseline that says every
pixel faces the camera, (0, 0, 1). Held-out objects: seeds from NORMALS_TEST_SEED_START,
below the prior's range and so never in the normal network's training shards.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import Tensor

from core.data.normals import NORMALS_TEST_SEED_START, normals_world_config, render_normal_maps
from core.data.procedural import ProceduralWorld

FACING_CAMERA = (0.0, 0.0, 1.0)


def angular_errors(pred: Tensor, target: Tensor, alpha: Tensor, min_alpha: float = 0.5) -> Tensor:
    """Angles in degrees [N] between pred and target [B,3,H,W] (unit) at the N pixels with
    alpha [B,1,H,W] > min_alpha."""
    cos = (pred * target).sum(1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))[alpha[:, 0] > min_alpha]


def error_summary(angles: Tensor) -> dict[str, float]:
    """Mean and median angle and the share of pixels within 11.25 / 22.5 / 30 degrees."""
    out = {"mean_deg": float(angles.mean()), "median_deg": float(angles.median())}
    for limit in (11.25, 22.5, 30.0):
        out[f"within_{limit:g}_deg"] = float((angles < limit).float().mean())
    return {k: round(v, 4) for k, v in out.items()}


def measure_normal_estimator(estimator, first_seed: int = NORMALS_TEST_SEED_START, n_objects: int = 256,
                             batch: int = 64) -> dict:
    """`estimator.predict` (a NormalEstimator) on objects first_seed..first_seed+n_objects-1
    against the facing-camera baseline: {"estimator": summary, "facing_camera": summary, ...}."""
    world = ProceduralWorld(normals_world_config())
    ours, baseline = [], []
    facing = torch.tensor(FACING_CAMERA).view(1, 3, 1, 1)
    with torch.no_grad():
        for start in range(first_seed, first_seed + n_objects, batch):
            data = render_normal_maps(start, min(batch, first_seed + n_objects - start), world=world)
            pred = estimator.predict(data.images).cpu().float()
            ours.append(angular_errors(pred, data.normals, data.alpha))
            baseline.append(angular_errors(facing.expand_as(data.normals), data.normals, data.alpha))
    ours, baseline = torch.cat(ours), torch.cat(baseline)
    return {"estimator": error_summary(ours), "facing_camera": error_summary(baseline),
            "objects": n_objects, "seeds": [first_seed, first_seed + n_objects - 1], "foreground_pixels": len(ours)}


def mesh_agreement(checkpoint: str | Path, estimator, views: int = 16, size: int = 32) -> dict:
    """How far a mesh stage's surface is from what `estimator` reads in its render: mean and
    median angle (degrees) between rendered and predicted camera-space normals over `views`
    orbit views (elevation 15, radius 2.5, fov 45) at `size` px, foreground pixels."""
    from core.cameras import orbit_cameras, world_to_camera_normals
    from renderers.mesh import TriangleMesh, render_mesh

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["scene"]
    if "offsets" not in state or "vertex_colors" not in state:
        raise ValueError(f"{checkpoint} is not a mesh stage's checkpoint (needs offsets and vertex colours)")
    mesh = TriangleMesh(state["vertices"] + state["offsets"], state["faces"],
                        vertex_colors=state["vertex_colors"].clamp(0, 1))
    cams = orbit_cameras(views, elevation_deg=15.0, radius=2.5, fov_y_deg=45.0, width=size, height=size)
    with torch.no_grad():
        out = render_mesh(mesh, cams)
        pred = estimator.predict(out.chw().clamp(0, 1)).cpu().float()
        rendered = torch.nn.functional.normalize(world_to_camera_normals(out.normal, cams), dim=-1)
    angles = angular_errors(pred, rendered.permute(0, 3, 1, 2), out.alpha.permute(0, 3, 1, 2))
    return {"checkpoint": str(checkpoint), "mean_deg": round(float(angles.mean()), 2),
            "median_deg": round(float(angles.median()), 2), "foreground_pixels": len(angles)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m core.training.evaluate_normals",
                                description="Angular error of a normal estimator on held-out procedural objects.")
    p.add_argument("--estimator", default="builtin:normals", help="builtin:normals, a Marigold repo or folder")
    p.add_argument("--objects", type=int, default=256)
    p.add_argument("--first-seed", type=int, default=NORMALS_TEST_SEED_START)
    p.add_argument("--out", default=None, help="write the numbers here as JSON")
    p.add_argument("--mesh-checkpoint", default=None, help="instead: a mesh stage's checkpoint, measured against "
                   "the estimator's reading of its own render (how polished it is in the estimator's eyes)")
    a = p.parse_args(argv)
    if a.objects < 1:
        p.error("--objects must be positive")
    from core.priors.estimators import load_normal_estimator

    torch.set_num_threads(1)
    if a.mesh_checkpoint:
        result = mesh_agreement(a.mesh_checkpoint, load_normal_estimator(a.estimator, device="cpu"))
        print(json.dumps(result))
        return result
    t0 = time.time()
    result = measure_normal_estimator(load_normal_estimator(a.estimator, device="cpu"), a.first_seed, a.objects)
    command = "OMP_NUM_THREADS=1 python -m core.training.evaluate_normals " + " ".join(argv or [])
    result = {"estimator_name": a.estimator, **result, "world": "core.data.normals.normals_world_config() "
              "(fov 30-60 deg, elevation -10..60, radius 2.2-2.8, 32 px, 2x supersampled)",
              "seconds": round(time.time() - t0, 1), "command": command.strip()}
    text = json.dumps(result, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
