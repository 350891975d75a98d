"""The web page's Video to 4D tab without a browser (app/web_video.py): every bad upload or knob
is one `error:` line with no run folder and no temporary folder left; a tiny clip (4 frames,
64 px, a tiny Zero123) runs through the page's job queue to every output the tab shows, and
the run is listed and resumed as the Runs tab does. tests/test_web_browser.py drives the tab
in Chromium."""

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.web_job import JobRequest, WebJob
from app.web_queue import JobQueue
from app.web_runs import list_runs, read_record, resumable, run_state, write_record
from core.data.video_synth import SyntheticVideoConfig, render_video, write_video

PRESET = "video4d/dreamscene4d"
TINY_STEPS = ["crop_size=32", "background.steps=2", "lift.steps=2", "motion.steps=2", "motion.sds_every=2",
              "placement.steps=2", "checkpoint_every=1", "preview_every=1"]


def zip_folder(folder: Path, path: Path, top: str = "", only=None) -> str:
    """`folder`'s files (those for which `only(name)` holds) zipped under `top/` (or at the top)."""
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.iterdir()):
            if only is None or only(f.name):
                zf.write(f, f"{top}/{f.name}" if top else f.name)
    return str(path)


def zip_members(path: Path, members: dict) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return str(path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 4-frame 64 px synthetic clip: frames/ and masks/ zipped (the frames in a top folder,
    the masks at the zip's top), and the same frames as an .mp4."""
    import imageio.v3 as iio

    from core.export.video import write_video as write_mp4

    out = tmp_path_factory.mktemp("clip")
    write_video(render_video(SyntheticVideoConfig(frames=4, width=64, height=64, pan_deg=4.0, dolly=0.0,
                                                  query_stride=12)), out)
    frames = sorted((out / "frames").glob("*.png"))
    return {"dir": out, "frames_zip": zip_folder(out / "frames", out / "walk.zip", top="walk"),
            "masks_zip": zip_folder(out / "masks", out / "masks.zip"),
            "mp4": str(write_mp4(out / "walk.mp4", [iio.imread(p) for p in frames], fps=4))}


@pytest.fixture(scope="module")
def tiny_zero123(tmp_path_factory):
    from core.priors.tiny import build_tiny_zero123

    return str(build_tiny_zero123(tmp_path_factory.mktemp("z") / "zero123"))


def temp_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("scorelift-video-*"))


def video_job(runs, fields, overrides=()) -> WebJob:
    return WebJob(JobRequest("video", PRESET, **fields), runs, list(overrides))


def test_bad_uploads_and_knobs_are_one_line_and_no_run(clip, tmp_path, monkeypatch):
    import app.web_video as web_video

    before = temp_folders()
    d = tmp_path
    good = {"frames_zip": clip["frames_zip"], "masks_zip": clip["masks_zip"]}
    masks = clip["dir"] / "masks"
    small = d / "small"
    small.mkdir()
    for f in sorted(masks.glob("*.png")):
        Image.fromarray(np.zeros((20, 20), np.uint8) if f.name.startswith("00002") else np.asarray(Image.open(f))
                        ).save(small / f.name)
    empty = d / "empty"
    empty.mkdir()
    for f in sorted(masks.glob("*.png")):
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(empty / f.name)
    link = zipfile.ZipInfo("m/00000.png")
    link.external_attr = 0o120777 << 16  # a symbolic link
    with zipfile.ZipFile(d / "link.zip", "w") as zf:
        zf.writestr(link, "/etc/passwd")
    (d / "notes.txt").write_text("not a video")
    (d / "fake.mp4").write_text("not a video either")
    cases = [
        ({"masks_zip": clip["masks_zip"]}, "neither"),
        ({**good, "video": clip["mp4"]}, "both"),
        ({"frames_zip": clip["frames_zip"]}, "no masks"),
        ({**good, "frames_zip": str(d / "notes.txt")}, "'notes.txt' is not a zip file"),
        ({**good, "masks_zip": zip_members(d / "up.zip", {"../evil.png": "x"})}, "outside the zip"),
        ({**good, "masks_zip": zip_members(d / "abs.zip", {"/etc/evil.png": "x"})}, "outside the zip"),
        ({**good, "masks_zip": str(d / "link.zip")}, "symbolic link"),
        ({**good, "masks_zip": zip_members(d / "txt.zip", {"readme.txt": "x"})}, "holds no PNG images"),
        ({**good, "masks_zip": zip_folder(masks, d / "three.zip", only=lambda n: not n.startswith("00003"))},
         "00003"),
        ({**good, "masks_zip": zip_folder(small, d / "small.zip")}, "00002.png is 20x20"),
        ({**good, "masks_zip": zip_folder(empty, d / "empty.zip")}, "no object in any mask of 'empty.zip'"),
        ({**good, "frames_zip": zip_members(d / "junk.zip", {f"{i:05d}.png": "x" for i in range(4)})},
         "not a readable image"),
        ({"video": str(d / "notes.txt"), "masks_zip": clip["masks_zip"]}, "'notes.txt' is not a video"),
        ({"video": str(d / "fake.mp4"), "masks_zip": clip["masks_zip"]}, "'fake.mp4' is not a readable video"),
        ({**good, "fov": "0"}, "between 1 and 179"),
        ({**good, "fov": "wide"}, "field of view must be a number"),
        ({**good, "max_resolution": "1000"}, "at most 256"),
        ({**good, "max_resolution": "8"}, "at least 32"),
        ({**good, "stride": "x"}, "whole number"),
        ({**good, "overrides": "no_such_key=1"}, "no_such_key"),
        ({**good, "steps": "0"}, "at least 1"),
        ({**good, "preset": "relight/progressive"}, "no preset"),
    ]
    runs = d / "runs"
    for fields, message in cases:
        request = JobRequest(**{"kind": "video", "preset": PRESET, **fields})
        update = WebJob(request, runs).snapshot()
        assert update.state == "error" and update.status.startswith("error: ") and message in update.status, \
            (message, update.status)
        assert "\n" not in update.status and "scorelift-video-" not in update.status, update.status
    monkeypatch.setattr(web_video, "MAX_FRAMES", 3)
    update = video_job(runs, good).snapshot()
    assert update.state == "error" and "has 4 frames at stride 1; at most 3" in update.status, update.status
    kept_two = video_job(runs, {**good, "stride": "2"})  # 2 frames kept: a good job, waiting
    assert kept_two.state == "queued", kept_two.snapshot().status
    kept_two.cancel()
    monkeypatch.setattr(web_video, "MAX_FRAMES", 96)
    monkeypatch.setattr(web_video, "MAX_CLIP_PIXELS", 64 * 64 * 3)
    update = video_job(runs, {"video": clip["mp4"], "masks_zip": clip["masks_zip"]}).snapshot()
    assert update.state == "error" and "'walk.mp4' is 4 frames of 64x64 px" in update.status, update.status
    monkeypatch.setattr(web_video, "MAX_ZIP_BYTES", 100)
    update = video_job(runs, good).snapshot()
    assert update.state == "error" and "at most 0 MiB" in update.status, update.status
    assert not runs.exists() and temp_folders() == before


def test_uploads_outside_the_upload_folder_are_refused(clip, tmp_path):
    job = WebJob(JobRequest("video", PRESET, frames_zip=clip["frames_zip"], masks_zip=clip["masks_zip"]),
                 tmp_path / "runs", upload_root=tmp_path / "uploads")
    assert job.state == "error" and "uploaded through the page" in job.snapshot().status
    assert not (tmp_path / "runs").exists()


def test_a_queued_video_job_reads_the_mp4_and_its_cancel_removes_the_inputs(clip, tmp_path):
    before = temp_folders()
    job = video_job(tmp_path / "runs", {"video": clip["mp4"], "masks_zip": clip["masks_zip"], "fov": "50",
                                        "max_resolution": "48", "stride": "2"})
    assert job.state == "queued", job.snapshot().status
    assert (job.cfg.fov, job.cfg.max_resolution, job.cfg.stride) == (50.0, 48, 2)
    assert [name for name, _ in job._video.stages][:2] == ["background", "lift_1"]
    assert len(temp_folders() - before) == 1
    job.cancel()
    assert job.state == "cancelled" and temp_folders() == before and not (tmp_path / "runs").exists()


def test_a_tiny_clip_runs_to_every_output_and_resumes(clip, tiny_zero123, tmp_path):
    from app.web_video import SHOWN_FRAMES, result_values

    before = temp_folders()
    runs = tmp_path / "runs"
    queue = JobQueue(runs)
    job = queue.submit(video_job(runs, {"frames_zip": clip["frames_zip"], "masks_zip": clip["masks_zip"],
                                        "max_resolution": "64", "seed": "3"},
                                 [f"lift.prior_model={tiny_zero123}", *TINY_STEPS]))
    updates = list(job.updates(every=0.05, min_gap=0))
    final = updates[-1]
    assert final.state == "done", final.status
    statuses = [u.status for u in updates[:-1] if u.state == "running"]
    assert any("stage 'lift_1'" in s for s in statuses) and any("stage 'motion_1'" in s for s in statuses)
    assert any(0 < u.progress < 1 for u in updates[:-1]) and final.progress == 1.0
    folder = final.run_folder
    assert folder.parent == runs and folder.name.startswith("animate-walk-") and temp_folders() == before
    # The inputs live in the run (config.yaml points there), the outputs are the CLI's.
    import yaml

    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["video"] == str(folder / "input" / "frames") and config["masks"] == str(folder / "input" / "masks")
    assert config["seed"] == 3 and config["max_resolution"] == 64 and config["motion"]["steps"] == 2
    assert sorted(p.name for p in (folder / "input" / "frames").iterdir()) == \
        sorted(p.name for p in (clip["dir"] / "frames").iterdir())
    assert set(final.outputs) == {"novel_view", "frames_zip", "cameras", "background", "config"}
    with zipfile.ZipFile(final.outputs["frames_zip"]) as zf:
        assert zf.namelist() == [f"frames/{t:04d}.ply" for t in range(4)]
        for t in range(4):
            assert zf.read(f"frames/{t:04d}.ply") == (folder / "frames" / f"{t:04d}.ply").read_bytes()
    # What the tab shows.
    video, gallery, downloads, metrics = result_values(job)
    assert video == str(folder / "novel_view.mp4")
    assert [caption for _, caption in gallery] == [f"frame {i}" for i in (0, 1, 2, 3)][:SHOWN_FRAMES]
    assert all(Image.open(path).size == (64, 64) for path, _ in gallery)
    assert {Path(p).name for p in downloads} == {"novel_view.mp4", "frames.zip", "cameras.json", "background.ply",
                                                 "config.yaml"}
    assert metrics["frames"] == 4 and metrics["objects"] and "novel_view.mp4" in metrics["files"]
    assert {"background", "placement"} <= set(metrics["stages"])
    record = read_record(folder)
    assert record["kind"] == "video" and record["image"] == "walk.zip" and record["state"] == "done"
    row = list_runs(runs)[0]
    assert (row["run"], row["state"], row["kind"], row["files"]) == (folder.name, "done", "video", "novel_view.mp4")
    # Left running by a server that died: stopped, resumable, and resumed from its checkpoints.
    write_record(folder, {**record, "state": "running", "server": "a-server-that-died"})
    def step_records():
        return [line for line in (folder / "metrics.jsonl").read_text().splitlines() if '"step"' in line]

    steps_before = step_records()
    (folder / "novel_view.mp4").unlink()
    assert run_state(folder) == "stopped" and resumable(folder)
    resumed = queue.submit(WebJob(JobRequest("resume", resume=folder.name), runs))
    assert resumed.join(300) and resumed.state == "done", resumed.snapshot().status
    assert (folder / "novel_view.mp4").is_file() and read_record(folder)["kind"] == "video"
    assert step_records() == steps_before  # no stage ran again (the final checks log again)


def test_a_running_video_job_cancelled_in_a_lift_resumes_to_the_end(clip, tiny_zero123, tmp_path):
    runs = tmp_path / "runs"
    queue = JobQueue(runs)
    job = queue.submit(video_job(runs, {"frames_zip": clip["frames_zip"], "masks_zip": clip["masks_zip"],
                                        "max_resolution": "64"},
                                 [f"lift.prior_model={tiny_zero123}", *TINY_STEPS, "lift.steps=20"]))
    for update in job.updates(every=0.05, min_gap=0):
        if "stage 'lift_1'" in update.status and not job.should_stop():
            queue.cancel(job)
    assert job.join(120) and job.state == "cancelled", job.snapshot().status
    folder = job.run_folder
    assert "Resume" in job.snapshot().status and not (folder / "novel_view.mp4").exists()
    assert run_state(folder) == "cancelled" and resumable(folder)
    assert (folder / "objects" / "1" / "lift" / "checkpoints").is_dir()  # the lift stopped mid-way, checkpointed
    resumed = queue.submit(WebJob(JobRequest("resume", resume=folder.name), runs))
    assert resumed.state == "queued" and [n for n, _ in resumed._video.stages][1] == "lift_1"
    assert resumed.join(300) and resumed.state == "done", resumed.snapshot().status
    assert (folder / "novel_view.mp4").is_file() and (folder / "frames.zip").is_file()
    assert read_record(folder)["state"] == "done" and list_runs(runs)[0]["state"] == "done"
