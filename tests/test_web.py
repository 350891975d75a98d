"""The web app without a browser or a server: the page builds, and WebJob runs, cancels and
reports errors the way the page shows them."""


import pytest

from app.web import build_app, follow_job, presets_for
from app.web_job import JobRequest, WebJob, parse_overrides

SMALL = "turntable_frames=1\nturntable_size=16\nexport=[ply,glb]\npreview_every=1\nexport_options.resolution=24\n" \
        "export_options.texture_size=32"


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from core.data.procedural import CAPTION_WORDS, VIEW_WORDS
    from core.priors.tiny import build_tiny_stable_diffusion

    path = tmp_path_factory.mktemp("prior") / "tiny-sd"
    build_tiny_stable_diffusion(path, sample_size=32, words=CAPTION_WORDS + VIEW_WORDS, class_embed_dim=16)
    return str(path)


def text_request(tiny_prior, prompt="a red cube", steps=2, extra=""):
    return JobRequest("text", "text_to_3d/gaussian_sds", prompt=prompt, seed=1, steps=steps,
                      overrides=f"prior.model={tiny_prior}\n{SMALL}\n{extra}")


def test_build_app_constructs_without_launching(tmp_path):
    import gradio as gr

    app = build_app(tmp_path)
    assert isinstance(app, gr.Blocks)
    kinds = {type(block).__name__ for block in app.blocks.values()}
    assert {"Model3D", "Video", "File", "Image", "Dropdown"} <= kinds
    assert "text_to_3d/gaussian_sds" in presets_for("text") and "gpu/text_to_3d/polish" in presets_for("text")
    assert presets_for("image")[0] == "image_to_3d/gaussian_zero123"
    assert not list(tmp_path.iterdir())  # building the page writes nothing


def test_text_job_runs_to_outputs(tmp_path, tiny_prior):
    rows = list(follow_job(text_request(tiny_prior), tmp_path))
    job, status, preview, model, video, files, folder = rows[-1]
    assert job.snapshot().state == "done" and status.startswith("done"), status
    assert rows[0][0] is job and any("stage 'coarse' · step 2/2 · loss" in row[1] for row in rows[:-1])
    assert model.endswith("model.glb") and video.endswith("turntable.mp4")
    assert sorted(f.rsplit("/", 1)[-1] for f in files) == ["model.glb", "model.ply"]
    # Each output opens as what it claims to be: the page's viewers get real files.
    import imageio.v3 as iio
    import trimesh

    from renderers.gaussian.ply import load_gaussians

    assert iio.imread(preview).ndim == 3
    assert len(trimesh.load(model, force="mesh").faces) > 0
    assert [frame.shape for frame in iio.imiter(video)] == [(16, 16, 3)]  # turntable_frames=1, 16 px
    ply = next(f for f in files if f.endswith(".ply"))
    assert len(load_gaussians(ply)) > 0
    assert folder.startswith(str(tmp_path)) and "generate-a-red-cube" in folder


def test_cancel_stops_with_no_outputs(tmp_path, tiny_prior):
    job = WebJob(text_request(tiny_prior, steps=400), tmp_path).start()
    last = None
    for last in job.updates(every=0.05, min_gap=0):
        if "step " in last.status and not job.should_stop():
            job.cancel()
    job.join(30)
    assert last.state == "cancelled" and last.status.startswith("cancelled"), last.status
    assert last.outputs == {}
    assert not (last.run_folder / "model.ply").exists() and (last.run_folder / "checkpoints").is_dir()


@pytest.mark.parametrize("request_kwargs, message", [
    ({"overrides": "no_such_key=1"}, "no_such_key"),
    ({"overrides": "just words"}, "not key=value"),
    ({"prompt": "   "}, "the prompt is empty"),
    ({"preset": "text_to_3d/nope"}, "no preset"),
])
def test_bad_input_is_a_message_and_no_run(tmp_path, request_kwargs, message):
    request = JobRequest(**{"kind": "text", "preset": "text_to_3d/gaussian_sds", "prompt": "a red cube",
                            **request_kwargs})
    rows = list(follow_job(request, tmp_path))
    assert len(rows) == 1
    job, status, *outputs, folder = rows[0]
    assert job.snapshot().state == "error" and message in status and "Traceback" not in status
    assert outputs == [None, None, None, None] and folder == ""
    assert not list(tmp_path.iterdir())


def test_missing_image_and_unloadable_prior_are_messages(tmp_path):
    update = WebJob(JobRequest("image", "image_to_3d/gaussian_zero123"), tmp_path).start().snapshot()
    assert update.state == "error" and "no image" in update.status
    job = WebJob(JobRequest("text", "text_to_3d/gaussian_sds", prompt="a red cube",
                            overrides=f"prior.model={tmp_path / 'missing-prior'}"), tmp_path).start()
    final = list(job.updates())[-1]
    assert final.state == "error" and final.status.startswith("error:") and final.outputs == {}


def test_unreadable_image_is_a_message_and_the_run_keeps_its_copy(tmp_path):
    upload = tmp_path / "upload" / "photo.png"
    upload.parent.mkdir()
    upload.write_text("not a picture")
    job = WebJob(JobRequest("image", "image_to_3d/gaussian_zero123", image=str(upload)), tmp_path / "runs").start()
    final = list(job.updates())[-1]
    assert final.state == "error" and final.status.startswith("error:") and final.outputs == {}
    assert (final.run_folder / "input.png").read_text() == "not a picture"


def test_parse_overrides_skips_blanks_and_comments():
    assert parse_overrides("steps=3\n\n# a note\n prompt=a red cube \n") == ["steps=3", "prompt=a red cube"]


def test_web_command_launches_with_options(monkeypatch, tmp_path):
    import app.web
    from app.cli import main

    calls = []
    monkeypatch.setattr(app.web, "launch", lambda *args: calls.append(args))
    assert main(["web", "--port", "7870", "--host", "0.0.0.0", "--runs", str(tmp_path)]) == 0
    assert calls == [("0.0.0.0", 7870, False, tmp_path)]
