"""The Gradio web app (`scorelift web`): text-to-3D and image-to-3D tabs over the same jobs as
`scorelift generate`. Each Generate starts a WebJob (app/web_job.py) in its own run folder
under `runs_dir`; the page shows its status, latest preview and, when it is done, the mesh,
the turntable and the files. `build_app()` only builds the page; `launch()` serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from app.web_job import JobRequest, WebJob, WebUpdate

# One job at a time on the machine, whichever tab started it: runs share the global RNG
# (seed_everything) and the CPU/GPU; later clicks wait in Gradio's queue, which shows their place.
JOB_CONCURRENCY = "scorelift-job"

DEFAULT_PRESETS = {"text": "text_to_3d/gaussian_sds", "image": "image_to_3d/gaussian_zero123"}


def presets_for(kind: str) -> list[str]:
    """Shipped presets of a job kind ('text' or 'image'), CPU presets first, then gpu/ ones."""
    from core.config import list_presets

    folder = {"text": "text_to_3d/", "image": "image_to_3d/"}[kind]
    names = list_presets()
    return [n for n in names if n.startswith(folder)] + [n for n in names if n.startswith("gpu/" + folder)]


def ui_values(update: WebUpdate) -> tuple:
    """A WebUpdate -> (status, preview, model3d, video, files, run folder) for the page."""
    outputs = update.outputs
    files = [str(p) for key, p in outputs.items() if key.startswith("model_")]
    return (update.status,
            str(update.preview) if update.preview else None,
            str(outputs["model_glb"]) if "model_glb" in outputs else None,
            str(outputs["turntable"]) if "turntable" in outputs else None,
            files or None,
            str(update.run_folder) if update.run_folder else "")


def follow_job(request: JobRequest, runs_dir: Path) -> Iterator[tuple]:
    """Start a job and yield (job, *ui_values) until it ends. If Gradio stops reading (the page
    was closed), the job is cancelled rather than left running for nobody."""
    job = WebJob(request, runs_dir).start()
    try:
        for update in job.updates():
            yield (job, *ui_values(update))
    finally:
        if job.running:
            job.cancel()


def cancel_job(job: WebJob | None) -> None:
    if job is not None:
        job.cancel()


def _job_tab(gr, kind: str, runs_dir: Path) -> None:
    """The controls, outputs and events of one tab; `kind` is 'text' or 'image'."""
    job_state = gr.State(None)
    with gr.Row():
        with gr.Column():
            if kind == "text":
                subject = gr.Textbox(label="Prompt", placeholder="a red cube", lines=1)
            else:
                subject = gr.Image(label="Image (one object, RGBA or on a plain background)", type="filepath",
                                   image_mode="RGBA")
            preset = gr.Dropdown(presets_for(kind), value=DEFAULT_PRESETS[kind], label="Preset")
            with gr.Row():
                seed = gr.Number(None, label="Seed (empty: the preset's)", precision=0, minimum=0)
                steps = gr.Number(None, label="Steps per stage (empty: the preset's)", precision=0, minimum=1)
            overrides = gr.Textbox(label="Overrides (key=value, one per line, as on the command line)", lines=3,
                                   placeholder="turntable_frames=24\nexport=[ply,glb]")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary")
                cancel = gr.Button("Cancel", variant="stop")
        with gr.Column():
            status = gr.Textbox(label="Status", interactive=False)
            preview = gr.Image(label="Latest preview", type="filepath", interactive=False)
    with gr.Row():
        model = gr.Model3D(label="Mesh (model.glb)")
        video = gr.Video(label="Turntable", interactive=False)
    with gr.Row():
        files = gr.File(label="Downloads", file_count="multiple", interactive=False)
        folder = gr.Textbox(label="Run folder", interactive=False)

    def start(subject_value, preset_value, seed_value, steps_value, overrides_value):
        request = JobRequest(kind, preset_value, seed=seed_value, steps=steps_value, overrides=overrides_value,
                             **({"prompt": subject_value or ""} if kind == "text" else {"image": subject_value}))
        yield from follow_job(request, runs_dir)

    generate.click(start, inputs=[subject, preset, seed, steps, overrides],
                   outputs=[job_state, status, preview, model, video, files, folder],
                   concurrency_id=JOB_CONCURRENCY, concurrency_limit=1, api_name=f"{kind}_to_3d")
    cancel.click(cancel_job, inputs=[job_state], outputs=None, queue=False, api_name=f"cancel_{kind}_to_3d")


def build_app(runs_dir: str | Path = "runs"):
    """The page as a gr.Blocks, not launched; every run writes a new folder under `runs_dir`."""
    import gradio as gr

    runs_dir = Path(runs_dir)
    with gr.Blocks(title="scorelift") as app:
        gr.Markdown("## scorelift\nScore distillation of a 2D diffusion prior into a 3D asset. The built-in "
                    "presets run on a CPU with no download; `prior.model=<hub id or folder>` in Overrides "
                    "switches to a real checkpoint.")
        with gr.Tab("Text to 3D"):
            _job_tab(gr, "text", runs_dir)
        with gr.Tab("Image to 3D"):
            _job_tab(gr, "image", runs_dir)
    return app


def launch(host: str = "127.0.0.1", port: int = 7860, share: bool = False, runs_dir: str | Path = "runs") -> None:
    """Serve the app until interrupted; the run folders are the only files it serves besides uploads."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    build_app(runs_dir).queue().launch(server_name=host, server_port=port, share=share,
                                       allowed_paths=[str(runs_dir.resolve())])
