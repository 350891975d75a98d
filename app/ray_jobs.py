"""Batches on Ray: `RayExecutor` runs the planned jobs of app/jobs.py as Ray tasks, one task
per job, and hands each manifest record back to the one runner (app.jobs.run_batch), which
alone writes the manifest.

- Where: `address=None` starts a Ray runtime on this machine (`scorelift batch --ray`);
  "auto", "HOST:PORT" or "ray://HOST:PORT" joins an existing cluster, whose nodes must have
  scorelift installed (nothing is shipped or downloaded: no runtime_env).
- Resources: a task asks for its preset's `resources` (num_cpus, num_gpus, memory_gb; the
  gpu/ presets ask for one GPU) and runs torch on num_cpus threads.
- Faults: a task whose worker process dies is retried by Ray (`max_retries`, default 1) and
  resumes from the checkpoints its run folder holds; a job that fails every try is recorded
  as failed with Ray's error and the rest go on. Ctrl-C cancels the outstanding tasks (a
  running job keeps its last checkpoint) before the runner stops, so the manifest holds
  exactly the jobs that ended.
- Priors: a worker keeps the prior of its last job (app.jobs.PRIORS) and Ray reuses worker
  processes across tasks (max_calls=0, also for GPU tasks, where Ray's default is a fresh
  process per task), so a prior is loaded once per worker process, not once per task.
- Progress: tasks report their stage and step to a small actor (`ProgressBoard`) that the
  driver polls; the driver shows one bar for the batch (done / failed / running) followed
  by the running jobs' stage and step.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from app.jobs import PRIORS, PlannedJob, lost_record, run_planned
from core.errors import UserError

RAY_MISSING = "Ray is not installed: pip install 'scorelift[ray]' (or pip install 'ray[default]')"


def import_ray():
    """The ray module, or a UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


class ProgressBoard:
    """What each job's task last reported, by job key: state (running, done, failed), pid
    and node of its worker, prompt, stage, step and total. Run as an actor (num_cpus=0)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}

    def report(self, key: str, fields: dict) -> None:
        self.jobs.setdefault(key, {}).update(fields)

    def snapshot(self) -> dict[str, dict]:
        return self.jobs


class BoardCallbacks:
    """The runner's callbacks inside a task: stage and step to the board, at most every
    `every_s` seconds, and at each stage's first and last step."""

    def __init__(self, board, key: str, every_s: float = 0.5):
        self.board, self.key, self.every_s = board, key, every_s
        self._last, self._stage = 0.0, None

    def on_step(self, stage, step, total, stats):
        now = time.monotonic()
        if now - self._last >= self.every_s or step == total or stage != self._stage:
            self.board.report.remote(self.key, {"stage": stage, "step": step, "total": total})
            self._last, self._stage = now, stage

    def on_preview(self, stage, step, path):
        pass

    def should_stop(self):
        return False  # ray.cancel interrupts the task instead


def run_task(planned: PlannedJob, out, run_job, board, threads: int) -> tuple[dict, dict]:
    """One job inside a Ray worker: (its manifest record, what the worker saw: pid, node,
    wall-clock start and end, prior loads and their seconds in this task)."""
    import torch
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(threads)
    transformers_logging.disable_progress_bar()  # per-worker "Loading weights" bars would cross the batch's bar
    key, start = planned.job.key, time.time()
    loads, load_s = PRIORS.loads, PRIORS.load_s
    where = {"pid": os.getpid(), "node": socket.gethostname()}
    board.report.remote(key, {"state": "running", "prompt": planned.job.prompt, "stage": "", "step": 0, "total": 0,
                              **where})
    record = run_planned(planned, out, run_job, BoardCallbacks(board, key))
    board.report.remote(key, {"state": record["status"]})
    return record, {**where, "start": start, "end": time.time(), "prior_loads": PRIORS.loads - loads,
                    "prior_load_s": PRIORS.load_s - load_s}


def job_resources(run_job, planned: PlannedJob):
    """The JobResources `run_job` declares for a job, or None (Ray's defaults) when it
    declares none or the job's config does not load: that job then fails in its task and is
    recorded like any failed job, instead of stopping the batch here."""
    try:
        return run_job.resources(planned.config, planned.overrides) if hasattr(run_job, "resources") else None
    except Exception:  # noqa: BLE001 - the task reports the same error in the manifest
        return None


