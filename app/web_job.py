"""The web app's jobs: a request checked at once, run by the job line (app/web_queue.py) in its
worker thread, and each job's progress read back as a stream of `WebUpdate`s.

A `WebJob` is checked when it is made (`WebJob(request, runs_dir)`): a bad request is a job in
state 'error' with one `error: ...` line and no run folder. A good one waits in the `JobQueue`
('queued', with its place in line), then runs ('running') in its own run folder, built exactly
as `scorelift generate` builds it (app/cli_jobs.build_generate_job), and ends 'done',
'cancelled' or 'error'. Cancel works in both waiting and running states: a waiting job leaves
the line, a running one stops before its next step (the runner checkpoints, so the Runs tab can
resume it). A user error found only once the run started (e.g. a prior that fails to load)
removes the run folder again when no step was checkpointed; any other exception is a bug: the
page shows "internal error" and the path of the log holding its traceback.

The ETA counts the export too: training time is extrapolated from the steps so far, the export
time is the last measured one of the same preset in this runs folder (else a stated guess).
"""

from __future__ import annotations

import shutil
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from app.cli_options import run_folder_name
from app.web_inputs import check_image, check_prompt_words, parse_overrides, user_errors, whole_number
from app.web_runs import (SERVER_ID, enlarged_preview, has_checkpoint, new_record, read_record, resumable,
                          retime_turntable, write_record, write_view_splat)
from core.errors import UserError

# Run folders are named by prompt and second; this lock makes two jobs in the same second
# take different folders instead of sharing one.
_FOLDER_LOCK = threading.Lock()

# What the page asks of every job unless the preset's overrides say otherwise: a turntable
# worth watching (256 px, 48 frames re-encoded at WEB_TURNTABLE_FPS: 3 s).
WEB_DEFAULTS = ("turntable_frames=48", "turntable_size=256")
WEB_TURNTABLE_FPS = 16.0
# The export estimate before a run of the preset has been timed in this runs folder (the default
# text preset's export measured 70 s on a busy 2-core CPU, see docs/web.md).
EXPORT_GUESS_S = 60.0
RATE_WINDOW = 50  # steps the training ETA's speed is measured over
VIDEO_EXPORT_LABEL = "writing the per-frame splats, the re-rendered frames and the novel-view video"

STATES = ("queued", "running", "done", "cancelled", "error")


@dataclass
class JobRequest:
    """What the user asked for. kind: 'text' (prompt), 'image' (image: the uploaded file's
    path), 'relight' (data_zip or from_run, envmap), 'video' (video or frames_zip, masks_zip
    and the knobs; app/web_video.py) or 'resume' (resume: a run folder's name under the runs
    folder). seed/steps: None means the preset's. overrides: the free-text box, one `key=value` per line."""

    kind: str
    preset: str = ""
    prompt: str = ""
    image: str | None = None
    seed: float | int | str | None = None
    steps: float | int | str | None = None
    overrides: str = ""
    resume: str = ""
    data_zip: str | None = None    # relight: the uploaded dataset .zip, or
    from_run: str = ""             # relight: a run folder's name under the runs folder
    envmap: str | None = None      # relight: an uploaded environment map (.hdr/.exr/.npy), optional
    video: str | None = None       # video: an uploaded video file, or
    frames_zip: str | None = None  # video: a .zip of its frames
    masks_zip: str | None = None   # video: a .zip of the instance masks
    fov: float | str | None = None             # video: horizontal field of view (degrees); None: 60
    max_resolution: int | str | None = None    # video: None means the preset's
    stride: int | str | None = None            # video: None means the preset's (1)


@dataclass
class WebUpdate:
    """One snapshot of a job. state: one of STATES. progress: fraction in [0, 1] of the
    whole job, export included. position: place in the queue (1 = next), 0 once running.
    `outputs` (the paths the pipeline returned) is set only when state is 'done'."""

    state: str
    status: str
    progress: float = 0.0
    preview: Path | None = None
    run_folder: Path | None = None
    position: int = 0
    outputs: dict[str, Path] = field(default_factory=dict)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def new_run_folder(runs_dir: Path, name: str, command: str = "generate") -> Path:
    """runs_dir/<command>-<slug>-<time>[-n], created empty here so no other job can take it."""
    base = runs_dir / run_folder_name(command, name).name
    with _FOLDER_LOCK:
        folder, n = base, 1
        while folder.exists():
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        folder.mkdir(parents=True)
    return folder


def internal_error(runs_dir: Path, exc: BaseException) -> str:
    """Append `exc`'s traceback to runs_dir/.logs/web-errors.log; the line the page shows."""
    log = runs_dir / ".logs" / "web-errors.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.write("".join(traceback.format_exception(exc)))
    traceback.print_exception(exc)
    return f"internal error (a bug, not your input): {type(exc).__name__}: {exc}; the traceback is in {log}"


