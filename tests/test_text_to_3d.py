import json

import pytest
import torch

from app.cli import main
from core.config import load_config, resolve_preset
from core.data.procedural import CAPTION_WORDS, VIEW_WORDS
from core.pipelines.text_to_3d import TextTo3DConfig, generate
from core.priors.tiny import build_tiny_stable_diffusion


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    """A tiny random SD-format prior over the procedural world's words, with a camera class embedding."""
    path = tmp_path_factory.mktemp("prior") / "tiny-sd"
    build_tiny_stable_diffusion(path, sample_size=32, words=CAPTION_WORDS + VIEW_WORDS, class_embed_dim=16)
    return str(path)


FAST = ["stages.0.steps=2", "turntable_frames=1", "turntable_size=16", "gaussian.num_points=200",
        "preview_every=1", "checkpoint_every=1"]


def test_generate_cli_writes_the_run_folder(tiny_prior, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["generate", "a red cube", "--out", str(out), f"prior.model={tiny_prior}", "--steps", "3",
                 "turntable_frames=1", "turntable_size=16", "gaussian.num_points=200", "preview_every=1",
                 "export=[ply, splat]"])
    assert code == 0, capsys.readouterr().err
    for name in ("model.ply", "model.splat", "config.yaml", "metrics.jsonl", "turntable/turntable.mp4",
                 "checkpoints/coarse.pt"):
        assert (out / name).is_file(), name
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert {"grad_norm", "t", "guidance_scale", "resolution"} <= set(records[0])
    assert "model_splat: " in capsys.readouterr().out
    # Previews: renders on top, the distillation gradient's per-pixel magnitude below.
    import imageio.v3 as iio

    preview = iio.imread(out / "previews" / "coarse_000003.png")
    assert preview.shape == (64, 64, 3)  # two 32 px views, two rows
    assert preview[32:].max() == 255 and preview[32:].std() > 0


def test_generate_bad_input_is_one_line_exit_2(tiny_prior, tmp_path, capsys):
    assert main(["generate", "  ", "--out", str(tmp_path / "a")]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["generate", "a cube", "--config", "nope/nothing", "--out", str(tmp_path / "b")]) == 2
    assert "no preset 'nope/nothing'" in capsys.readouterr().err
    assert main(["generate", "a cube", "prior.model=/does/not/exist", "--out", str(tmp_path / "c")]) == 2
    assert "folder not found" in capsys.readouterr().err
    assert not (tmp_path / "c" / "model.ply").exists()


@pytest.mark.parametrize("background", ["scene", "random", "learned"])
def test_resumed_generation_matches_an_uninterrupted_one(tiny_prior, tmp_path, background):
    """Cancel after 2 of 4 steps, resume in a fresh process state: same final parameters
    (and the same learned background colour)."""
    from core.runner import Cancelled

    cfg = load_config(TextTo3DConfig, resolve_preset("text_to_3d/gaussian_sds"),
                      [f"prior.model={tiny_prior}", "prompt=a red cube", "stages.0.steps=4", "turntable_frames=0", "export=[ply]",
                       "gaussian.num_points=100", "checkpoint_every=1", "preview_every=0",
                       f"stages.0.background.kind={background}"])
    generate(cfg, tmp_path / "full")

    class StopAfter:
        def __init__(self, n):
            self.n = n

        def on_step(self, *a):
            self.n -= 1

        def on_preview(self, *a):
            pass

        def should_stop(self):
            return self.n <= 0

    with pytest.raises(Cancelled):
        generate(cfg, tmp_path / "cut", callbacks=StopAfter(2))
    torch.manual_seed(1234)
    generate(cfg, tmp_path / "cut")
    full = torch.load(tmp_path / "full" / "checkpoints" / "coarse.pt", weights_only=False)
    cut = torch.load(tmp_path / "cut" / "checkpoints" / "coarse.pt", weights_only=False)
    assert full["scene"].keys() == cut["scene"].keys()
    for key in full["scene"]:
        if torch.is_tensor(full["scene"][key]):
            assert torch.equal(full["scene"][key], cut["scene"][key]), key
    if background == "learned":
        colour = full["stateful"]["cameras"]["background"]["color_logit"]
        assert torch.equal(colour, cut["stateful"]["cameras"]["background"]["color_logit"])
        assert not torch.equal(colour, torch.logit(torch.tensor([1 - 1e-3] * 3)))   # it was trained


def test_normal_guided_polish_stage_uses_the_estimator(tiny_prior, tmp_path):
    from core.priors.tiny import build_tiny_marigold

    marigold = build_tiny_marigold(tmp_path / "marigold", kind="normals")
    base = [f"prior.model={tiny_prior}", "prompt=a red cube", "turntable_frames=0", "export=[ply]",
            "preview_every=0", "dmtet.resolution=8",
            "stages=[{name: polish, representation: dmtet, steps: 2, normal_guidance: 1.0, "
            "cameras: {batch_size: 1, width: 16, height: 16}}]"]
    with pytest.raises(ValueError, match="normal_estimator is empty"):
        generate(load_config(TextTo3DConfig, None, base), tmp_path / "no-estimator")
    cfg = load_config(TextTo3DConfig, None, [*base, f"normal_estimator={marigold}"])
    generate(cfg, tmp_path / "run")
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(0.0 <= r["normal_guidance"] <= 2.0 for r in records)


def test_generate_takes_a_yaml_preset_holding_the_prompt(tiny_prior, tmp_path, capsys):
    preset = tmp_path / "x.yaml"
    preset.write_text(resolve_preset("text_to_3d/gaussian_sds").read_text() + "\nprompt: a blue cone\n")
    out = tmp_path / "run"
    assert main(["generate", str(preset), f"prior.model={tiny_prior}", "stages.0.steps=2", "turntable_frames=0",
                 "export=[ply]", "gaussian.num_points=100", "--out", str(out)]) == 0
    assert "generating 'a blue cone'" in capsys.readouterr().out
    assert (out / "model.ply").is_file()
    (tmp_path / "empty.yaml").write_text("seed: 1\n")
    assert main(["generate", str(tmp_path / "empty.yaml"), "--out", str(tmp_path / "e")]) == 2
    assert "sets no prompt" in capsys.readouterr().err


def test_a_resolution_that_cannot_fit_memory_stops_before_any_work(tiny_prior, tmp_path, capsys):
    """100k px renders: one-line error naming the stage and the keys to lower, exit 2, no run folder."""
    out = tmp_path / "huge"
    assert main(["generate", "a red cube", "--out", str(out), f"prior.model={tiny_prior}",
                 "stages.0.cameras.width=100000", "stages.0.cameras.height=100000"]) == 2
    err = capsys.readouterr().err
    assert "stage 'coarse' renders 2 x 100000x100000 px" in err and "stages.0.cameras.width/height" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_memory_check_counts_the_largest_resolution_and_nerf_samples():
    from core.pipelines.distillation import check_memory, render_memory_lower_bound

    cfg = load_config(TextTo3DConfig, resolve_preset("text_to_3d/nerf_sds"),
                      ["stages.0.cameras.width=32", "stages.0.cameras.height=32", "stages.0.resolution=[[0.5, 64]]"])
    need = render_memory_lower_bound(cfg, cfg.stages[0])
    assert need == 2 * 64 * 64 * (16 + 8 * cfg.nerf.n_samples) * 4      # the 64 px milestone, not 32
    check_memory(cfg, available=need)                                   # fits exactly: no error
    with pytest.raises(ValueError, match="stages.0.resolution"):
        check_memory(cfg, available=need - 1)