@dataclass
class RayExecutor:
    """Runs a batch's jobs as Ray tasks (see the module docstring).

    address: None starts a Ray runtime here with `num_cpus` CPUs (default: the cores this
        process may use) and an object store of `object_store_mb` (tasks pass only records);
        "auto", "HOST:PORT" or "ray://HOST:PORT" joins a running cluster. When Ray is already
        initialised in this process, that runtime is used and left running.
    max_retries: tries after the first when a task's worker dies.
    show_progress: the batch's bar (the line per ended job is printed either way).
    on_progress: called on the driver with each board snapshot (about every `poll_s`).
    task_info: filled as jobs end: job key -> what its worker saw (run_task).
    """

    address: str | None = None
    max_retries: int = 1
    num_cpus: int | None = None
    object_store_mb: int = 256
    poll_s: float = 0.5
    show_progress: bool = True
    on_progress: Callable[[dict], None] | None = None
    task_info: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import_ray()  # a missing Ray fails before any work

    def run(self, pending, out, run_job):
        if not pending:  # nothing to do: no runtime, no task
            return
        ray = import_ray()
        if not out.shared_between_processes:
            raise UserError(f"--out {out.url}: memory:// lives inside one process and Ray workers cannot reach it; "
                            "give a folder or URL every node can write (a shared path, s3://, gs://, ...)")
        resources = [job_resources(run_job, p) for p in pending]
        owned = self._connect(ray)
        refs: dict = {}
        board, bar = None, None
        try:
            self._check_fits(ray, [r for r in resources if r is not None])
            board = ray.remote(num_cpus=0)(ProgressBoard).remote()
            task = ray.remote(max_calls=0)(run_task)
            for planned, res in zip(pending, resources):
                options = {"max_retries": self.max_retries, "name": f"scorelift:{planned.name}"}
                threads = 1
                if res is not None:
                    options.update(num_cpus=res.num_cpus, num_gpus=res.num_gpus)
                    if res.memory_gb > 0:
                        options["memory"] = int(res.memory_gb * 2**30)
                    threads = max(1, math.ceil(res.num_cpus))
                ref = task.options(**options).remote(planned, out, run_job, board, threads)
                refs[ref] = (planned, time.perf_counter())
            bar = BatchProgress(len(pending), self.show_progress)
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.poll_s)
                for ref in ready:
                    planned, submitted = refs.pop(ref)
                    try:
                        record, info = ray.get(ref)
                        self.task_info[planned.job.key] = info
                    except ray.exceptions.RayError as e:  # the worker died on every try, or the task could not run
                        cause = (str(e).strip().splitlines() or [""])[0]
                        record = lost_record(planned, out, f"{type(e).__name__}: {cause}",
                                             time.perf_counter() - submitted)
                    bar.finished(record)
                    yield planned, record
                snapshot = ray.get(board.snapshot.remote())
                bar.show(snapshot)
                if self.on_progress is not None:
                    self.on_progress(snapshot)
        finally:
            if refs:
                self._cancel(ray, list(refs))
            if bar is not None:
                bar.close()
            if board is not None:
                ray.kill(board)
            if owned:
                ray.shutdown()

    def _connect(self, ray) -> bool:
        """Start or join Ray; True when this executor started the runtime (and shuts it down)."""
        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address is None:
            num_cpus = self.num_cpus or len(os.sched_getaffinity(0))
            print(f"batch: starting a Ray runtime on this machine ({num_cpus} CPUs)")
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     object_store_memory=self.object_store_mb * 2**20)
            return True
        try:
            ray.init(address=self.address)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UserError(f"--ray {self.address}: could not join the Ray cluster ({e}); start it with "
                            "`ray start --head` or give its address (auto, HOST:PORT, ray://HOST:10001)") from None
        return True

    def _check_fits(self, ray, resources) -> None:
        """A job asking for more CPUs, GPUs or memory than the whole cluster has: an error on
        a runtime started here (it will never grow), a warning on a cluster (an autoscaler
        may add nodes; until then Ray waits)."""
        total = ray.cluster_resources()
        asks = [("CPU", "num_cpus", max(r.num_cpus for r in resources), 1),
                ("GPU", "num_gpus", max(r.num_gpus for r in resources), 1),
                ("memory", "memory_gb", max(r.memory_gb for r in resources), 2**30)]
        for name, key, need, unit in asks:
            have = total.get(name, 0.0) / unit
            if need > have:
                message = (f"a job asks for {need:g} {name} (resources.{key}) but the Ray cluster has {have:g}; "
                           f"lower it (e.g. resources.{key}=0 on CPU) or join a cluster that has it (--ray auto)")
                if self.address is None:
                    raise UserError(message)
                print(f"batch: warning: {message}; Ray waits until a node provides it")

    @staticmethod
    def _cancel(ray, refs: list) -> None:
        """Stop the outstanding tasks: a queued one never starts, a running one is interrupted
        (its run folder keeps its last checkpoint); wait a little for them to end."""
        for ref in refs:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - a task that ended meanwhile cannot be cancelled
                pass
        ray.wait(refs, num_returns=len(refs), timeout=10)


class BatchProgress:
    """One bar for the batch (done / failed / running), then the running jobs' stage and step."""

    SHOWN_JOBS = 3
    REFRESH_S = 1.0

    def __init__(self, total: int, enabled: bool = True):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="batch", unit="job", disable=not enabled, dynamic_ncols=True)
        self.done = self.failed = 0
        self.running = 0
        self._shown = 0.0

    def finished(self, record: dict) -> None:
        self.done += record["status"] == "done"
        self.failed += record["status"] == "failed"
        self.bar.update(1)
        line = f"{record['status']}: [{record['prompt']}] {record['time_s']:.1f} s -> {record['folder']}"
        if record["status"] == "failed":
            line += f" ({record['error']})"
        self.bar.write(line)
        self._postfix([])

    def show(self, snapshot: dict) -> None:
        running = [job for job in snapshot.values() if job.get("state") == "running"]
        self.running = len(running)
        self._postfix(running)

    def _postfix(self, running: list[dict]) -> None:
        jobs = [f"[{job['prompt'][:20]}] " + (f"{job['stage']} {job['step']}/{job['total']}" if job["total"]
                                                else "loading")
                for job in running[:self.SHOWN_JOBS]]
        more = f" +{len(running) - self.SHOWN_JOBS}" if len(running) > self.SHOWN_JOBS else ""
        self.bar.set_postfix_str(f"done {self.done} failed {self.failed} running {self.running}"
                                 + (" | " + "; ".join(jobs) + more if jobs else ""), refresh=False)
        if time.monotonic() - self._shown >= self.REFRESH_S:  # a log file gets a line per refresh
            self.bar.refresh()
            self._shown = time.monotonic()

    def close(self) -> None:
        self.bar.close()
