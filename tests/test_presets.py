"""Every shipped preset runs two steps on CPU (with a tiny prior where it needs one)."""

import json

import pytest

from app.cli import main
from core.config import list_presets
from core.data.views import procedural_object, write_procedural_views

TWO_STEPS = ["steps=2", "width=16", "height=16", "turntable_frames=1", "turntable_size=16", "preview_every=1",
             "checkpoint_every=1"]


def run_reconstruct_preset(name, tmp_path, overrides=()):
    write_procedural_views(tmp_path / "views", procedural_object("cube", "red"), n_views=4, size=16)
    return main(["reconstruct", str(tmp_path / "views"), "--config", name, "--out", str(tmp_path / "run"), *TWO_STEPS,
                 *overrides])


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from core.data.procedural import CAPTION_WORDS, VIEW_WORDS
    from core.priors.tiny import build_tiny_stable_diffusion

    path = tmp_path_factory.mktemp("prior") / "tiny-sd"
    build_tiny_stable_diffusion(path, sample_size=32, words=CAPTION_WORDS + VIEW_WORDS, class_embed_dim=16)
    return str(path)


def run_text_to_3d_preset(name, tmp_path, tiny_prior, overrides=()):
    return main(["generate", "a red cube", "--config", name, "--out", str(tmp_path / "run"), "--steps", "2",
                 f"prior.model={tiny_prior}", "turntable_frames=1", "turntable_size=16", "export=[ply]",
                 "preview_every=1", "checkpoint_every=1", *overrides])


@pytest.fixture(scope="module")
def tiny_zero123(tmp_path_factory):
    from core.priors.tiny import build_tiny_zero123

    return str(build_tiny_zero123(tmp_path_factory.mktemp("z") / "zero123"))


def run_image_to_3d_preset(name, tmp_path, tiny_zero123, overrides=()):
    from core.data.views import procedural_object, write_procedural_views

    write_procedural_views(tmp_path / "views", procedural_object("cone", "green"), n_views=1, size=32)
    return main(["generate", "--image", str(tmp_path / "views" / "train" / "r_000.png"), "--config", name,
                 "--out", str(tmp_path / "run"), "--steps", "2", f"prior.model={tiny_zero123}",
                 "turntable_frames=1", "turntable_size=16", "export=[ply]", "reference_size=32",
                 "preview_every=1", "checkpoint_every=1", *overrides])


def run_relight_preset(name, tmp_path, overrides=()):
    from core.config import read_yaml, resolve_preset

    write_procedural_views(tmp_path / "views", procedural_object("cube", "red"), n_views=4, size=16)
    stages = [f"stages.{i}.steps=2" for i, _ in enumerate(read_yaml(resolve_preset(name))["stages"])]
    return main(["relight", "--data", str(tmp_path / "views"), "--config", name, "--out", str(tmp_path / "run"),
                 *stages, "turntable_frames=1", "turntable_size=16", "export_glb=false", "preview_every=1",
                 "checkpoint_every=1", "renderer.gaussian.num_points=200", *overrides])


def run_video4d_preset(name, tmp_path, tiny_zero123, overrides=()):
    from core.data.video_synth import SyntheticVideoConfig, render_video, write_video

    clip = tmp_path / "clip"
    write_video(render_video(SyntheticVideoConfig(frames=4, width=64, height=64, pan_deg=4.0, dolly=0.0)), clip)
    return main(["animate", str(clip / "frames"), "--masks", str(clip / "masks"), "--config", name,
                 "--out", str(tmp_path / "run"), f"lift.prior_model={tiny_zero123}", "crop_size=32",
                 "background.steps=2", "lift.steps=2", "motion.steps=2", "placement.steps=2",
                 "preview_every=1", "checkpoint_every=1", *overrides])


RUNNERS = {"reconstruct": run_reconstruct_preset, "relight": run_relight_preset, "text_to_3d": run_text_to_3d_preset,
           "image_to_3d": run_image_to_3d_preset, "video4d": run_video4d_preset}
PRIORS = {"text_to_3d": "tiny_prior", "image_to_3d": "tiny_zero123", "video4d": "tiny_zero123"}


def cpu_sized(name, tmp_path):
    """Overrides that shrink a GPU preset (configs/gpu/...) to a CPU test: small renders, one
    camera, few Gaussians, coarse grids, fp32, and a tiny Marigold where it names one."""
    from core.config import read_yaml, resolve_preset

    raw = read_yaml(resolve_preset(name))
    out = ["prior.dtype=fp32", "gaussian.num_points=300", "dmtet.resolution=12", "handoff.resolution=24",
           "export_options.resolution=24", "export_options.texture_size=32", "turntable_frames=1"]
    for i, _ in enumerate(raw.get("stages", [])):
        out += [f"stages.{i}.cameras.width=16", f"stages.{i}.cameras.height=16", f"stages.{i}.resolution=[]",
                f"stages.{i}.cameras.batch_size=1"]
    if raw.get("normal_estimator"):
        from core.priors.tiny import build_tiny_marigold

        out.append(f"normal_estimator={build_tiny_marigold(tmp_path / 'marigold', 'normals')}")
    return out


@pytest.mark.parametrize("name", list_presets())
def test_preset_runs_two_steps(name, tmp_path, request):
    kind, overrides = name.split("/")[0], []
    if kind == "gpu":   # configs/gpu/<kind>/...: the same runner, shrunk to CPU size
        kind, overrides = name.split("/")[1], cpu_sized(name, tmp_path)
    assert kind in RUNNERS, f"preset {name}: no test runner for presets under configs/{kind}/"
    runner = RUNNERS[kind]
    extra = [request.getfixturevalue(PRIORS[kind])] if kind in PRIORS else []
    assert runner(name, tmp_path, *extra, overrides=overrides) == 0
    from core.config import read_yaml, resolve_preset

    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    if kind == "video4d":   # stages named by the clip: background, motion_<id> per object, placement
        from collections import Counter

        steps = Counter(r["stage"] for r in map(json.loads, lines) if "step" in r)
        assert steps == {"background": 2, "motion_1": 2, "motion_2": 2, "placement": 2}
        return
    n_stages = len(read_yaml(resolve_preset(name)).get("stages", [None]))
    assert len(lines) == 2 * n_stages


def test_demo_runs_text_to_3d_end_to_end(tmp_path, capsys, tiny_prior):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "2", f"prior.model={tiny_prior}",
                 "turntable_frames=1", "turntable_size=16", "export=[ply]"]) == 0
    out = capsys.readouterr().out
    assert "text-to-3D of 'a red cube'" in out and "turntable.mp4" in out
    assert (tmp_path / "demo" / "model.ply").is_file()


def test_demo_reconstruct_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--reconstruct", "--out", str(tmp_path / "demo"), "--views", "4", *TWO_STEPS]) == 0
    out = capsys.readouterr().out
    assert "a shiny striped orange torus" in out and "turntable.mp4" in out
    assert (tmp_path / "demo" / "model.ply").is_file()
