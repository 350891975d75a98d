"""The Gradio web app (`scorelift web`): one tab per pipeline (Text to 3D, Image to 3D, Relight,
Video to 4D) and a Runs tab, over the same jobs as `scorelift generate`.

A pipeline tab is built by `_job_tab(gr, spec, ...)` from a `TabSpec` (its subject input and
how that becomes a `JobRequest`, and optionally its own result area); a new pipeline is one
more TabSpec in `PIPELINE_TABS` plus its job kind in app/web_job.py (Video to 4D:
app/web_video.py). Each Generate makes a `WebJob` (checked at once: a bad input is one
`error:` line and no run folder) and puts it in the server's one `JobQueue`; the event then
streams the job's progress (bar, stage, step, loss, ETA with the export, place in line, the
latest preview). The 3D viewers are set once, in a follow-up event after the stream ends: a
gr.Model3D that is first streamed None and then a path stays blank.

Security: `launch` serves on 127.0.0.1 unless told otherwise, serves no file outside the
runs folder (allowed_paths) besides Gradio's own upload cache, caps uploads at MAX_UPLOAD, and
makes no share link unless asked.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr

from app.web_inputs import MAX_IMAGE_SIDE, MAX_UPLOAD, presets_for, upload_root
from app.web_job import JobRequest, WebJob, WebUpdate
from app.web_queue import JobQueue
from app.web_runs import key_metrics, list_runs, read_record, resumable, run_state
from app.web_video import video_inputs, video_request_fields, video_results

__all__ = ["build_app", "launch", "presets_for", "progress_html"]

DEFAULT_PRESETS = {"text": "text_to_3d/gaussian_sds", "image": "image_to_3d/gaussian_zero123",
                   "relight": "relight/progressive", "video": "video4d/dreamscene4d"}
OVERRIDE_EXAMPLES = {"*": "turntable_frames=24\nprior.model=<hub id or folder>",
                     "video": "motion.steps=100\nlift.prior_model=<Zero123 hub id or folder>"}
RUN_COLUMNS = ["run", "state", "kind", "subject", "preset", "when", "files"]
SPLAT_LABELS = {"relight": "Gaussian splat (centred copy of model_pbr.ply's radiance colours)"}
SPLAT_LABEL = "Gaussian splat (centred copy of model.ply)"
STATE_COLOURS = {"done": "#15803d", "error": "#b91c1c", "cancelled": "#92400e", "queued": "#1d4ed8",
                 "running": "#1d4ed8"}


@dataclass
class TabSpec:
    """A pipeline's tab: `kind` is its JobRequest kind; `subject(gr, web)` builds its input
    component(s) (one, or a list); `request_fields(*values)` turns their raw values into
    JobRequest fields;
    `preprocess` is False when the raw upload must reach our own checks (an image that does
    not decode is our message, not Gradio's bare "Error"). `results(gr, kind)` builds the
    result area and returns (components, values(job), cleared values); None: the 3D viewers."""

    kind: str
    title: str
    subject: Callable
    request_fields: Callable
    preprocess: bool = True
    results: Callable | None = None


def _upload_path(value) -> str | None:
    """The server path of an un-preprocessed gr.Image value (a FileData dict) or None."""
    if isinstance(value, dict):
        return value.get("path")
    return value or None


def finished_runs(runs_dir: Path) -> list[str]:
    """Run folders under `runs_dir` that ended with a model (newest first): what Relight's
    "finished run" choice offers (`scorelift relight --from RUN`)."""
    return [row["run"] for row in list_runs(runs_dir) if row["state"] == "done" and row["files"]]


def _relight_inputs(gr, web):
    """The Relight tab's subject: a dataset zip or a finished run, and an optional environment map."""
    data = gr.File(label=f"Blender/NeRF-synthetic dataset as a .zip (transforms_train.json + images, at the top or "
                         f"in one folder; at most {MAX_UPLOAD.upper()})", file_count="single", type="filepath",
                   height=120, elem_id="relight-zip")
    with gr.Row():
        run = gr.Dropdown(finished_runs(web.runs_dir), value=None, label="…or a finished run to relight (renders it "
                          "from 48 views)", allow_custom_value=False, elem_id="relight-run", scale=4)
        refresh = gr.Button("↻", elem_id="relight-run-refresh", scale=0, min_width=40)
    envmap = gr.File(label="Environment map for the relit turntable (.hdr, .exr or .npy; optional: the learned one)",
                     file_count="single", type="filepath", height=100, elem_id="relight-envmap")
    refresh.click(lambda: gr.update(choices=finished_runs(web.runs_dir)), None, run, queue=False)
    return [data, run, envmap]


PIPELINE_TABS = [
    TabSpec("text", "Text to 3D",
            lambda gr, web: gr.Textbox(label="Prompt", placeholder="a red cube", lines=1, elem_id="text-subject"),
            lambda value: {"prompt": value or ""}),
    TabSpec("image", "Image to 3D",
            lambda gr, web: gr.Image(label=f"Image: one object, RGBA or on a plain background (at most "
                                      f"{MAX_IMAGE_SIDE} px a side, {MAX_UPLOAD.upper()})", type="filepath", image_mode=None,
                                sources=["upload", "clipboard"], height=256, elem_id="image-subject"),
            lambda value: {"image": _upload_path(value)}, preprocess=False),
    TabSpec("relight", "Relight", _relight_inputs,
            lambda data, run, envmap: {"data_zip": _upload_path(data), "from_run": run or "",
                                       "envmap": _upload_path(envmap)}, preprocess=False),
    TabSpec("video", "Video to 4D", video_inputs, video_request_fields, preprocess=False, results=video_results),
]


def progress_html(update: WebUpdate | None) -> str:
    """The progress panel: a bar (the job's fraction, export included) and the status line,
    prefixed by the state; an error's line is red and starts with `error:`."""
    if update is None:
        return "<div class='sl-progress' data-state='idle'><i>No job yet: press Generate.</i></div>"
    percent = max(0.0, min(1.0, update.progress)) * 100
    colour = STATE_COLOURS.get(update.state, "#374151")
    # An error's line already starts with "error:" (or "internal error"); the others get their state.
    label = "" if update.state == "error" else f"<b>{update.state}</b> · "
    return (f"<div class='sl-progress' data-state='{update.state}' data-progress='{update.progress:.4f}' "
            f"data-position='{update.position}'>"
            f"<div style='background:#e5e7eb;border-radius:6px;height:14px;overflow:hidden'>"
            f"<div class='sl-fill' style='width:{percent:.1f}%;height:100%;background:{colour}'></div></div>"
            f"<div class='sl-status' style='margin-top:6px;color:{colour}'>{label}{html.escape(update.status)}"
            "</div></div>")


def _result_values(job: WebJob | None) -> tuple:
    """(mesh, splat, turntable, downloads, metrics) of a finished job; Nones otherwise."""
    if job is None or job.state != "done":
        return None, None, None, None, None
    outputs = job.snapshot().outputs
    downloads = [str(p) for key, p in outputs.items()
                 if key.startswith("model_") or key in ("turntable", "config", "environment_hdr")]
    splat = (str(outputs["view_splat"]) if "view_splat" in outputs else
             gr.update(value=None, label="Gaussian splat: none, this run ends in a mesh"))
    return (str(outputs["model_glb"]) if "model_glb" in outputs else None, splat,
            str(outputs["turntable"]) if "turntable" in outputs else None,
            downloads or None,
            key_metrics(job.run_folder))


class WebApp:
    """The server's state behind the page: the runs folder, the one job queue, the overrides
    every job gets (`job_overrides`, e.g. tests' tiny settings) and each page's latest job per
    tab (keyed by Gradio's session hash), which Cancel and the result event read."""

    def __init__(self, runs_dir: str | Path, job_overrides=(), check_uploads: bool = True):
        self.runs_dir = Path(runs_dir)
        self.queue = JobQueue(self.runs_dir)
        # A list applies to every job; a dict {kind: list} per tab (a key one pipeline lacks, e.g.
        # a second stage's steps, would be an error in the other).
        self.job_overrides = job_overrides if isinstance(job_overrides, dict) else {"*": list(job_overrides)}
        self.check_uploads = check_uploads
        self.jobs: dict[tuple[str, str], WebJob] = {}

    def submit(self, kind: str, session: str, **fields) -> WebJob:
        request = JobRequest(kind, **fields)
        overrides = [*self.job_overrides.get("*", []), *self.job_overrides.get(kind, [])]
        job = WebJob(request, self.runs_dir, overrides, self.queue.export_estimate(request.preset),
                     upload_root() if self.check_uploads else None)
        self.jobs[(session, kind)] = job
        return self.queue.submit(job)

    def follow(self, job: WebJob):
        """Yield (progress html, preview, run folder) until the job ends; a page that stops
        reading (closed) cancels its job."""
        try:
            for update in job.updates():
                yield (progress_html(update), str(update.preview) if update.preview else None,
                       str(update.run_folder or ""))
        finally:
            if job.running:
                self.queue.cancel(job)

    def cancel(self, session: str, kind: str) -> None:
        self.queue.cancel(self.jobs.get((session, kind)))


def _session(request) -> str:
    return getattr(request, "session_hash", None) or "no-session"


def _job_tab(gr, spec: TabSpec, web: WebApp) -> None:
    """The controls, outputs and events of one pipeline tab."""
    kind = spec.kind
    api = f"{kind}_to_4d" if kind == "video" else f"{kind}_to_3d"
    with gr.Row():
        with gr.Column(scale=1):
            subjects = spec.subject(gr, web)
            subjects = list(subjects) if isinstance(subjects, (list, tuple)) else [subjects]
            preset = gr.Dropdown(presets_for(kind), value=DEFAULT_PRESETS[kind], label="Preset",
                                 elem_id=f"{kind}-preset")
            with gr.Row():
                seed = gr.Textbox(label="Seed", placeholder="empty: the preset's", elem_id=f"{kind}-seed")
                steps = gr.Textbox(label="Steps per stage", placeholder="empty: the preset's",
                                   elem_id=f"{kind}-steps")
            overrides = gr.Textbox(label="Overrides (key=value, one per line, as on the command line)", lines=2,
                                   placeholder=OVERRIDE_EXAMPLES.get(kind, OVERRIDE_EXAMPLES["*"]),
                                   elem_id=f"{kind}-overrides")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id=f"{kind}-generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id=f"{kind}-cancel")
        with gr.Column(scale=1):
            progress = gr.HTML(progress_html(None), elem_id=f"{kind}-progress")
            fitted = kind in ("relight", "video")
            preview = gr.Image(label="Latest preview (renders of the views being fitted)" if fitted else
                               "Latest preview (renders; below: where the prior pushes hardest)",
                               type="filepath", interactive=False, height=300, elem_id=f"{kind}-preview")
    result_outputs, result_values, clear = (spec.results or _model_results)(gr, kind)
    folder = gr.Textbox(label="Run folder", interactive=False, elem_id=f"{kind}-folder")

    def start(request: gr.Request, *values):
        *subject_values, preset_value, seed_value, steps_value, overrides_value = values
        job = web.submit(kind, _session(request), preset=preset_value or "", seed=seed_value, steps=steps_value,
                         overrides=overrides_value or "", **spec.request_fields(*subject_values))
        yield from web.follow(job)

    def results(request: gr.Request):
        return result_values(web.jobs.get((_session(request), kind)))

    (generate.click(clear, None, result_outputs, queue=False)
     .then(start, [*subjects, preset, seed, steps, overrides], [progress, preview, folder],
           preprocess=spec.preprocess, concurrency_limit=None, show_progress="hidden",
           api_name=api)
     .then(results, None, result_outputs, show_progress="hidden"))
    def stop(request: gr.Request):
        web.cancel(_session(request), kind)

    cancel.click(stop, None, None, queue=False, api_name=f"cancel_{api}")


def _model_results(gr, kind: str):
    """The 3D tabs' result area: mesh and splat viewers, turntable, downloads, key metrics.
    Returns (components, values(job), cleared values)."""
    with gr.Row(equal_height=True):
        mesh = gr.Model3D(label="Mesh with PBR textures (model.glb)" if kind == "relight" else "Mesh (model.glb)",
                          height=360, elem_id=f"{kind}-mesh",
                          clear_color=(1.0, 1.0, 1.0, 1.0))
        splat_label = SPLAT_LABELS.get(kind, SPLAT_LABEL)
        splat = gr.Model3D(label=splat_label, height=360,
                           elem_id=f"{kind}-splat")
        video = gr.Video(label=("Relit turntable: the environment turns once (256 px, 3 s)" if kind == "relight"
                                else "Turntable (256 px, 3 s)"), interactive=False, autoplay=True, loop=True,
                         height=360, elem_id=f"{kind}-turntable")
    with gr.Row():
        files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id=f"{kind}-files")
        metrics = gr.JSON(label="Key metrics", elem_id=f"{kind}-metrics")

    def clear():
        return None, gr.update(value=None, label=splat_label), None, None, None

    return [mesh, splat, video, files, metrics], _result_values, clear


