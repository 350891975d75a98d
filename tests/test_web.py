"""The web app without a browser: the page builds, jobs queue, run, cancel (running and
queued) and report bad input as one `error:` line with no run folder; the Runs tab's records
survive a server restart; the splat viewer's copy is framed. tests/test_web_browser.py drives
the same page in Chromium."""

import json

import numpy as np
import pytest

from app.web import build_app, presets_for, progress_html
from app.web_job import JobRequest, WebJob
from app.web_queue import JobQueue
from app.web_inputs import parse_overrides, whole_number
from app.web_runs import RECORD, list_runs, read_record, resumable, run_state, write_record, write_view_splat
from tests.blender_zip import blender_zip

SMALL = ["turntable_frames=2", "turntable_size=16", "export=[ply,glb]", "preview_every=1",
         "export_options.resolution=24", "export_options.texture_size=32", "checkpoint_every=1"]


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from core.data.procedural import CAPTION_WORDS, VIEW_WORDS
    from core.priors.tiny import build_tiny_stable_diffusion

    path = tmp_path_factory.mktemp("prior") / "tiny-sd"
    build_tiny_stable_diffusion(path, sample_size=32, words=CAPTION_WORDS + VIEW_WORDS, class_embed_dim=16)
    return str(path)


def text_job(runs, tiny_prior, prompt="a red cube", steps=2, **kwargs):
    request = JobRequest("text", "text_to_3d/gaussian_sds", prompt=prompt, seed=1, steps=steps,
                         overrides=f"prior.model={tiny_prior}", **kwargs)
    return WebJob(request, runs, SMALL)


def test_build_app_constructs_without_launching(tmp_path):
    import gradio as gr

    app = build_app(tmp_path)
    assert isinstance(app, gr.Blocks)
    kinds = [type(block).__name__ for block in app.blocks.values()]
    assert kinds.count("Model3D") == 6 and {"Video", "File", "Image", "Dropdown", "Dataframe", "HTML"} <= set(kinds)
    numbers = [b for b in app.blocks.values() if type(b).__name__ == "Number"]
    assert not numbers  # seed/steps are text boxes: empty means the preset's, never a red "0"
    assert "text_to_3d/gaussian_sds" in presets_for("text") and "gpu/text_to_3d/polish" in presets_for("text")
    assert presets_for("image")[0] == "image_to_3d/gaussian_zero123"
    assert presets_for("relight") == ["relight/pbr_only", "relight/progressive"]
    assert presets_for("video") == ["video4d/dreamscene4d"]
    assert {"video-file", "video-frames-zip", "video-masks-zip", "video-novel-view", "video-reconstruction"} <= {
        b.elem_id for b in app.blocks.values()}
    assert not list(tmp_path.iterdir())  # building the page writes nothing


def test_text_job_runs_to_outputs_and_record(tmp_path, tiny_prior):
    queue = JobQueue(tmp_path)
    job = queue.submit(text_job(tmp_path, tiny_prior))
    updates = list(job.updates(every=0.05, min_gap=0))
    final = updates[-1]
    assert final.state == "done" and final.status.startswith("done"), final.status
    assert final.progress == 1.0 and any(0 < u.progress < 1 for u in updates[:-1])
    assert any("stage 'coarse' · step 1/2 · loss" in u.status for u in updates[:-1])
    assert any(u.status.startswith("exporting") and "ETA" in u.status for u in updates[:-1])
    assert {"model_ply", "model_glb", "turntable", "view_splat"} <= set(final.outputs)
    assert final.preview is not None and final.preview.parent.name == "view"
    from PIL import Image

    assert Image.open(final.preview).height >= 256  # enlarged, not a 32 px strip
    record = read_record(final.run_folder)
    assert record["state"] == "done" and record["prompt"] == "a red cube" and record["export_s"] > 0
    assert run_state(final.run_folder) == "done" and list_runs(tmp_path)[0]["state"] == "done"
    assert queue.export_estimate("text_to_3d/gaussian_sds") == pytest.approx(record["export_s"])
    import imageio_ffmpeg

    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(final.outputs["turntable"]))
    assert frames == 2 and seconds == pytest.approx(2 / 16, abs=0.01)  # (24 fps: 0.08 s); re-timed to the page's 16 fps
    # Each output opens as what it claims to be: the page's viewers get real files.
    import trimesh

    from renderers.gaussian.ply import load_gaussians

    assert len(trimesh.load(final.outputs["model_glb"], force="mesh").faces) > 0
    assert len(load_gaussians(final.outputs["model_ply"])) > 0


