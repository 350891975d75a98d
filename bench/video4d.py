"""Video-to-4D on synthetic clips with ground truth: `scorelift animate` + `scorelift track`
against the known point tracks of `core.data.video_synth`.

    python bench/video4d.py --out /tmp/v4d                        # 24 frames, 2 objects, 128 px
    python bench/video4d.py --out /tmp/v4d --frames 8 --size 64 motion.steps=50   # a quick look
    python bench/video4d.py --out /tmp/v4d --ablation-no-flow     # also the run without the flow loss

Reports over the ground truth's visible points (TAP-Vid protocol, queries at t = 0): mean and
median end-point error (px), delta_avg (the fraction within 1, 2, 4, 8, 16 px, averaged),
occlusion accuracy (predicted occluded == true occluded over all points and frames), the PSNR
of the re-rendered input frames, and the wall time of `animate` and `track`; for the
pipeline, two baselines computed from the same run (static points: every query stays where it
was; camera motion only: every point lifted as the pipeline lifts it but treated as static
background) and, with --ablation-no-flow, the pipeline without its flow terms
(motion.flow_weight=0 motion.chain_weight=0; cameras, background and lifted objects shared).
Results are written to OUT/results.json (existing runs in OUT are resumed, not redone).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

THRESHOLDS = (1, 2, 4, 8, 16)


def track_metrics(pred: np.ndarray, pred_occ: np.ndarray, gt: np.ndarray, gt_occ: np.ndarray,
                  query_t: np.ndarray) -> dict:
    """TAP-Vid-style numbers; the query frame itself is excluded from the position metrics."""
    T = gt.shape[1]
    visible = ~gt_occ & (np.arange(T)[None] != query_t[:, None])
    err = np.linalg.norm(pred - gt, axis=-1)[visible]
    return {
        "epe_mean": float(err.mean()), "epe_median": float(np.median(err)),
        "delta_avg": float(np.mean([(err < d).mean() for d in THRESHOLDS])),
        "occlusion_accuracy": float((pred_occ == gt_occ).mean()),
        "points": int(gt.shape[0]), "visible_pairs": int(visible.sum()),
    }


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def reconstruction_psnr(run: Path, clip: Path) -> float:
    import imageio.v3 as iio

    inputs = sorted((clip / "frames").glob("*.png"))
    values = []
    for i, path in enumerate(inputs):
        a = iio.imread(path)[..., :3] / 255.0
        b = iio.imread(run / "reconstruction" / f"frame_{i:04d}.png")[..., :3] / 255.0
        values.append(psnr(a, b))
    return float(np.mean(values))


def scorelift(*args: str) -> float:
    tic = time.perf_counter()
    subprocess.run([sys.executable, "-m", "app.cli", *args], check=True)
    return time.perf_counter() - tic


def run_pipeline(clip: Path, run: Path, overrides: list[str]) -> dict:
    """Run (or resume) animate and track; the wall time reported is the first, uninterrupted
    run's (kept in RUN/bench_time.json), a resumed run's own time is `resumed_s`."""
    resumed = run.exists()
    record = run / "bench_time.json"
    wall = scorelift("animate", str(clip / "frames"), "--masks", str(clip / "masks"), "--out", str(run),
                     *(["--resume"] if resumed else []), *overrides)
    if not record.is_file():
        record.write_text(json.dumps({"animate_s": wall, "shared_stages_from_another_run": resumed}))
    first = json.loads(record.read_text())
    track_wall = scorelift("track", str(run), "--queries", str(clip / "queries.npz"), "--out", str(run / "tracks.npz"))
    return {**first, "track_s": track_wall, "resumed": resumed, **({"resumed_s": wall} if resumed else {})}


def share_decomposition(source: Path, run: Path) -> None:
    """Seed an ablation's run folder with `source`'s checkpoints of the stages it does not
    change (camera motion, background, object lifting), so it resumes after them."""
    import shutil

    (run / "checkpoints").mkdir(parents=True)
    for name in ("cameras_estimated.pt", "background.pt"):
        shutil.copy(source / "checkpoints" / name, run / "checkpoints" / name)
    for lift in sorted((source / "objects").glob("*/lift")):
        shutil.copytree(lift, run / "objects" / lift.parent.name / "lift")


def baselines(run: Path, gt: dict) -> dict:
    from core.pipelines.video4d.animate import load_scene4d
    from core.pipelines.video4d.tracks import track_points

    q = gt["query_points"]
    T = gt["tracks"].shape[1]
    static = np.repeat(q[:, None, 1:], T, axis=1)
    out = {"static points": track_metrics(static, np.zeros(static.shape[:2], bool), gt["tracks"], gt["occluded"],
                                          q[:, 0].astype(int))}
    scene = load_scene4d(run)
    tracks, occ = track_points(scene, torch.from_numpy(q).float(), static=True)
    out["camera motion only"] = track_metrics(tracks.numpy(), occ.numpy(), gt["tracks"], gt["occluded"],
                                              q[:, 0].astype(int))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ablation-no-flow", action="store_true")
    p.add_argument("overrides", nargs="*", help="animate config overrides for every run")
    args = p.parse_args()
    clip = args.out / "clip"
    if not (clip / "gt.npz").is_file():
        subprocess.run([sys.executable, "-m", "core.data.video_synth", "--out", str(clip), "--frames",
                        str(args.frames), "--size", str(args.size), "--objects", str(args.objects), "--seed",
                        str(args.seed)], check=True)
    gt = dict(np.load(clip / "gt.npz"))
    np.savez(clip / "queries.npz", query_points=gt["query_points"])
    results = {"clip": {"frames": args.frames, "size": args.size, "objects": args.objects, "seed": args.seed},
               "threads": torch.get_num_threads(), "overrides": args.overrides, "methods": {}}
    runs = {"DreamScene4D pipeline": []}
    if args.ablation_no_flow:
        runs["without flow loss"] = ["motion.flow_weight=0", "motion.chain_weight=0"]
    for name, extra in runs.items():
        run = args.out / ("run" if not extra else "run_noflow")
        if extra and not run.exists():   # the ablation shares cameras, background and lifted objects
            share_decomposition(args.out / "run", run)
        timing = run_pipeline(clip, run, [*args.overrides, *extra])
        with np.load(run / "tracks.npz") as P:
            m = track_metrics(P["tracks"], P["occluded"], gt["tracks"], gt["occluded"],
                              gt["query_points"][:, 0].astype(int))
        m.update(timing)
        m["reconstruction_psnr"] = reconstruction_psnr(run, clip)
        results["methods"][name] = m
        if not extra:
            results["methods"].update(baselines(run, gt))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{'method':24s} {'EPE mean':>9s} {'median':>7s} {'d_avg':>6s} {'occ acc':>7s} {'PSNR':>6s} {'animate s':>9s}")
    for name, m in results["methods"].items():
        print(f"{name:24s} {m['epe_mean']:9.2f} {m['epe_median']:7.2f} {m['delta_avg']:6.3f} "
              f"{m['occlusion_accuracy']:7.3f} {m.get('reconstruction_psnr', float('nan')):6.2f} "
              f"{m.get('animate_s', float('nan')):9.1f}")


if __name__ == "__main__":
    main()
