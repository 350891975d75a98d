"""Throughput of `scorelift batch` on Ray: the same 8 prompts with the local executor (one
job after another in this process), on a local Ray runtime with 1 worker and with 2
workers (num_cpus=1 and one torch thread per worker). The jobs are the default preset
(text_to_3d/gaussian_sds, built-in prior) with fewer steps, no turntable, .ply export only.

Prints, per executor: batch wall time (after the Ray runtime is up; its start is printed
apart), prompts per minute, the jobs' own time per task (manifest time_s less the prior
load inside it), and the overhead per task: the prior loads, and the worker time not spent
in a job ((workers x wall - sum of time_s) / tasks: scheduling, worker start, imports and
the idle tail); then the ratio 2 workers / 1 worker (target >= 1.7 on 2 cores).

    OMP_NUM_THREADS=1 RAY_USAGE_STATS_ENABLED=0 python bench/batch_ray.py --steps 60 --json docs/batch_ray.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import jobs as batch  # noqa: E402
from app.jobs import Job, TextTo3DJob, run_batch  # noqa: E402

PROMPTS = ["a red cube", "a blue sphere", "a green cone", "a yellow torus",
           "a purple cylinder", "an orange pyramid", "a white cube", "a red sphere"]
PRESET = "text_to_3d/gaussian_sds"


def summary(name: str, workers: int, wall: float, records: list[dict], prior_loads: int, prior_load_s: float) -> dict:
    tasks = len(records)
    job_s = sum(r["time_s"] for r in records)
    return {"executor": name, "workers": workers, "tasks": tasks, "wall_s": round(wall, 1),
            "prompts_per_min": round(tasks / wall * 60, 2),
            "job_own_s_per_task": round((job_s - prior_load_s) / tasks, 2),
            "prior_loads": prior_loads, "prior_load_s_per_task": round(prior_load_s / tasks, 2),
            "outside_jobs_s_per_task": round((workers * wall - job_s) / tasks, 2),
            "all_done": all(r["status"] == "done" for r in records)}


def run_local(out: Path, overrides: list[str]) -> dict:
    batch.PRIORS.__init__()  # load as a fresh process would
    tic = time.perf_counter()
    run_batch([Job(p) for p in PROMPTS], out, PRESET, overrides, TextTo3DJob())
    wall = time.perf_counter() - tic
    records = batch.BatchOut(out).read_manifest()
    return summary("local", 1, wall, records, batch.PRIORS.loads, batch.PRIORS.load_s)


def run_ray(out: Path, overrides: list[str], workers: int) -> dict:
    import ray

    from app.ray_jobs import RayExecutor

    root = str(Path(__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in [root, os.environ.get("PYTHONPATH", "")] if p)
    tic = time.perf_counter()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, object_store_memory=200 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}})
    start_s = time.perf_counter() - tic
    try:
        executor = RayExecutor(show_progress=False)
        tic = time.perf_counter()
        run_batch([Job(p) for p in PROMPTS], out, PRESET, overrides, TextTo3DJob(), executor)
        wall = time.perf_counter() - tic
    finally:
        ray.shutdown()
    records = batch.BatchOut(out).read_manifest()
    infos = list(executor.task_info.values())
    row = summary(f"ray x{workers}", workers, wall, records, sum(i["prior_loads"] for i in infos),
                  sum(i["prior_load_s"] for i in infos))
    row["runtime_start_s"] = round(start_s, 1)
    row["worker_pids"] = len({i["pid"] for i in infos})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="steps per job (the preset has 400)")
    parser.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    overrides = [f"stages.0.steps={args.steps}", "turntable_frames=0", "export=[ply]", "preview_every=0"]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-batch-ray-"))
    load_before = os.getloadavg()
    print(f"load before: {load_before}")
    rows = [run_local(out / "local", overrides), run_ray(out / "ray1", overrides, 1), run_ray(out / "ray2", overrides, 2)]
    print(f"load after: {os.getloadavg()}")
    print(f"{len(PROMPTS)} prompts, {PRESET}, {args.steps} steps, {' '.join(overrides[1:])}")
    print(f"{'executor':10} {'wall s':>7} {'prompts/min':>11} {'job s/task':>10} {'prior loads':>11} "
          f"{'load s/task':>11} {'outside s/task':>14} {'start s':>7}")
    for r in rows:
        print(f"{r['executor']:10} {r['wall_s']:7.1f} {r['prompts_per_min']:11.2f} {r['job_own_s_per_task']:10.2f} "
              f"{r['prior_loads']:11d} {r['prior_load_s_per_task']:11.2f} {r['outside_jobs_s_per_task']:14.2f} "
              f"{r.get('runtime_start_s', 0):7.1f}")
    ratio = rows[2]["prompts_per_min"] / rows[1]["prompts_per_min"]
    print(f"2 workers / 1 worker: {ratio:.2f}x (target >= 1.7); ray x1 / local: "
          f"{rows[1]['prompts_per_min'] / rows[0]['prompts_per_min']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "overrides": overrides, "rows": rows,
                                         "ratio_2_over_1": round(ratio, 3), "load_before": load_before,
                                         "load_after": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
