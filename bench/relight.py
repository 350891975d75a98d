"""Relighting benchmark: radiance-only vs PBR-only vs progressive distillation on scenes with known answers.

    python bench/relight.py --out runs/bench-relight --size 64 --scenes red_cube gold_torus [--set key=value ...]

For each scene of core/data/relight_scenes.py (written under OUT/<scene>/data): one
progressive run (configs/relight/progressive.yaml) and one PBR-only run
(configs/relight/pbr_only.yaml), both with width=height=--size and the overrides given.
Radiance-only is the progressive run's pre-training stage (model_radiance.ply: the same
Gaussians, steps and losses, a = 0); its test views under A stand in as its "relit"
prediction. Finished runs are reused (resumable). Metrics on the test views:

  novel PSNR         render under the learned light (the method's own image) vs the photos under A
  relight B/C PSNR   render under B/C (given, not learned) vs ground truth, over white; "aligned":
                     after one per-channel scale fitted (linear, least squares, covered pixels) over
                     all test views, since albedo and light share a scale
  albedo PSNR        linear albedo aligned the same way, then sRGB-encoded, PSNR over covered pixels
  normal error       mean angle (degrees) between rendered and true normals over covered pixels
  wall, cpu          training wall time and process CPU time of the run (radiance-only: the sum of
                     its pre-training stage's step times, wall); on a shared machine CPU time is the
                     one that does not depend on the other processes

Prints a markdown table and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import load_config, resolve_preset  # noqa: E402
from core.data.nerf_synthetic import load_dataset  # noqa: E402
from core.data.relight_scenes import SCENES, write_relight_scene  # noqa: E402
from core.pipelines.relight import RelightConfig, relight  # noqa: E402
from renderers.gaussian.pbr_ply import load_pbr_scene  # noqa: E402
from renderers.gaussian.scene import GaussianScene  # noqa: E402
from renderers.shading import EnvironmentLight, srgb_decode, srgb_encode  # noqa: E402

WHITE = torch.ones(3)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    err = (a - b) ** 2
    mse = err.mean() if mask is None else (err * mask).sum() / (mask.sum() * err.shape[-1]).clamp_min(1)
    return float(-10 * torch.log10(mse.clamp_min(1e-12)))


def channel_scale(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[3] least-squares s minimising sum_mask (s pred - target)^2 per channel."""
    return (pred * target * mask).sum((0, 1, 2)) / (pred * pred * mask).sum((0, 1, 2)).clamp_min(1e-12)


def aligned(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Display images [V,H,W,3]: pred scaled per channel in linear space on `mask`, background kept."""
    lp, lt = srgb_decode(pred), srgb_decode(target)
    scaled = srgb_encode((lp * channel_scale(lp, lt, mask)).clamp(0, 1))
    return torch.where(mask > 0, scaled, pred)


def run_method(data: Path, out: Path, preset: str, size: int, overrides: list[str]) -> float:
    """Train (or reuse) one run; returns its training wall time in seconds."""
    timing = out / "bench_time.json"
    if timing.is_file() and (out / "model_pbr.ply").is_file():
        return json.loads(timing.read_text())["wall_s"]
    cfg = load_config(RelightConfig, resolve_preset(preset),
                      [f"data={data}", f"width={size}", f"height={size}", "export_glb=false", "turntable_frames=0",
                       *overrides])
    tic, cpu = time.perf_counter(), time.process_time()
    relight(cfg, out)
    wall = time.perf_counter() - tic
    timing.write_text(json.dumps({"wall_s": wall, "cpu_s": time.process_time() - cpu}))
    return wall


@torch.no_grad()
def evaluate(data: Path, run: Path, method: str, size: int) -> dict:
    gt = np.load(data / "gt.npz")
    mask = (torch.from_numpy(gt["alpha"]) > 0.5).float()
    test = {key: load_dataset(data, split, size, size, background=(1.0, 1.0, 1.0))
            for key, split in (("A", "test"), ("B", "test_B"), ("C", "test_C"))}
    cams = test["A"].cameras
    lights = {key: EnvironmentLight(torch.from_numpy(np.load(data / f"env_{key}.npy")), levels=6, samples=128)
              for key in ("B", "C")}
    result = {"method": method}
    if method == "radiance only":
        scene = GaussianScene.load(run / "model_radiance.ply")
        out = scene.render(cams, WHITE)
        renders = {"A": out.rgb, "B": out.rgb, "C": out.rgb}
        normal, albedo = out.normal, None
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        result["wall_s"] = sum(r.get("time_s", 0.0) for r in metrics if r.get("stage") == "radiance")
    else:
        scene = load_pbr_scene(run / "model_pbr.ply")
        scene.environment.set_envmap(torch.from_numpy(np.load(run / "environment.npy")))
        out = scene.render(cams, WHITE)
        renders = {"A": out.rgb}
        for key, light in lights.items():
            renders[key] = scene.render(cams, WHITE, light=light).rgb
        normal, albedo = out.normal, out.extras["albedo"]
        result["progress_mean"] = float((out.extras["progress"] * mask).sum() / mask.sum())
        result.update(json.loads((run / "bench_time.json").read_text()))
    result["novel_psnr"] = psnr(renders["A"], test["A"].images)
    for key in ("B", "C"):
        result[f"relight_{key}_psnr"] = psnr(renders[key], test[key].images)
        result[f"relight_{key}_psnr_aligned"] = psnr(aligned(renders[key], test[key].images, mask), test[key].images)
    if albedo is not None:
        true = torch.from_numpy(gt["albedo"])
        scaled = (albedo * channel_scale(albedo, true, mask)).clamp(0, 1)
        result["albedo_psnr_aligned"] = psnr(srgb_encode(scaled), srgb_encode(true), mask)
    cosine = (normal * torch.from_numpy(gt["normal"])).sum(-1, keepdim=True).clamp(-1, 1)
    result["normal_error_deg"] = float((torch.rad2deg(torch.acos(cosine)) * mask).sum() / mask.sum())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-relight"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--scenes", nargs="+", default=["red_cube", "gold_torus"], choices=sorted(SCENES))
    parser.add_argument("--train-views", type=int, default=32)
    parser.add_argument("--test-views", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["progressive", "pbr_only"],
                        choices=["progressive", "pbr_only"])
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for both methods")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.scenes:
        data = args.out / name / "data"
        if not (data / "gt.npz").is_file():
            write_relight_scene(data, SCENES[name], args.train_views, args.test_views, args.size)
        for method in args.methods:
            run = args.out / name / method
            wall = run_method(data, run, f"relight/{method}", args.size, args.overrides)
            print(f"{name} {method}: trained in {wall:.0f} s", flush=True)
        if "progressive" in args.methods:
            rows.append({"scene": name, **evaluate(data, args.out / name / "progressive", "radiance only", args.size)})
        for method in args.methods:
            label = "progressive" if method == "progressive" else "PBR only"
            rows.append({"scene": name, **evaluate(data, args.out / name / method, label, args.size)})
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    keys = ["novel_psnr", "relight_B_psnr", "relight_B_psnr_aligned", "relight_C_psnr", "relight_C_psnr_aligned",
            "albedo_psnr_aligned", "normal_error_deg", "progress_mean", "wall_s", "cpu_s"]
    print("| scene | method | " + " | ".join(keys) + " |")
    print("|" + "---|" * (len(keys) + 2))
    for row in rows:
        cells = [f"{row[k]:.2f}" if k in row else "-" for k in keys]
        print(f"| {row['scene']} | {row['method']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