def _runs_tab(gr, web: WebApp) -> None:
    """Past run folders with their state, files and config; a stopped run can be resumed."""
    gr.Markdown(f"Run folders in `{web.runs_dir}`, newest first (also runs made by the command line). A run "
                "that was running when the server ended shows as *stopped*; Resume continues it from its "
                "checkpoints.")
    with gr.Row():
        refresh = gr.Button("Refresh", elem_id="runs-refresh")
    table = gr.Dataframe(headers=RUN_COLUMNS, interactive=False, wrap=True, elem_id="runs-table")
    with gr.Row():
        chosen = gr.Dropdown([], label="Run", allow_custom_value=False, elem_id="runs-chosen", scale=3)
        resume = gr.Button("Resume", elem_id="runs-resume", scale=1)
    progress = gr.HTML("", elem_id="runs-progress")
    with gr.Row():
        details = gr.JSON(label="State and metrics", elem_id="runs-details")
        config = gr.Code(label="config.yaml", language="yaml", interactive=False, max_lines=24,
                         elem_id="runs-config")
    files = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="runs-files")

    def rows():
        listed = list_runs(web.runs_dir)
        return ([[row[c] for c in RUN_COLUMNS] for row in listed],
                gr.update(choices=[row["run"] for row in listed]))

    def show(name):
        folder = web.runs_dir / Path(name or "").name
        if not name or not folder.is_dir():
            return None, "", None
        state = run_state(folder)
        record = read_record(folder) or {}
        info = {"state": state, "resumable": resumable(folder, state),
                **{k: record[k] for k in ("kind", "preset", "prompt", "image", "message") if record.get(k)},
                "metrics": key_metrics(folder, record)}
        config_text = (folder / "config.yaml").read_text() if (folder / "config.yaml").is_file() else ""
        shown = [p for p in sorted(folder.glob("model.*")) if p.is_file()]
        shown += [p for p in (folder / "config.yaml", folder / "turntable" / "turntable.mp4", folder / "novel_view.mp4",
                              folder / "frames.zip", folder / "cameras.json") if p.is_file()]
        shown += sorted(p for p in (folder / "checkpoints").glob("*.pt")) if state != "done" else []
        return json.loads(json.dumps(info, default=str)), config_text, [str(p) for p in shown] or None

    def start_resume(name, request: gr.Request):
        job = web.submit("resume", _session(request), resume=name or "")
        yield from (html_ for html_, _, _ in web.follow(job))

    refresh.click(rows, None, [table, chosen], queue=False)
    chosen.change(show, chosen, [details, config, files], queue=False)
    (resume.click(start_resume, chosen, progress, concurrency_limit=None, show_progress="hidden")
     .then(rows, None, [table, chosen], queue=False)
     .then(show, chosen, [details, config, files], queue=False))
    return rows, table, chosen


