"""One web-app job: a text- or image-to-3D run in a background thread, watched through the
runner's callbacks (core/runner.py) and read back as a stream of `WebUpdate`s. It builds the
config exactly as `scorelift generate` does (app/cli_jobs.build_generate_job), writes its own
run folder, and can be cancelled; app/web.py turns the updates into Gradio outputs."""

from __future__ import annotations

import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from app.cli_jobs import build_generate_job
from app.cli_options import CLIError, run_folder_name

# Run folders are named by prompt and second; this lock makes two jobs in the same second
# take different folders instead of sharing one.
_FOLDER_LOCK = threading.Lock()


@dataclass
class JobRequest:
    """What the user asked for. kind: 'text' (prompt) or 'image' (image: a picture's path).
    overrides: the free-text box, one `key=value` per line, as on the command line."""

    kind: str
    preset: str
    prompt: str = ""
    image: str | None = None
    seed: int | None = None
    steps: int | None = None
    overrides: str = ""


@dataclass
class WebUpdate:
    """One snapshot of a job. state: 'running' | 'done' | 'cancelled' | 'error'. `outputs` (the
    paths the pipeline returned) is set only when state is 'done'."""

    state: str
    status: str
    preview: Path | None = None
    run_folder: Path | None = None
    outputs: dict[str, Path] = field(default_factory=dict)


def parse_overrides(text: str) -> list[str]:
    """The overrides box -> CLI-style `key=value` strings; blank lines and `#` comments are skipped."""
    overrides = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line or line.startswith("="):
            raise CLIError(f"override line {number} '{line}' is not key=value (e.g. steps=200 or seed=3)")
        overrides.append(line)
    return overrides


def whole_number(value, what: str, minimum: int) -> int | None:
    """A Gradio Number (float or None) -> int or None, with a message for fractions and small values."""
    if value is None or value == "":
        return None
    if float(value) != int(float(value)) or int(float(value)) < minimum:
        raise CLIError(f"{what} must be a whole number of at least {minimum}, not {value}")
    return int(float(value))