def test_cancel_running_keeps_checkpoint_and_queued_never_starts(tmp_path, tiny_prior):
    queue = JobQueue(tmp_path)
    first = queue.submit(text_job(tmp_path, tiny_prior, steps=400))
    second = queue.submit(text_job(tmp_path, tiny_prior, prompt="a blue sphere"))
    assert second.snapshot().state == "queued" and second.snapshot().position == 2
    assert "2nd in line (1 job ahead)" in second.snapshot().status
    queue.cancel(second)
    assert second.snapshot().state == "cancelled" and second.run_folder is None
    for update in first.updates(every=0.05, min_gap=0):
        if "step " in update.status and not first.should_stop():
            queue.cancel(first)
    assert first.join(60)
    last = first.snapshot()
    assert last.state == "cancelled" and last.status.startswith("cancelled"), last.status
    assert last.outputs == {} and not (last.run_folder / "model.ply").exists()
    assert resumable(last.run_folder)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [last.run_folder.name]  # none for the queued one


def png(path, array):
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, array)
    return str(path)


@pytest.mark.parametrize("fields, message", [
    ({"overrides": "no_such_key=1"}, "no_such_key"),
    ({"overrides": "just words"}, "not key=value"),
    ({"prompt": "   "}, "the prompt is empty"),
    ({"preset": "text_to_3d/nope"}, "no preset"),
    ({"preset": "/etc/passwd"}, "no preset"),
    ({"seed": "1.5"}, "whole number"),
    ({"steps": "0"}, "at least 1"),
    ({"prompt": "a red zeppelin"}, "'zeppelin'"),  # the built-in prior's closed vocabulary
    ({"overrides": "prior.model=/no/such/prior"}, "/no/such/prior"),
])
def test_bad_text_input_is_a_message_and_no_run(tmp_path, fields, message):
    request = JobRequest(**{"kind": "text", "preset": "text_to_3d/gaussian_sds", "prompt": "a red cube", **fields})
    job = JobQueue(tmp_path).submit(WebJob(request, tmp_path))
    update = job.snapshot()
    assert update.state == "error" and update.status.startswith("error: ") and message in update.status, update
    assert "Traceback" not in update.status and "\n" not in update.status
    assert not list(tmp_path.iterdir())


def test_bad_images_are_messages_and_no_run(tmp_path):
    uploads = tmp_path / "uploads"
    text = uploads / "notes.png"
    text.parent.mkdir()
    text.write_text("not a picture")
    huge = png(uploads / "huge.png", np.zeros((1, 5000, 3), np.uint8))
    blank = png(uploads / "blank.png", np.full((32, 32, 3), 255, np.uint8))
    outside = png(tmp_path / "elsewhere" / "x.png", np.zeros((8, 8, 3), np.uint8))
    runs = tmp_path / "runs"
    cases = [(None, "no image"), (str(text), "not an image"), (huge, "5000x1 px"),
             (blank, "could not separate"), (outside, "uploaded through the page")]
    for image, message in cases:
        job = WebJob(JobRequest("image", "image_to_3d/gaussian_zero123", image=image), runs, upload_root=uploads)
        update = job.snapshot()
        assert update.state == "error" and update.status.startswith("error: ") and message in update.status, \
            (message, update.status)
    assert not runs.exists()


def test_rgb_photo_saved_as_rgba_with_opaque_alpha_is_accepted(tmp_path):
    """An ordinary picture on white, as the browser hands it over (RGBA, alpha 255 everywhere)."""
    pixels = np.full((64, 64, 4), 255, np.uint8)
    pixels[20:44, 16:48, :3] = (200, 30, 30)
    upload = png(tmp_path / "photo.png", pixels)
    job = WebJob(JobRequest("image", "image_to_3d/gaussian_zero123", image=upload), tmp_path / "runs")
    assert job.state == "queued", job.snapshot().status
    assert job._image.pixels.shape == (64, 64, 3)  # the opaque alpha was dropped: the loader mattes