def resumed_record(kind: str, record: dict) -> dict:
    """The record of a run being resumed: what was asked kept, the last ending's fields dropped."""
    kept = {k: v for k, v in record.items() if k not in ("message", "ended", "train_s", "export_s", "total_s")}
    return {**new_record(kind, record.get("preset", "")), **kept, "state": "queued", "server": SERVER_ID,
            "resumed": time.time()}


class WebJob:
    """One job of the page (see the module docstring). The runner's Callbacks."""

    def __init__(self, request: JobRequest, runs_dir: str | Path = "runs", base_overrides=(),
                 export_estimate: float = EXPORT_GUESS_S, upload_root: Path | None = None):
        self.request = request
        self.upload_root = upload_root
        self.runs_dir = Path(runs_dir)
        self.run_folder: Path | None = None
        self.export_estimate = export_estimate
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._version = 0
        self._state, self._message = "queued", "waiting for its turn"
        self._position = 0
        self._outputs: dict[str, Path] = {}
        self._preview: Path | None = None
        self._stage_offsets: dict[str, int] = {}
        self._total_steps = 0
        self._progress: tuple[str, int, int, float | None] | None = None  # stage, step, total, loss
        self._started: float | None = None
        # (time, steps done) of the last RATE_WINDOW steps: the ETA follows the current speed, which
        # drops as densification adds Gaussians.
        self._recent: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW)
        self._training_end: float | None = None
        self._record: dict = {}
        self.cfg = self._job = self._image = self._relight = self._video = None
        self.export_label = "exporting the mesh, the splat and the turntable"
        self.name = ""
        try:
            self._prepare(list(base_overrides))
        except user_errors() as e:
            self._finish("error", f"error: {e}")
        except Exception as e:  # noqa: BLE001 - a bug: the page says so, the server keeps serving
            self._finish("error", internal_error(self.runs_dir, e))
        else:
            offset = 0
            plan = self._video.stages if self._video else [(s.name, s.steps) for s in self.cfg.stages]
            for name, steps in plan:
                self._stage_offsets[name] = offset
                offset += steps
            self._total_steps = offset

    # --- control -------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def running(self) -> bool:
        return self._state in ("queued", "running")

    def cancel(self) -> None:
        """Stop the job: a queued one never starts, a running one stops before its next step."""
        self._stop.set()
        with self._changed:
            if self._state == "queued":
                self._state, self._message = "cancelled", "cancelled before it started; nothing was written"
                for source in (self._relight, self._video):
                    if source is not None:
                        source.discard()  # the zip's temporary extraction
        self._notify()

    def set_position(self, position: int) -> None:
        with self._changed:
            self._position = position
        self._notify()

    def run(self) -> None:
        """Run the job to its end in this thread (the queue's worker calls it)."""
        with self._changed:
            if self._state != "queued":
                return
            self._state, self._position, self._started = "running", 0, time.perf_counter()
        self._notify()
        try:
            self._open_folder()
            paths = self._job(self.cfg, self.run_folder, callbacks=self)
            export_done = time.perf_counter()
            self._after_run(paths)
        except BaseException as e:  # noqa: BLE001 - every ending is reported, none kills the worker
            self._fail(e)
            return
        train_end = self._training_end or export_done
        self._record.update(state="done", train_s=train_end - self._started, export_s=export_done - train_end,
                            total_s=time.perf_counter() - self._started, ended=time.time(),
                            outputs={k: str(v) for k, v in self._outputs.items()})
        write_record(self.run_folder, self._record)
        self._finish("done", f"done in {format_duration(time.perf_counter() - self._started)}: {self.run_folder}")

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the job has ended; False when `timeout` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self.running, timeout=timeout)

    # --- what the page reads -------------------------------------------------------------------

    def snapshot(self) -> WebUpdate:
        with self._changed:
            if self._state == "running":
                status, progress = self._status_line()
            elif self._state == "queued":
                ahead = self._position - 1
                status = (f"queued: {ordinal(self._position)} in line ({ahead} job{'' if ahead == 1 else 's'} "
                          "ahead); it starts by itself, Cancel takes it out of the line" if self._position
                          else "queued: starting")
                progress = 0.0
            else:
                status, progress = self._message, 1.0 if self._state == "done" else 0.0
            return WebUpdate(self._state, status, progress, self._preview, self.run_folder, self._position,
                             dict(self._outputs) if self._state == "done" else {})

    def updates(self, every: float = 0.5, min_gap: float = 0.1) -> Iterator[WebUpdate]:
        """A WebUpdate now, then after each change (no closer than `min_gap` seconds) or every
        `every` seconds (so the elapsed time ticks), and a last one when the job has ended."""
        while True:
            with self._changed:
                seen = self._version
            update = self.snapshot()
            yield update
            if update.state not in ("queued", "running"):
                return
            time.sleep(min_gap)
            with self._changed:
                self._changed.wait_for(lambda: self._version != seen, timeout=every)

    # --- the runner's Callbacks -----------------------------------------------------------------

    def on_step(self, stage: str, step: int, total: int, stats: dict[str, float]) -> None:
        now = time.perf_counter()
        with self._changed:
            done = self._stage_offsets.get(stage, 0) + step
            self._recent.append((now, done))
            if done >= self._total_steps:
                self._training_end = now
            self._progress = (stage, step, total, stats.get("loss"))
        self._notify()

    def on_preview(self, stage: str, step: int, path: Path) -> None:
        shown = enlarged_preview(Path(path), self.run_folder / "view" / Path(path).name)
        with self._changed:
            previous, self._preview = self._preview, shown
        if previous is not None and previous != shown and previous.parent.name == "view":
            previous.unlink(missing_ok=True)
        self._notify()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    # --- inside ---------------------------------------------------------------------------------

    def _prepare(self, base_overrides: list[str]) -> None:
        """Check the request and build the config; nothing is written here."""
        from app.cli_jobs import build_generate_job
        from app.web_inputs import presets_for
        from core.pipelines.distillation import check_memory

        r = self.request
        if r.kind == "resume":
            self._prepare_resume()
            return
        if r.kind not in ("text", "image", "relight", "video"):
            raise UserError(f"unknown job kind '{r.kind}': use 'text', 'image', 'relight', 'video' or 'resume'")
        if r.preset not in presets_for(r.kind):
            raise UserError(f"no preset '{r.preset}' for this tab; pick one of {', '.join(presets_for(r.kind))}")
        # The page's turntable defaults are keys of the 3D jobs; a video job writes no turntable.
        overrides = [*(WEB_DEFAULTS if r.kind != "video" else ()), *base_overrides, *parse_overrides(r.overrides)]
        seed = whole_number(r.seed, "the seed", 0)
        steps = whole_number(r.steps, "steps per stage", 1)
        if r.kind == "video":
            from app.web_video import prepare_video

            self.cfg, self.name, self._video = prepare_video(r, r.preset, overrides, seed, steps, self.upload_root)
            self._job = self._video.job
            self.export_label = VIDEO_EXPORT_LABEL
            self._record = new_record("video", r.preset, image=Path(r.video or r.frames_zip).name)
            return
        if r.kind == "relight":
            from app.web_relight import prepare_relight

            self.cfg, self.name, self._relight = prepare_relight(
                r.data_zip, r.from_run, r.envmap, r.preset, overrides, seed, steps, self.runs_dir, self.upload_root)
            self._job = self._relight.job
            self._record = new_record("relight", r.preset, image=Path(r.data_zip).name if r.data_zip else r.from_run)
            return
        if r.kind == "text":
            prompt = (r.prompt or "").strip()
            if not prompt:
                raise UserError('the prompt is empty: type what to generate, e.g. "a red cube"')
            self.cfg, self.name, self._job = build_generate_job(prompt, None, r.preset, overrides, seed, steps)
            check_prompt_words(self.cfg.prior, prompt)
            self._record = new_record("text", r.preset, prompt=prompt)
        else:
            from core.data.reference import load_reference

            self._image = check_image(r.image, self.upload_root)
            self.cfg, self.name, self._job = build_generate_job(None, self._image.source, r.preset, overrides, seed,
                                                                steps)
            # The loader's own check (can the object be separated?) on the pixels the run will read.
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                load_reference(self._image.save(Path(tmp) / "input.png"), self.cfg.reference_size,
                               self.cfg.object_fill, self.cfg.matting_threshold)
            self._record = new_record("image", r.preset, image=Path(r.image).name)
        check_memory(self.cfg)  # UserError when the renders cannot fit

    def _prepare_resume(self) -> None:
        from app.cli_options import load_job_config
        from core.pipelines.image_to_3d import ImageTo3DConfig, image_to_3d
        from core.pipelines.text_to_3d import TextTo3DConfig, generate

        name = Path(self.request.resume or "").name
        folder = self.runs_dir / name
        if not name or not folder.is_dir():
            raise UserError(f"no run '{self.request.resume}' in {self.runs_dir}; pick one in the Runs table")
        if not resumable(folder):
            raise UserError(f"run {name} cannot be resumed: only a stopped or cancelled run with checkpoints "
                            "and a config.yaml can")
        record = read_record(folder) or {}
        if record.get("kind") == "video" or (folder / "input" / "masks").is_dir():
            from app.web_video import prepare_video_resume

            self.cfg, self._video = prepare_video_resume(folder)
            self._job = self._video.job
            self.export_label = VIDEO_EXPORT_LABEL
            self.run_folder, self.name = folder, name
            self._record = resumed_record("video", record)
            return
        if record.get("kind") == "relight" or (folder / "model_pbr.ply").is_file() or (folder / "data").is_dir():
            from app.web_relight import RelightSource
            from core.pipelines.relight import RelightConfig

            self.cfg = load_job_config(RelightConfig, str(folder / "config.yaml"), [])
            self._relight = RelightSource()  # the data (and any uploaded map) are in the run folder already
            self._job = self._relight.job
            self.run_folder, self.name = folder, name
            self._record = resumed_record("relight", record)
            return
        import yaml

        is_image = record.get("kind") == "image" or "image" in (yaml.safe_load((folder / "config.yaml").read_text())
                                                                 or {})
        schema, self._job = (ImageTo3DConfig, image_to_3d) if is_image else (TextTo3DConfig, generate)
        self.cfg = load_job_config(schema, str(folder / "config.yaml"), [])
        self.run_folder, self.name = folder, name
        self._record = resumed_record("image" if is_image else "text", record)

    def _open_folder(self) -> None:
        if self.run_folder is None:
            command = "relight" if self._relight else "animate" if self._video else "generate"
            self.run_folder = new_run_folder(self.runs_dir, self.name, command)
            if self._image is not None:
                # The upload lives in Gradio's cache; the run keeps its own copy so config.yaml stays true.
                self.cfg.image = str(self._image.save(self.run_folder / "input.png"))
        self._record.update(state="running", server=SERVER_ID, started=time.time())
        write_record(self.run_folder, self._record)
        self._notify()

    def _after_run(self, paths: dict) -> None:
        outputs = {k: Path(v) for k, v in paths.items() if v is not None}
        missing = [str(p) for p in outputs.values() if not p.is_file()]
        if missing:
            raise RuntimeError(f"the run ended but did not write {', '.join(missing)}")
        turntable = outputs.get("turntable")
        if turntable is not None:
            retime_turntable(turntable, WEB_TURNTABLE_FPS)
        view = None if self._video else write_view_splat(self.run_folder,
                                                          source="model_pbr.ply" if self._relight else "model.ply")
        if view is not None:
            outputs["view_splat"] = view
        self._outputs = outputs

    def _fail(self, e: BaseException) -> None:
        from core.runner import Cancelled

        folder = self.run_folder
        if isinstance(e, Cancelled):
            state, message = "cancelled", f"cancelled: {e}; the checkpoint is kept in {folder} (Runs tab: Resume)"
        elif isinstance(e, user_errors()):
            state, message = "error", f"error: {e}"
            if folder is not None and not has_checkpoint(folder) and self.request.kind != "resume":
                shutil.rmtree(folder, ignore_errors=True)  # nothing of the run is worth keeping
                self.run_folder = folder = None
        elif isinstance(e, Exception):
            state, message = "error", internal_error(self.runs_dir, e)
        else:  # KeyboardInterrupt, SystemExit: the server is going down
            state, message = "cancelled", "stopped: the server is shutting down"
        if folder is not None and folder.is_dir():
            self._record.update(state=state, message=message, ended=time.time())
            write_record(folder, self._record)
        self._finish(state, message)
        if not isinstance(e, Exception):
            raise e

    def _finish(self, state: str, message: str) -> None:
        with self._changed:
            self._state, self._message = state, message
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _status_line(self) -> tuple[str, float]:
        """(status, progress fraction) of a running job; the caller holds the lock."""
        now = time.perf_counter()
        elapsed = now - self._started
        if self._stop.is_set():
            return f"cancelling (stops before the next step) · {format_duration(elapsed)} elapsed", 0.0
        if self._progress is None:
            return f"loading the prior and building the scene · {format_duration(elapsed)} elapsed", 0.0
        stage, step, total, loss = self._progress
        parts = [f"stage '{stage}' · step {step}/{total}"]
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        parts.append(f"{format_duration(elapsed)} elapsed")
        export = self.export_estimate
        if self._training_end is not None:
            exporting = now - self._training_end
            train = self._training_end - self._started
            left = max(export - exporting, 0.0)
            parts[0] = self.export_label
            parts.append(f"ETA ~{format_duration(left)}" if left > 0 else "ETA: any moment")
            return " · ".join(parts), min(0.99, (train + exporting) / (train + export))
        done = self._stage_offsets.get(stage, 0) + step
        first_time, first_done = self._recent[0]
        fraction_trained = done / max(1, self._total_steps)
        if done > first_done:
            per_step = (self._recent[-1][0] - first_time) / (done - first_done)
            train_left = per_step * (self._total_steps - done)
            parts.append(f"ETA ~{format_duration(train_left + export)} (training ~{format_duration(train_left)}"
                         f" + export ~{format_duration(export)})")
            return " · ".join(parts), min(0.99, elapsed / (elapsed + train_left + export))
        return " · ".join(parts), 0.5 * fraction_trained