def build_app(runs_dir: str | Path = "runs", job_overrides=(), check_uploads: bool = True):
    """The page as a gr.Blocks, not launched; every run writes a new folder under `runs_dir`.
    `job_overrides` (a list, or a dict {kind: list}) are applied to every job before the
    page's own (e.g. a small test setup)."""
    web = WebApp(runs_dir, job_overrides, check_uploads)
    with gr.Blocks(title="scorelift") as app:
        gr.Markdown("## scorelift\nScore distillation of a 2D diffusion prior into a 3D asset. The built-in "
                    "presets run on a CPU with no download; `prior.model=<hub id or folder>` in Overrides "
                    "switches to a real checkpoint. Jobs run one at a time, in the order they were asked for.")
        for spec in PIPELINE_TABS:
            with gr.Tab(spec.title, id=spec.kind):
                _job_tab(gr, spec, web)
        with gr.Tab("Runs", id="runs"):
            rows, table, chosen = _runs_tab(gr, web)
        app.load(rows, None, [table, chosen], queue=False)
    app.scorelift = web  # the server state, for tests and launch()
    return app


def launch(host: str = "127.0.0.1", port: int = 7860, share: bool = False, runs_dir: str | Path = "runs",
           job_overrides=(), prevent_thread_lock: bool = False):
    """Serve the app (until interrupted unless `prevent_thread_lock`). Files are served only
    from the runs folder and Gradio's upload cache; uploads larger than MAX_UPLOAD are refused."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(runs_dir, job_overrides)
    app.queue(default_concurrency_limit=None).launch(
        server_name=host, server_port=port, share=share, allowed_paths=[str(runs_dir.resolve())],
        max_file_size=MAX_UPLOAD, prevent_thread_lock=prevent_thread_lock, footer_links=[],
        show_error=True)
    return app
