"""`scorelift batch --ray`: the batch runner with the Ray executor on a local Ray runtime
(num_cpus=2, shared by the module), held against the local executor on the same jobs, a
worker killed mid-job, Ctrl-C, re-runs, fsspec outs and a missing Ray."""

import json
import os
import signal
import sys
from pathlib import Path

import fsspec
import pytest

from app.batch_store import BatchOut
from app.cli import main
from app.jobs import BatchInterrupted, TextTo3DJob, read_jobs, run_batch

# The built-in prior, tiny scenes, one camera a step, a checkpoint every 5 steps.
FAST = ["turntable_frames=0", "export=[ply]", "preview_every=0", "gaussian.num_points=100",
        "stages.0.cameras.batch_size=1", "checkpoint_every=5", "stages.0.steps=4"]
PRESET = "text_to_3d/gaussian_sds"
LONG = 100  # steps of a job that is killed or interrupted on its way: long enough (~5 s on an idle
#            machine) for several 0.5 s progress polls to see it between step 12 and its end


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Workers import the code under test (this checkout), whatever is installed.
    root = str(Path(__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in [root, os.environ.get("PYTHONPATH", "")] if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def executor(**kwargs):
    from app.ray_jobs import RayExecutor

    return RayExecutor(show_progress=False, **kwargs)


def manifest(out) -> list[dict]:
    return [json.loads(line) for line in Path(out, "manifest.jsonl").read_text().splitlines()]


def logged_steps(folder) -> list[int]:
    return [json.loads(line)["step"] for line in Path(folder, "metrics.jsonl").read_text().splitlines()]


def files_of(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file()}


def write_jobs(path, jobs) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def test_ray_batch_matches_the_local_executor(ray_runtime, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\na blue sphere\na green cone\na yellow torus\n")
    assert main(["batch", str(prompts), "--out", str(tmp_path / "local"), *FAST]) == 0
    ray_exec = executor()
    counts = run_batch(read_jobs(prompts), tmp_path / "ray", PRESET, FAST, TextTo3DJob(), ray_exec)
    assert counts == {"done": 4, "failed": 0, "skipped": 0}

    local, on_ray = manifest(tmp_path / "local"), manifest(tmp_path / "ray")
    assert len(on_ray) == 4 and {r["key"] for r in on_ray} == {r["key"] for r in local}
    by_key = {r["key"]: r for r in local}
    for record in on_ray:
        twin = by_key[record["key"]]
        assert set(record) == set(twin) and record["status"] == "done"
        assert Path(record["folder"]).name == Path(twin["folder"]).name
        assert files_of(record["folder"]) == files_of(twin["folder"])
        assert {k: Path(v).name for k, v in record["paths"].items()} == {k: Path(v).name for k, v in twin["paths"].items()}
        assert record["metrics"]["step"] == 4
        assert record["metrics"]["loss"] == pytest.approx(twin["metrics"]["loss"], rel=1e-4)

    # The prior is loaded once per worker process, however many of the jobs it runs.
    loads_by_pid: dict[int, int] = {}
    for info in ray_exec.task_info.values():
        loads_by_pid[info["pid"]] = loads_by_pid.get(info["pid"], 0) + info["prior_loads"]
    assert all(n <= 1 for n in loads_by_pid.values())
    assert sum(loads_by_pid.values()) < 4


def test_a_killed_worker_is_retried_and_its_job_resumes(ray_runtime, tmp_path):
    prompts = write_jobs(tmp_path / "p.jsonl", [{"prompt": "a red cube", "overrides": [f"stages.0.steps={LONG}"]},
                                                {"prompt": "a blue sphere"}])
    long_key = read_jobs(prompts)[0].key
    killed = {}

    def kill_mid_job(snapshot):
        job = snapshot.get(long_key, {})
        if not killed and job.get("stage") and job.get("step", 0) >= 12:
            killed.update(pid=job["pid"], step=job["step"])
            os.kill(job["pid"], signal.SIGKILL)

    ray_exec = executor(on_progress=kill_mid_job)
    out = tmp_path / "out"
    counts = run_batch(read_jobs(prompts), out, PRESET, FAST, TextTo3DJob(), ray_exec)
    assert killed, "the job ended before the test could kill its worker"
    assert counts == {"done": 2, "failed": 0, "skipped": 0}
    records = manifest(out)
    assert sorted(r["key"] for r in records) == sorted(j.key for j in read_jobs(prompts))  # none lost, none twice
    assert all(r["status"] == "done" for r in records)
    assert ray_exec.task_info[long_key]["pid"] != killed["pid"]
    record = next(r for r in records if r["key"] == long_key)
    assert record["metrics"]["step"] == LONG
    # The retry went on from a checkpoint (every 5 steps) saved before the kill: every step is
    # logged, step 1 only once (a restart from scratch would log it twice).
    steps = logged_steps(record["folder"])
    assert set(steps) == set(range(1, LONG + 1)) and steps.count(1) == 1 and steps[-1] == LONG


def test_interrupted_batch_resumes_only_unfinished_jobs_and_a_finished_one_starts_nothing(ray_runtime, tmp_path):
    prompts = write_jobs(tmp_path / "p.jsonl", [
        {"prompt": "a red cube"},
        {"prompt": "a blue sphere", "overrides": [f"stages.0.steps={LONG}"]},
        {"prompt": "a green cone", "overrides": [f"stages.0.steps={LONG}"]}])
    keys = [job.key for job in read_jobs(prompts)]
    long = keys[1]
    out = tmp_path / "out"

    def ctrl_c(snapshot):  # as Ctrl-C on the driver, with the long job on its way
        if 12 <= snapshot.get(long, {}).get("step", 0) < LONG:
            raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted) as stopped:
        run_batch(read_jobs(prompts), out, PRESET, FAST, TextTo3DJob(), executor(on_progress=ctrl_c))
    # The manifest holds exactly the jobs that ended before Ctrl-C, each once and complete.
    ended = manifest(out) if (out / "manifest.jsonl").is_file() else []
    assert long not in {r["key"] for r in ended} and len({r["key"] for r in ended}) == len(ended)
    assert all(r["status"] == "done" and r["metrics"]["step"] in (4, LONG) for r in ended)
    assert stopped.value.counts["done"] == len(ended) and stopped.value.unfinished == 3 - len(ended)

    again = executor()
    counts = run_batch(read_jobs(prompts), out, PRESET, FAST, TextTo3DJob(), again)
    assert counts == {"done": 3 - len(ended), "failed": 0, "skipped": len(ended)}
    assert set(again.task_info) == set(keys) - {r["key"] for r in ended}  # only the unfinished jobs ran
    records = manifest(out)
    assert sorted(r["key"] for r in records) == sorted(keys)
    resumed = next(r for r in records if r["key"] == long)
    steps = logged_steps(resumed["folder"])
    assert set(steps) == set(range(1, LONG + 1)) and steps.count(1) == 1  # went on from its checkpoint

    snapshots = []
    finished = executor(on_progress=snapshots.append)
    counts = run_batch(read_jobs(prompts), out, PRESET, FAST, TextTo3DJob(), finished)
    assert counts == {"done": 0, "failed": 0, "skipped": 3}
    assert finished.task_info == {} and snapshots == [] and len(manifest(out)) == 3


def test_ray_batch_to_a_file_url_through_the_cli_records_a_failing_job(ray_runtime, tmp_path, capsys):
    prompts = write_jobs(tmp_path / "p.jsonl", [{"prompt": "a red cube"},
                                                {"prompt": "a blue cone", "overrides": ["gaussian.num_points=0"]}])
    url = f"file://{tmp_path}/shared/batch"
    assert main(["batch", str(prompts), "--out", url, "--ray", *FAST]) == 1  # one job failed, the other went on
    with fsspec.open(f"{url}/manifest.jsonl", "r") as f:
        done, failed = sorted((json.loads(line) for line in f), key=lambda r: r["status"])
    assert done["status"] == "done" and Path(done["paths"]["model_ply"]).is_file()
    assert failed["status"] == "failed" and "num_points must be at least 1" in failed["error"]
    assert "1 done, 1 failed" in capsys.readouterr().out


def test_memory_url_with_the_local_executor_stages_uploads_and_resumes(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    url = f"memory://scorelift-test-{os.getpid()}/batch"
    fs = fsspec.filesystem("memory")
    assert main(["batch", str(prompts), "--out", url, *FAST]) == 0
    (record,) = [json.loads(line) for line in fs.cat_file(f"{url}/manifest.jsonl").decode().splitlines()]
    folder = record["folder"]
    assert folder.startswith(f"{url}/000-a-red-cube-")
    assert fs.isfile(record["paths"]["model_ply"]) and record["paths"]["model_ply"].startswith(folder)
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/coarse.pt"):
        assert fs.isfile(f"{folder}/{name}"), name

    # With the manifest gone, the job runs again: from the checkpoint it downloads, to 8 steps.
    fs.rm(f"{url}/manifest.jsonl")
    assert main(["batch", str(prompts), "--out", url, *FAST, "stages.0.steps=8"]) == 0
    steps = [json.loads(line)["step"] for line in fs.cat_file(f"{folder}/metrics.jsonl").decode().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert BatchOut(url).read_manifest()[0]["metrics"]["step"] == 8


def test_door_errors_are_one_line(ray_runtime, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    # memory:// cannot be shared with Ray workers.
    assert main(["batch", str(prompts), "--out", "memory://x/batch", "--ray", *FAST]) == 2
    assert "memory:// lives inside one process" in capsys.readouterr().err
    # A GPU job on a runtime without GPUs (`--ray key=value` is an override, not an address).
    assert main(["batch", str(prompts), "--out", str(tmp_path / "b"), *FAST, "--ray", "resources.num_gpus=1"]) == 2
    err = capsys.readouterr().err
    assert "asks for 1 GPU" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_missing_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    assert main(["batch", str(prompts), "--out", str(tmp_path / "b"), "--ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'scorelift[ray]'" in err
    assert not (tmp_path / "b").exists()
