"""Benchmark: forward+backward of the tiled torch Gaussian rasteriser against the dense reference.

    python bench/render.py            # N = 2k, 10k, 50k Gaussians x 64, 128, 256 px
    python bench/render.py --quick    # a small subset

Each configuration runs in its own subprocess (a fresh interpreter, so one run's heap
does not hide the next one's). In it, the tiled backend and the dense reference render
the same random scene with the same loss, in the same process:

- time: median wall time of `rasterize(...)` + `backward()` over --repeats runs after one
  warm-up (the warm-up is also the memory run), and beside it the process CPU time of the
  same runs (on a shared machine wall time also counts other processes' turns);
- peak memory: the rise of the process's peak resident set size (VmHWM, reset through
  /proc/self/clear_refs) over its resident size just before the warm-up run: every byte
  torch and the allocator touched, not only live tensors;
- pairs: (tile, Gaussian) intersections, the quantity the tiled backend's memory and time
  follow (the dense reference instead visits pixels x visible Gaussians).

The dense reference is skipped where pixels x Gaussians exceeds --dense-limit (it would
take minutes); its cells then read "skipped".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FULL = [(n, s) for n in (2_000, 10_000, 50_000) for s in (64, 128, 256)]
QUICK = [(2_000, 64), (10_000, 128)]  # the smallest case and the target case


def random_scene(n: int, size: int, seed: int = 0):
    """n Gaussians uniform in the unit ball with scales of a few pixels at 128 px, one camera.

    The camera sits at radius 2.7, elevation 20 deg, fov 45 deg, looking at the origin.
    Returns the `rasterize` arguments as a dict, with leaf tensors that require grad.
    """
    import torch

    from core.cameras import orbit_cameras

    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(n, 3, generator=g)
    radius = torch.rand(n, 1, generator=g) ** (1 / 3)
    means = direction / direction.norm(dim=-1, keepdim=True) * radius
    # sigma 0.01..0.04 world units ~ 0.6..2.3 px at 128 px from 2.7 units away.
    scales = torch.exp(math.log(0.01) + (math.log(0.04) - math.log(0.01)) * torch.rand(n, 3, generator=g))
    cams = orbit_cameras(1, elevation_deg=20.0, radius=2.7, fov_y_deg=45.0, width=size, height=size)
    params = {
        "means": means, "quats": torch.randn(n, 4, generator=g), "scales": scales,
        "opacities": 0.1 + 0.9 * torch.rand(n, generator=g), "colors": torch.rand(n, 3, generator=g),
    }
    for p in params.values():
        p.requires_grad_(True)
    return dict(params, viewmats=cams.viewmats(), Ks=cams.K, width=size, height=size,
                backgrounds=torch.ones(1, 3))


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def measure(fn, scene: dict, repeats: int) -> dict:
    """Peak-RSS rise (MiB) of one fwd+bwd, then the median time (s) of `repeats` more."""
    import torch

    params = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors")]
    weights = torch.rand(1, scene["height"], scene["width"], 3, generator=torch.Generator().manual_seed(1))

    def step():
        for p in params:
            p.grad = None
        colors, alphas, meta = fn(**scene)
        ((colors * weights).sum() + alphas.sum()).backward()
        return meta

    _reset_peak_rss()
    before = _rss_kib("VmRSS")
    meta = step()
    peak_mib = (_rss_kib("VmHWM") - before) / 1024
    times, cpu_times = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return {"time_s": statistics.median(times), "cpu_s": statistics.median(cpu_times), "peak_mib": peak_mib,
            "pairs": meta.get("n_pairs")}


def run_one(n: int, size: int, repeats: int, dense_limit: float) -> dict:
    """Both backends on one configuration, in this process."""
    import torch

    from renderers.gaussian import rasterize
    from renderers.gaussian.reference import rasterize_reference

    scene = random_scene(n, size)
    tiled = measure(lambda **kw: rasterize(**kw, backend="torch"), scene, repeats)
    row = {"n": n, "size": size, "threads": torch.get_num_threads(), "tiled": tiled, "dense": None}
    if n * size * size <= dense_limit:
        row["dense"] = measure(rasterize_reference, scene, max(1, repeats // 2))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small subset of configurations")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (after a warm-up)")
    ap.add_argument("--dense-limit", type=float, default=1.7e8,
                    help="skip the dense reference above this many pixels x Gaussians")
    ap.add_argument("--child", nargs=2, type=int, metavar=("N", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        print(json.dumps(run_one(*args.child, args.repeats, args.dense_limit)))
        return

    configs = QUICK if args.quick else FULL
    print(f"fwd+bwd, 1 camera, RGB, CPU; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    header = (f"{'N':>7} {'px':>4} {'pairs':>8} {'tiled s':>8} {'cpu s':>6} {'tiled MiB':>9} "
              f"{'dense s':>8} {'cpu s':>6} {'dense MiB':>9} {'speed-up':>8} {'mem ratio':>9}")
    print(header)
    print("-" * len(header))
    for n, size in configs:
        cmd = [sys.executable, __file__, "--child", str(n), str(size), "--repeats", str(args.repeats),
               "--dense-limit", str(args.dense_limit)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            print(f"{n:>7} {size:>4} failed:\n{out.stderr[-2000:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        t, d = row["tiled"], row["dense"]
        dense = (f"{d['time_s']:>8.3f} {d['cpu_s']:>6.2f} {d['peak_mib']:>9.1f} {d['time_s'] / t['time_s']:>7.1f}x "
                 f"{d['peak_mib'] / max(t['peak_mib'], 1e-3):>8.1f}x") if d else f"{'skipped':>8}"
        print(f"{n:>7} {size:>4} {t['pairs']:>8} {t['time_s']:>8.3f} {t['cpu_s']:>6.2f} {t['peak_mib']:>9.1f} {dense}",
              flush=True)


if __name__ == "__main__":
    main()