def test_numbers_and_overrides_parse():
    assert whole_number(None, "x", 1) is None and whole_number("", "x", 1) is None
    assert whole_number("7", "x", 1) == 7 and whole_number(3.0, "x", 0) == 3
    assert parse_overrides("steps=3\n\n# a note\n prompt=a red cube \n") == ["steps=3", "prompt=a red cube"]


def test_progress_html_escapes_and_marks_state():
    from app.web_job import WebUpdate

    text = progress_html(WebUpdate("error", "error: <b>bad</b>", 0.0))
    assert "data-state='error'" in text and "&lt;b&gt;bad&lt;/b&gt;" in text and "<b>bad</b>" not in text


def test_run_left_running_by_a_dead_server_shows_stopped_and_resumable(tmp_path):
    folder = tmp_path / "generate-a-red-cube-1"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "coarse.pt").write_bytes(b"x")
    (folder / "config.yaml").write_text("prompt: a red cube\n")
    write_record(folder, {"kind": "text", "state": "running", "server": "an-earlier-server"})
    assert run_state(folder) == "stopped" and resumable(folder)
    cli_run = tmp_path / "generate-cli"
    cli_run.mkdir()
    (cli_run / "model.ply").write_bytes(b"ply")
    states = {row["run"]: row["state"] for row in list_runs(tmp_path)}
    assert states == {"generate-a-red-cube-1": "stopped", "generate-cli": "done"}
    assert json.loads((folder / RECORD).read_text())["state"] == "running"  # reading changes nothing


def test_view_splat_is_centred_framed_and_turned_to_the_viewers_y_down(tmp_path):
    """Reference: scipy's rotation of the covariance; a Gaussian stretched along scorelift's
    up (+Z) must be stretched along the viewer's vertical (Y) axis."""
    import torch
    from scipy.spatial.transform import Rotation

    from renderers.gaussian.ply import GaussianData, load_splat, save_ply

    n = 3
    means = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.5], [1.0, 2.0, 2.5]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n)
    log_scales = torch.log(torch.tensor([[0.01, 0.01, 0.05]] * n))
    data = GaussianData(means, quats, log_scales, torch.full((n,), 5.0), torch.zeros(n, 1, 3), torch.zeros(n, 0, 3))
    save_ply(tmp_path / "model.ply", data)
    view = load_splat(write_view_splat(tmp_path, radius=0.5))
    assert view.means.mean(0).abs().max() < 1e-4  # centred on the origin
    assert view.means[:, 1].abs().max() > 0.3 and view.means[:, [0, 2]].abs().max() < 1e-4  # z became y
    assert (view.means.norm(dim=-1) + 2 * view.log_scales.exp().amax(-1)).max() <= 0.5 + 1e-3
    w, x, y, z = view.quats[0].tolist()
    rotation = Rotation.from_quat([x, y, z, w]).as_matrix()
    covariance = rotation @ np.diag(view.log_scales[0].exp().numpy() ** 2) @ rotation.T
    assert np.argmax(np.diag(covariance)) == 1


