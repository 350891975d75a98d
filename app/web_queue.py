"""The web app's job line: first come, first served, one job at a time, whichever page or tab
asked (runs share the global RNG and the CPU/GPU). Gradio's own queue is not used for jobs so
that a waiting job knows its place in line and can be cancelled before it starts."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

from app.web_job import EXPORT_GUESS_S, WebJob
from app.web_runs import read_record


class JobQueue:
    """First come, first served, one job at a time (runs share the global RNG and the
    CPU/GPU). `submit` returns at once; a worker thread runs the jobs; every waiting job
    knows its place in line."""

    def __init__(self, runs_dir: str | Path):
        self.runs_dir = Path(runs_dir)
        self._lock = threading.Lock()
        self._waiting: deque[WebJob] = deque()
        self._current: WebJob | None = None
        self._worker: threading.Thread | None = None

    def submit(self, job: WebJob) -> WebJob:
        """Queue a checked job (a job in state 'error' is returned as it is)."""
        if job.state != "queued":
            return job
        with self._lock:
            self._waiting.append(job)
            self._renumber()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, daemon=True, name="scorelift-web-queue")
                self._worker.start()
        return job

    def cancel(self, job: WebJob | None) -> None:
        if job is None:
            return
        job.cancel()
        with self._lock:
            if job in self._waiting:
                self._waiting.remove(job)
                self._renumber()

    def export_estimate(self, preset: str) -> float:
        """Seconds the last finished run of `preset` in this runs folder spent exporting."""
        best = (0.0, EXPORT_GUESS_S)
        if not self.runs_dir.is_dir():
            return EXPORT_GUESS_S
        for folder in self.runs_dir.iterdir():
            record = read_record(folder) if folder.is_dir() else None
            if record and record.get("preset") == preset and record.get("export_s") is not None:
                best = max(best, (float(record.get("ended", 0)), float(record["export_s"])))
        return best[1]

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._current is not None or bool(self._waiting)

    def _renumber(self) -> None:
        ahead = 1 if self._current is not None else 0
        for index, job in enumerate(self._waiting):
            job.set_position(index + 1 + ahead)

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    self._current, self._worker = None, None
                    return
                self._current = self._waiting.popleft()
                self._renumber()
            self._current.run()
            with self._lock:
                self._current = None
