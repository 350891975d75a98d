"""`scorelift animate` and `scorelift track`: input mistakes exit 2 leaving no run folder; a tiny
end-to-end run (a few steps per stage, a tiny Zero123) writes every output of the issue's
layout, resumes, and its tracks have the TAP-Vid shapes."""

import json

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from core.data.video_synth import SyntheticVideoConfig, render_video, write_video

TINY = ["max_resolution=64", "crop_size=32", "background.steps=3", "lift.steps=2", "motion.steps=3",
        "motion.sds_every=2", "placement.steps=2", "checkpoint_every=1", "preview_every=2"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    write_video(render_video(SyntheticVideoConfig(frames=4, width=64, height=64, pan_deg=4.0, dolly=0.0,
                                                  query_stride=12)), out)
    return out


@pytest.fixture(scope="module")
def tiny_zero123(tmp_path_factory):
    from core.priors.tiny import build_tiny_zero123

    return str(build_tiny_zero123(tmp_path_factory.mktemp("z") / "zero123"))


def animate(clip, out, *extra):
    return main(["animate", str(clip / "frames"), "--masks", str(clip / "masks"), "--out", str(out), *extra])


def test_missing_masks_folder_exits_2_without_a_run(clip, tmp_path, capsys):
    assert main(["animate", str(clip / "frames"), "--masks", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_mask_of_another_size_exits_2_without_a_run(clip, tmp_path, capsys):
    import shutil

    masks = tmp_path / "masks"
    shutil.copytree(clip / "masks", masks)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(masks / "00002.png")
    assert main(["animate", str(clip / "frames"), "--masks", str(masks), "--out", str(tmp_path / "r")]) == 2
    assert "00002" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_masks_without_objects_exit_2(clip, tmp_path, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    for f in sorted((clip / "masks").glob("*.png")):
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / f.name)
    assert main(["animate", str(clip / "frames"), "--masks", str(masks), "--out", str(tmp_path / "r")]) == 2
    assert "object" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bad_fov_exits_2(clip, tmp_path):
    assert animate(clip, tmp_path / "r", "--fov", "0") == 2
    assert not (tmp_path / "r").exists()


def test_track_of_a_folder_that_is_no_run_exits_2(tmp_path, capsys):
    np.savez(tmp_path / "q.npz", query_points=np.zeros((1, 3)))
    assert main(["track", str(tmp_path), "--queries", str(tmp_path / "q.npz"), "--out", str(tmp_path / "p.npz")]) == 2
    assert "not a finished animate run" in capsys.readouterr().err


@pytest.fixture(scope="module")
def run(clip, tiny_zero123, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert animate(clip, out, f"lift.prior_model={tiny_zero123}", *TINY) == 0
    return out


def test_animate_writes_every_output(run, clip):
    T = 4
    for t in range(T):
        assert (run / "frames" / f"{t:04d}.ply").is_file()
        image = np.asarray(Image.open(run / "reconstruction" / f"frame_{t:04d}.png"))
        assert image.shape[:2] == (64, 64)
    ids = sorted(int(v) for v in np.unique(np.stack([np.asarray(Image.open(f)) for f in
                                                      sorted((clip / "masks").glob("*.png"))])) if v)
    for oid in ids:
        assert (run / "objects" / str(oid) / "canonical.ply").is_file()
        assert (run / "objects" / str(oid) / "deformation.pt").is_file()
    assert (run / "background.ply").is_file()
    cams = json.loads((run / "cameras.json").read_text())
    assert len(cams["frames"]) == T and {"fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(cams)
    assert np.allclose(np.array(cams["frames"][0]["transform_matrix"]), np.eye(4), atol=1e-5)
    assert (run / "novel_view.mp4").stat().st_size > 0
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    stages = {json.loads(line).get("stage") for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert {"background", "placement", *[f"motion_{i}" for i in ids]} <= stages
    from renderers.gaussian.ply import load_ply

    frame = load_ply(run / "frames" / "0000.ply")
    assert len(frame) == len(load_ply(run / "background.ply")) + sum(
        len(load_ply(run / "objects" / str(i) / "canonical.ply")) for i in ids if (
            np.asarray(Image.open(sorted((clip / "masks").glob("*.png"))[0])) == i).any())


def test_resume_of_a_finished_run_redoes_nothing(run, clip, tiny_zero123):
    def steps():
        return [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"step"' in line]

    before = steps()
    assert animate(clip, run, "--resume", f"lift.prior_model={tiny_zero123}", *TINY) == 0
    assert steps() == before


def test_track_writes_tapvid_arrays(run, clip, tmp_path):
    gt = np.load(clip / "gt.npz")
    np.savez(tmp_path / "q.npz", query_points=gt["query_points"])
    assert main(["track", str(run), "--queries", str(tmp_path / "q.npz"), "--out", str(tmp_path / "p.npz")]) == 0
    with np.load(tmp_path / "p.npz") as P:
        N = len(gt["query_points"])
        assert P["tracks"].shape == (N, 4, 2) and P["tracks"].dtype == np.float32
        assert P["occluded"].shape == (N, 4) and P["occluded"].dtype == bool
        # at its own frame each visible query is where it was asked
        t0 = ~P["occluded"][:, 0]
        assert np.abs(P["tracks"][t0, 0] - gt["query_points"][t0, 1:]).max() < 0.5


def test_track_rejects_queries_outside_the_video(run, tmp_path, capsys):
    np.savez(tmp_path / "q.npz", query_points=np.array([[0.0, 100.0, 3.0]]))
    assert main(["track", str(run), "--queries", str(tmp_path / "q.npz"), "--out", str(tmp_path / "p.npz")]) == 2
    assert "inside the 64x64" in capsys.readouterr().err
    assert not (tmp_path / "p.npz").exists()