def test_web_command_launches_with_options(monkeypatch, tmp_path):
    import app.web
    from app.cli import main

    calls = []
    monkeypatch.setattr(app.web, "launch", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert main(["web", "--port", "7870", "--host", "0.0.0.0", "--runs", str(tmp_path), "steps=2"]) == 0
    assert calls == [(("0.0.0.0", 7870, False, tmp_path), {"job_overrides": ["steps=2"]})]
    assert main(["web", "--port", "0"]) == 2


# --- the Relight tab's job ------------------------------------------------------------------------

RELIGHT_TINY = ["stages.0.steps=3", "stages.1.steps=2", "stages.2.steps=2", "stages.3.steps=2", "turntable_frames=2",
                "turntable_size=16", "glb_resolution=16", "glb_texture_size=32", "preview_every=2",
                "checkpoint_every=2", "renderer.gaussian.num_points=200", "renderer.pbr.env_height=8"]


def relight_temp_folders():
    import tempfile
    from pathlib import Path

    return set(Path(tempfile.gettempdir()).glob("scorelift-relight-*"))


def test_relight_job_from_a_zip_with_an_environment_map(tmp_path):
    """A zipped Blender folder through the queue: every relight output, the PBR glb's textures,
    and the turntable shown is the one under the uploaded (orange) map, not the learned one."""
    import imageio.v3 as iio
    import trimesh

    from renderers.shading.envmap_files import read_envmap

    before = relight_temp_folders()
    data = blender_zip(tmp_path / "cube.zip")
    envmap = tmp_path / "orange.npy"
    np.save(envmap, np.ones((8, 16, 3), np.float32) * np.array([1.0, 0.5, 0.1], np.float32))
    runs = tmp_path / "runs"
    queue = JobQueue(runs)
    job = queue.submit(WebJob(JobRequest("relight", "relight/progressive", data_zip=data, envmap=str(envmap)),
                              runs, RELIGHT_TINY))
    updates = list(job.updates(every=0.05, min_gap=0))
    final = updates[-1]
    assert final.state == "done", final.status
    assert any("stage 'specular'" in u.status for u in updates[:-1])
    folder = final.run_folder
    assert folder.name.startswith("relight-cube-") and (folder / "data" / "transforms_train.json").is_file()
    assert relight_temp_folders() == before  # the extraction moved into the run folder
    assert {"model_pbr", "model_glb", "environment_hdr", "turntable", "turntable_learned", "view_splat"} <= set(
        final.outputs)
    assert (folder / "environment.hdr").read_bytes().startswith(b"#?RADIANCE")  # a genuine RGBE file
    assert read_envmap(folder / "environment.hdr").shape == (8, 16, 3)
    material = trimesh.load(final.outputs["model_glb"], force="mesh").visual.material
    assert material.baseColorTexture is not None and material.metallicRoughnessTexture is not None
    # Orange light: blue/red of each frame lower than under the learned (white-prior) environment.
    shown = iio.imread(folder / "turntable_envmap" / "frame_0000.png").astype(float)
    learned = iio.imread(folder / "turntable" / "frame_0000.png").astype(float)
    assert final.outputs["turntable"].parent.name == "turntable_envmap"
    covered = learned.min(-1) < 250  # the object's pixels (the background is white under any light)
    assert covered.sum() >= 5
    ratio = [frame[covered][:, 2].mean() / frame[covered][:, 0].mean() for frame in (shown, learned)]
    assert ratio[0] < ratio[1] - 0.02, ratio
    record = read_record(folder)
    assert record["kind"] == "relight" and record["image"] == "cube.zip"
    metrics = __import__("app.web_runs", fromlist=["key_metrics"]).key_metrics(folder)
    assert set(metrics["stages"]) == {"radiance", "specular", "diffuse", "joint"} and metrics["gaussians"] > 0
    assert "model_pbr.ply" in metrics["files"]
    # Left "running" by a server that died: resumable from its checkpoints, data and map inside the run.
    write_record(folder, {**record, "state": "running", "server": "a-server-that-died"})
    (folder / "turntable_envmap" / "turntable.mp4").unlink()
    assert run_state(folder) == "stopped" and resumable(folder)
    resumed = queue.submit(WebJob(JobRequest("resume", resume=folder.name), runs))
    assert resumed.join(120) and resumed.state == "done", resumed.snapshot().status
    assert resumed.snapshot().outputs["turntable"] == folder / "turntable_envmap" / "turntable.mp4"
    assert read_record(folder)["kind"] == "relight" and run_state(folder) == "done"


def _zip_with(path, members):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return str(path)


def symlink_zip(path):
    import zipfile

    link = zipfile.ZipInfo("scene/transforms_train.json")
    link.external_attr = 0o120777 << 16  # a symbolic link (to /etc/passwd)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(link, "/etc/passwd")
    return str(path)


def test_wrong_zips_and_maps_are_one_line_and_no_run(tmp_path, monkeypatch):
    import app.web_relight as web_relight

    before = relight_temp_folders()
    text = tmp_path / "notes.zip"
    text.write_text("not a zip")
    bad_map = tmp_path / "flat.npy"
    np.save(bad_map, np.zeros((4, 4), np.float32))
    good = blender_zip(tmp_path / "good.zip", top="")
    cases = [
        ({"data_zip": str(text)}, "not a zip file"),
        ({"data_zip": blender_zip(tmp_path / "nojson.zip", breakage="no transforms")}, "no transforms_train.json"),
        ({"data_zip": blender_zip(tmp_path / "hole.zip", breakage="missing image")}, "r_001"),
        ({"data_zip": _zip_with(tmp_path / "up.zip", {"../evil.txt": "x"})}, "outside the zip"),
        ({"data_zip": _zip_with(tmp_path / "abs.zip", {"/etc/evil.txt": "x"})}, "outside the zip"),
        ({"data_zip": symlink_zip(tmp_path / "link.zip")}, "symbolic link"),
        ({}, "neither"),
        ({"data_zip": good, "from_run": "some-run"}, "both"),
        ({"from_run": "missing-run"}, "no run 'missing-run'"),
        ({"data_zip": good, "envmap": str(bad_map)}, "flat.npy"),
        ({"data_zip": good, "envmap": str(tmp_path / "sky.png")}, "unknown environment map type"),
    ]
    runs = tmp_path / "runs"
    for fields, message in cases:
        update = WebJob(JobRequest("relight", "relight/progressive", **fields), runs, RELIGHT_TINY).snapshot()
        assert update.state == "error" and update.status.startswith("error: ") and message in update.status, \
            (message, update.status)
        assert "\n" not in update.status and "scorelift-relight-" not in update.status
    monkeypatch.setattr(web_relight, "MAX_ZIP_BYTES", 100)
    update = WebJob(JobRequest("relight", "relight/progressive", data_zip=good), runs, RELIGHT_TINY).snapshot()
    assert update.state == "error" and "at most 0 MiB" in update.status, update.status
    assert not runs.exists() and relight_temp_folders() == before


def test_relight_queued_cancel_removes_the_extraction(tmp_path):
    before = relight_temp_folders()
    flat = blender_zip(tmp_path / "c.zip", top="")  # the dataset at the zip's top, no folder
    job = WebJob(JobRequest("relight", "relight/progressive", data_zip=flat), tmp_path / "r", RELIGHT_TINY)
    assert job.state == "queued" and len(relight_temp_folders() - before) == 1
    job.cancel()
    assert job.state == "cancelled" and relight_temp_folders() == before and not (tmp_path / "r").exists()


def test_relight_a_finished_run_of_the_runs_folder(tmp_path, monkeypatch):
    """The `--from RUN` path: a run folder holding Gaussians is rendered into views/ and relit."""
    import app.web_relight as web_relight
    from app.web import finished_runs
    from renderers.gaussian import GaussianConfig, GaussianScene

    monkeypatch.setattr(web_relight, "FROM_RUN_VIEWS", 6)
    monkeypatch.setattr(web_relight, "FROM_RUN_SIZE", 16)
    runs = tmp_path / "runs"
    source = runs / "generate-a-ball"
    source.mkdir(parents=True)
    GaussianScene(GaussianConfig(num_points=300, init_radius=0.4, init_opacity=0.5)).export(source / "model.ply")
    assert finished_runs(runs) == ["generate-a-ball"]
    job = JobQueue(runs).submit(WebJob(JobRequest("relight", "relight/pbr_only", from_run="generate-a-ball"), runs,
                                       [*RELIGHT_TINY, "export_glb=false", "turntable_frames=0"]))
    assert job.join(120) and job.state == "done", job.snapshot().status
    folder = job.run_folder
    assert folder.name.startswith("relight-generate-a-ball-") and len(list((folder / "views" / "train").iterdir())) == 6
    assert (folder / "model_pbr.ply").is_file() and read_record(folder)["image"] == "generate-a-ball"
