"""Batches of text-to-3D jobs: one run folder per prompt and a manifest.jsonl that records
each job's status, time, paths and final metrics. Re-running a batch skips finished jobs,
resumes interrupted ones from their checkpoints, and a failing job never stops the rest.

`run_batch` is the one batch runner: it reads the manifest, plans the unfinished jobs, hands
them to an executor and writes each outcome to the manifest as it arrives. Executors only
decide where `run_planned` runs: `LocalExecutor` here, one job after another in this
process; `app.ray_jobs.RayExecutor` as Ray tasks on a cluster. Files go through
`app.batch_store.BatchOut` (a local folder or an fsspec URL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

from app.batch_store import BatchOut
from core.errors import UserError


@dataclass
class Job:
    prompt: str
    seed: int | None = None
    config: str | None = None
    overrides: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Identity of a job across re-runs (same prompt, seed, preset and overrides)."""
        text = json.dumps([self.prompt, self.seed, self.config, self.overrides])
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def folder_name(self, index: int) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.prompt.lower()).strip("-")[:40] or "prompt"
        return f"{index:03d}-{slug}-{self.key[:6]}"


class BatchFileError(UserError):
    """The prompts file cannot be read as prompts; the message says where and why."""


def read_jobs(path: str | Path) -> list[Job]:
    """Jobs from a .txt file (one prompt per line; blank lines and # comments skipped) or a
    .jsonl file (one {"prompt": ..., "seed"?, "config"?, "overrides"?} object per line)."""
    path = Path(path)
    if not path.is_file():
        raise BatchFileError(f"prompts file not found: {path}")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise BatchFileError(f"{path} is not a text file; give prompts one per line (.txt) or as JSON lines") from None
    jobs = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if path.suffix == ".jsonl":
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise BatchFileError(f"{path}:{number}: not a JSON object: {e}") from None
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                raise BatchFileError(f'{path}:{number}: expected {{"prompt": "...", ...}}')
            unknown = set(item) - {"prompt", "seed", "config", "overrides"}
            if unknown:
                raise BatchFileError(f"{path}:{number}: unknown keys {sorted(unknown)}; "
                                     "allowed: prompt, seed, config, overrides")
            jobs.append(Job(item["prompt"], item.get("seed"), item.get("config"), list(item.get("overrides", []))))
        else:
            jobs.append(Job(line))
    if not jobs:
        raise BatchFileError(f"{path} holds no prompts")
    return jobs



# --- planning: what this run of the batch still has to do ------------------------------


@dataclass
class PlannedJob:
    """A job this run of the batch has to do: its place in the prompts file, its preset and
    overrides resolved, its run folder's name."""

    index: int
    job: Job
    config: str
    overrides: list[str]

    @property
    def name(self) -> str:
        return self.job.folder_name(self.index)

    def record(self, out: BatchOut) -> dict:
        """The manifest fields known before the job runs."""
        return {"key": self.job.key, "prompt": self.job.prompt, "seed": self.job.seed, "config": self.config,
                "overrides": self.overrides, "folder": out.child(self.name)}


def finished_keys(records: Iterable[dict]) -> set[str]:
    """Keys of jobs whose latest manifest record says done."""
    latest = {record.get("key", ""): record.get("status", "") for record in records}
    return {k for k, status in latest.items() if status == "done"}


def plan_batch(jobs: list[Job], records: list[dict], default_config: str,
               base_overrides: list[str]) -> tuple[list[PlannedJob], int]:
    """(jobs still to run, number already done) given the manifest's records."""
    done = finished_keys(records)
    pending = []
    for index, job in enumerate(jobs):
        if job.key in done:
            continue
        overrides = [*base_overrides, *job.overrides] + ([f"seed={job.seed}"] if job.seed is not None else [])
        pending.append(PlannedJob(index, job, job.config or default_config, overrides))
    return pending, len(jobs) - len(pending)


# --- one job, wherever it runs ---------------------------------------------------------

RunJob = Callable[..., dict]  # run_job(job, config, overrides, folder, callbacks=None) -> {name: path}


def last_metrics(metrics: Path) -> dict:
    """The final step's record of a run's metrics.jsonl (empty if none)."""
    if not metrics.is_file():
        return {}
    lines = metrics.read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def run_planned(planned: PlannedJob, out: BatchOut, run_job: RunJob, callbacks=None) -> dict:
    """Run one job in this process into its run folder (resuming from its checkpoints) and
    return its manifest record: status done with the output paths, or failed with the error."""
    record = planned.record(out)
    tic = time.perf_counter()
    with out.job_folder(planned.name) as (folder, sync):
        try:
            if not out.is_local:
                callbacks = _SyncingCallbacks(callbacks, sync)
            paths = run_job(planned.job, planned.config, planned.overrides, folder, callbacks)
            record.update(status="done", paths=out.published(planned.name, folder, paths))
        except Exception as e:  # one bad prompt must not stop the batch
            record.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=3))
        record["time_s"] = round(time.perf_counter() - tic, 2)
        record["metrics"] = last_metrics(folder / "metrics.jsonl")
    return record


