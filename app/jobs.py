"""Batches of text-to-3D jobs: one run folder per prompt and a manifest.jsonl that records
each job's status, time, paths and final metrics. Re-running a batch skips finished jobs,
resumes interrupted ones from their checkpoints, and a failing job never stops the rest."""

from __future__ import annotations

import hashlib
import json
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from core.io import append_jsonl


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


class BatchFileError(ValueError):
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


def finished_keys(manifest: Path) -> set[str]:
    """Keys of jobs whose latest manifest record says done."""
    latest: dict[str, str] = {}
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            latest[record.get("key", "")] = record.get("status", "")
    return {k for k, status in latest.items() if status == "done"}


def last_metrics(metrics: Path) -> dict:
    """The final step's record of a run's metrics.jsonl (empty if none)."""
    if not metrics.is_file():
        return {}
    lines = metrics.read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def run_batch(jobs: list[Job], out: Path, default_config: str, base_overrides: list[str], run_job) -> dict:
    """Run every unfinished job into out/<job folder>/ and append its outcome to
    out/manifest.jsonl. `run_job(job, config, overrides, folder) -> dict of paths` does one
    job (resuming when its folder holds checkpoints). Returns counts by status."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    done = finished_keys(manifest)
    counts = {"done": 0, "failed": 0, "skipped": 0}
    for index, job in enumerate(jobs):
        folder = out / job.folder_name(index)
        if job.key in done:
            counts["skipped"] += 1
            continue
        config = job.config or default_config
        overrides = [*base_overrides, *job.overrides] + ([f"seed={job.seed}"] if job.seed is not None else [])
        record = {"key": job.key, "prompt": job.prompt, "seed": job.seed, "config": config,
                  "overrides": overrides, "folder": str(folder)}
        tic = time.perf_counter()
        try:
            paths = run_job(job, config, overrides, folder)
            record.update(status="done", paths={k: str(v) for k, v in paths.items() if v is not None})
        except Exception as e:  # one bad prompt must not stop the batch
            record.update(status="failed", error=f"{type(e).__name__}: {e}",
                          traceback=traceback.format_exc(limit=3))
        record["time_s"] = round(time.perf_counter() - tic, 2)
        record["metrics"] = last_metrics(folder / "metrics.jsonl")
        append_jsonl(manifest, record)
        counts[record["status"]] += 1
    return counts