def new_run_folder(runs_dir: Path, name: str) -> Path:
    """runs_dir/generate-<slug>-<time>[-n], created empty here so no other job can take it."""
    base = runs_dir / run_folder_name("generate", name).name
    with _FOLDER_LOCK:
        folder, n = base, 1
        while folder.exists():
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        folder.mkdir(parents=True)
    return folder


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class WebJob:
    """A run the web app started. `WebJob(request, runs_dir).start()` checks the inputs at once
    (a bad one puts the job in state 'error' with the message; no thread, no folder) and
    otherwise runs the pipeline in a daemon thread; `updates()` yields a `WebUpdate` whenever
    something changed until the job ends; `cancel()` stops it at the next step (the runner
    checkpoints and raises Cancelled). It is the runner's Callbacks."""

    def __init__(self, request: JobRequest, runs_dir: str | Path = "runs"):
        self.request = request
        self.runs_dir = Path(runs_dir)
        self.run_folder: Path | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._version = 0
        self._thread: threading.Thread | None = None
        self._state, self._message = "running", "starting"
        self._outputs: dict[str, Path] = {}
        self._preview: Path | None = None
        self._stage_offsets: dict[str, int] = {}
        self._total_steps = 0
        self._progress: tuple[str, int, int, float | None] | None = None  # stage, step, total, loss
        self._started = time.perf_counter()
        self._first_step: tuple[float, int] | None = None  # (time, steps done) at the first step seen

    # --- control -------------------------------------------------------------------------------

    def start(self) -> "WebJob":
        try:
            cfg, job = self._prepare()
        except CLIError as e:
            self._finish("error", str(e))
            return self
        offset = 0
        for stage in cfg.stages:
            self._stage_offsets[stage.name] = offset
            offset += stage.steps
        self._total_steps = offset
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, args=(cfg, job), daemon=True,
                                        name=f"scorelift-web-{self.run_folder.name}")
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()
        self._notify()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._state == "running"

    # --- what the UI reads ----------------------------------------------------------------------

    def snapshot(self) -> WebUpdate:
        with self._changed:
            status = self._status_line() if self._state == "running" else self._message
            return WebUpdate(self._state, status, self._preview, self.run_folder,
                             dict(self._outputs) if self._state == "done" else {})

    def updates(self, every: float = 0.5, min_gap: float = 0.1) -> Iterator[WebUpdate]:
        """A WebUpdate now, then after each change (no closer than `min_gap` seconds) or every
        `every` seconds (so the elapsed time ticks), and a last one when the job has ended."""
        while True:
            with self._changed:
                seen = self._version
            update = self.snapshot()
            yield update
            if update.state != "running":
                return
            time.sleep(min_gap)
            with self._changed:
                self._changed.wait_for(lambda: self._version != seen, timeout=every)

    # --- the runner's Callbacks -----------------------------------------------------------------

    def on_step(self, stage: str, step: int, total: int, stats: dict[str, float]) -> None:
        with self._changed:
            done = self._stage_offsets.get(stage, 0) + step
            if self._first_step is None:
                self._first_step = (time.perf_counter(), done)
            self._progress = (stage, step, total, stats.get("loss"))
        self._notify()

    def on_preview(self, stage: str, step: int, path: Path) -> None:
        with self._changed:
            self._preview = Path(path)
        self._notify()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    # --- inside ---------------------------------------------------------------------------------

    def _prepare(self):
        """Check the request and build the config; the run folder is made only once all is well."""
        r = self.request
        overrides = parse_overrides(r.overrides)
        seed = whole_number(r.seed, "the seed", 0)
        steps = whole_number(r.steps, "steps", 1)
        if r.kind == "text":
            if not (r.prompt or "").strip():
                raise CLIError('the prompt is empty: type what to generate, e.g. "a red cube"')
            cfg, name, job = build_generate_job(r.prompt.strip(), None, r.preset, overrides, seed, steps)
            self.run_folder = new_run_folder(self.runs_dir, name)
        elif r.kind == "image":
            if not r.image or not Path(r.image).is_file():
                raise CLIError("no image: upload a picture of one object (RGBA, or on a plain background)")
            image = Path(r.image)
            cfg, name, job = build_generate_job(None, image, r.preset, overrides, seed, steps)
            self.run_folder = new_run_folder(self.runs_dir, name)
            # The upload lives in Gradio's cache; the run keeps its own copy so config.yaml stays true.
            kept = shutil.copy(image, self.run_folder / f"input{image.suffix.lower() or '.png'}")
            cfg.image = str(kept)
        else:
            raise CLIError(f"unknown job kind '{r.kind}': use 'text' or 'image'")
        return cfg, job

    def _run(self, cfg, job) -> None:
        from core.data.reference import ReferenceImageError
        from core.priors.loading import PriorLoadError
        from core.runner import Cancelled, RunError

        try:
            paths = job(cfg, self.run_folder, callbacks=self)
        except Cancelled as e:
            self._finish("cancelled", f"cancelled: {e}; the checkpoint is kept in {self.run_folder}")
        except (PriorLoadError, ReferenceImageError, RunError, ValueError) as e:
            self._finish("error", f"error: {e}")
        except Exception as e:  # a bug, not the user's input: one line in the UI, the traceback in the log
            traceback.print_exc()
            self._finish("error", f"error: the run failed ({type(e).__name__}: {e}); run folder {self.run_folder}")
        else:
            outputs = {k: Path(v) for k, v in paths.items() if v is not None}
            missing = [str(p) for p in outputs.values() if not p.is_file()]
            if missing:
                self._finish("error", f"error: the run ended but did not write {', '.join(missing)}")
                return
            self._outputs = outputs
            self._finish("done", f"done in {format_duration(time.perf_counter() - self._started)}: "
                                 f"{self.run_folder}")

    def _finish(self, state: str, message: str) -> None:
        with self._changed:
            self._state, self._message = state, message
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _status_line(self) -> str:
        elapsed = time.perf_counter() - self._started
        if self._stop.is_set():
            return f"cancelling (stops before the next step) · {format_duration(elapsed)} elapsed"
        if self._progress is None:
            return f"loading the prior and building the scene · {format_duration(elapsed)} elapsed"
        stage, step, total, loss = self._progress
        parts = [f"stage '{stage}' · step {step}/{total}"]
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        parts.append(f"{format_duration(elapsed)} elapsed")
        done = self._stage_offsets.get(stage, 0) + step
        if done >= self._total_steps:
            return " · ".join([*parts, "exporting the model and the turntable"])
        first_time, first_done = self._first_step
        if done > first_done:
            per_step = (time.perf_counter() - first_time) / (done - first_done)
            parts.append(f"ETA ~{format_duration(per_step * (self._total_steps - done))} of training")
        return " · ".join(parts)