def lost_record(planned: PlannedJob, out: BatchOut, error: str, time_s: float) -> dict:
    """The manifest record of a job whose process never returned one (its worker died on
    every try): failed, with the error the executor saw."""
    folder = out.child(planned.name)
    metrics = last_metrics(Path(folder) / "metrics.jsonl") if out.is_local else {}
    return {**planned.record(out), "status": "failed", "error": error, "traceback": "",
            "time_s": round(time_s, 2), "metrics": metrics}


class _SyncingCallbacks:
    """A run's callbacks plus an upload of each checkpoint once saved (remote outs)."""

    def __init__(self, inner, sync: Callable[[], None]):
        from core.runner import TqdmCallbacks

        self.inner = inner if inner is not None else TqdmCallbacks()
        self.sync = sync

    def on_step(self, stage, step, total, stats):
        self.inner.on_step(stage, step, total, stats)
        self.sync()

    def on_preview(self, stage, step, path):
        self.inner.on_preview(stage, step, path)

    def should_stop(self):
        return self.inner.should_stop()


# --- the runner --------------------------------------------------------------------------


class Executor(Protocol):
    def run(self, pending: list[PlannedJob], out: BatchOut, run_job: RunJob) -> Iterator[tuple[PlannedJob, dict]]:
        """Run every planned job (through `run_planned`) and yield (job, record) as each ends."""


class LocalExecutor:
    """One job after another in this process, each with its own progress bar."""

    def run(self, pending, out, run_job):
        for planned in pending:
            print(f"[{planned.job.prompt}] -> {out.child(planned.name)}")
            yield planned, run_planned(planned, out, run_job)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the batch; the manifest holds every job that ended before it."""

    def __init__(self, counts: dict, unfinished: int):
        super().__init__(f"interrupted with {unfinished} jobs unfinished")
        self.counts, self.unfinished = counts, unfinished


def run_batch(jobs: list[Job], out: str | Path | BatchOut, default_config: str, base_overrides: list[str],
              run_job: RunJob, executor: Executor | None = None) -> dict:
    """Run every unfinished job into OUT/<job folder>/ and record its outcome in
    OUT/manifest.jsonl (rewritten atomically after each job). `run_job(job, config, overrides,
    folder, callbacks)` does one job, resuming when its folder holds checkpoints. Returns
    counts by status; Ctrl-C raises BatchInterrupted once the executor has stopped its jobs."""
    out = out if isinstance(out, BatchOut) else BatchOut(out)
    records = out.read_manifest()
    pending, skipped = plan_batch(jobs, records, default_config, base_overrides)
    counts = {"done": 0, "failed": 0, "skipped": skipped}
    results = (executor or LocalExecutor()).run(pending, out, run_job)
    with contextlib.closing(results):
        try:
            for _, record in results:
                records.append(record)
                out.write_manifest(records)
                counts[record["status"]] += 1
        except KeyboardInterrupt:
            raise BatchInterrupted(counts, len(pending) - counts["done"] - counts["failed"]) from None
    return counts


# --- the text-to-3D job and its prior, loaded once per process --------------------------


class PriorCache:
    """The prior of this process, loaded once and reused by every job that names the same
    prior config (a batch worker runs many jobs). It holds one prior: a job naming another
    replaces it. A prior a job has changed (VSD/DSD attach a LoRA adapter to its UNet) is
    dropped after that job. `loads` and `load_s` count what loading cost."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._prior = None
        self.loads = 0
        self.load_s = 0.0

    def get(self, cfg):
        from core.priors import load

        key = json.dumps(asdict(cfg), sort_keys=True, default=str)
        if key != self._key:
            self._key, self._prior = None, None  # free the old one before loading the next
            tic = time.perf_counter()
            self._prior = load(cfg)
            self._key = key
            self.loads += 1
            self.load_s += time.perf_counter() - tic
        return self._prior

    def drop_if_changed(self) -> None:
        from core.priors.loading import has_adapters

        unet = getattr(self._prior, "unet", None)
        if unet is not None and has_adapters(unet):
            self._key, self._prior = None, None


PRIORS = PriorCache()


class TextTo3DJob:
    """One text-to-3D job of a batch: its preset with the overrides and its prompt, run by
    core.pipelines.text_to_3d.generate on this process's cached prior."""

    def __call__(self, job: Job, config: str, overrides: list[str], folder: Path, callbacks=None) -> dict:
        from core.pipelines.text_to_3d import generate

        cfg = self.config(config, overrides)
        cfg.prompt = job.prompt
        try:
            return generate(cfg, folder, callbacks, prior=PRIORS.get(cfg.prior))
        finally:
            PRIORS.drop_if_changed()

    @staticmethod
    def config(config: str, overrides: list[str]):
        from app.cli_options import load_job_config
        from core.pipelines.text_to_3d import TextTo3DConfig

        return load_job_config(TextTo3DConfig, config, overrides)

    def resources(self, config: str, overrides: list[str]):
        """The job's JobResources (the preset's `resources`, overridable)."""
        return self.config(config, overrides).resources
