import json

import pytest
import torch

from app.cli import main
from core.config import load_config, resolve_preset
from core.data.procedural import CAPTION_WORDS, VIEW_WORDS
from core.pipelines.text_to_3d import TextTo3DConfig, generate
from core.priors.tiny import build_tiny_stable_diffusion
from stop_after import StopAfter


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


def test_normal_guided_polish_stage_uses_the_estimator(tiny_prior, tmp_path, monkeypatch):
    import core.priors.estimators as estimators
    from core.priors.tiny import build_tiny_marigold

    marigold = build_tiny_marigold(tmp_path / "marigold", kind="normals")
    base = [f"prior.model={tiny_prior}", "prompt=a red cube", "turntable_frames=0", "export=[ply]",
            "preview_every=0", "dmtet.resolution=8",
            "stages=[{name: polish, representation: dmtet, steps: 2, normal_guidance: 1.0, "
            "cameras: {batch_size: 1, width: 16, height: 16}}]"]
    with pytest.raises(ValueError, match="normal_estimator is empty"):
        generate(load_config(TextTo3DConfig, None, base), tmp_path / "no-estimator")
    seen, load = [], estimators.load_normal_estimator

    class Watched:
        """The loaded estimator, recording the images each step asks it about."""

        def __init__(self, inner):
            self.inner = inner

        def predict(self, images):
            seen.append(tuple(images.shape))
            return self.inner.predict(images)

    monkeypatch.setattr(estimators, "load_normal_estimator", lambda *a, **k: Watched(load(*a, **k)))
    cfg = load_config(TextTo3DConfig, None, [*base, f"normal_estimator={marigold}"])
    generate(cfg, tmp_path / "run")
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # One estimate per step, of that step's render (1 view, 16 px), and its loss logged each step.
    assert seen == [(1, 3, 16, 16)] * 2
    assert len(records) == 2 and all("normal_guidance" in r for r in records)


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

    def bound(*overrides):
        cfg = load_config(TextTo3DConfig, resolve_preset("text_to_3d/nerf_sds"), list(overrides))
        return cfg, render_memory_lower_bound(cfg, cfg.stages[0])

    cfg, need = bound("stages.0.cameras.width=32", "stages.0.cameras.height=32", "stages.0.resolution=[[0.5, 64]]")
    assert need == bound("stages.0.cameras.width=64", "stages.0.cameras.height=64")[1]  # the 64 px milestone
    assert bound("stages.0.cameras.width=64", "stages.0.cameras.height=64", "nerf.n_samples=96")[1] > need
    check_memory(cfg, available=need)                                   # fits exactly: no error
    with pytest.raises(ValueError, match="stages.0.resolution"):
        check_memory(cfg, available=need - 1)


# Runs in a fresh process: peak resident memory (VmHWM, reset through /proc/self/clear_refs after
# malloc_trim hands freed heap back) of one differentiable render + backward per preset and size.
MEASURE_RENDER_PEAK = """
import ctypes, gc, json, re, sys, torch
from core.config import load_config, resolve_preset
from core.pipelines.distillation import CameraBatches, render_memory_lower_bound
from core.pipelines.handoff import build_scene
from core.pipelines.text_to_3d import TextTo3DConfig

def status(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

results = []
for preset, size, extra in json.loads(sys.argv[1]):
    for side in (8, size):  # an 8 px render first: lazy imports and one-off buffers are not counted
        cfg = load_config(TextTo3DConfig, resolve_preset(preset),
                          [f"stages.0.cameras.width={side}", f"stages.0.cameras.height={side}", *extra])
        stage = cfg.stages[0]
        scene = build_scene(cfg, stage.representation, None, torch.device("cpu"))
        cameras = CameraBatches(stage, 0)(1).cameras
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        open("/proc/self/clear_refs", "w").write("5")
        before = status("VmRSS")
        out = scene.render(cameras)
        (out.rgb.sum() + out.alpha.sum() + out.depth.sum()).backward()
        peak = status("VmHWM") - before
        del out, scene
    results.append([preset, render_memory_lower_bound(cfg, stage), peak])
print(json.dumps(results))
"""


def test_render_memory_lower_bound_is_below_a_measured_peak():
    """The bound that stops a job before any work must never exceed what a render really takes,
    else check_memory refuses jobs that fit. Measured here: one real differentiable render
    (forward + backward) at the size, on CPU, in a fresh process.

    The bound counts only the per-pixel buffers every backend keeps (rgb, alpha, depth, normal
    and their gradients; gsplat on CUDA keeps about that much, and nerfacc's occupancy grid
    evaluates at most n_samples per ray), not the CPU paths' working memory (tile lists, every
    sample's MLP activations). So it sits far below the CPU peak: 5% of it at these sizes
    (4.5 of 89 MiB for the Gaussians, 10.1 of 177-202 MiB for the NeRF, two runs). It must stay within a factor
    32 of the peak: a bound further off (a unit slip, a dropped term) stops nothing."""
    import os
    import subprocess
    import sys

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak resident memory")
    cases = [["text_to_3d/gaussian_sds", 192, []], ["text_to_3d/nerf_sds", 96, ["nerf.n_samples=16"]]]
    result = subprocess.run([sys.executable, "-c", MEASURE_RENDER_PEAK, json.dumps(cases)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    for preset, bound, peak in json.loads(result.stdout):
        assert bound <= peak, (preset, bound, peak)
        assert bound >= peak / 32, (preset, bound, peak)


def final_states(folder, stages):
    """Scene and optimiser state of each stage's last checkpoint, flattened to {name: tensor}."""
    flat = {}

    def walk(prefix, value):
        if torch.is_tensor(value):
            flat[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)

    for name in stages:
        state = torch.load(folder / "checkpoints" / f"{name}.pt", weights_only=False)
        assert state["step"] == 2
        walk(f"{name}.scene", state["scene"])
        walk(f"{name}.optimizer", state["optimizer"]["state"])
    return flat


POLISH_STAGES = ["coarse", "geometry", "polish", "texture"]


@pytest.fixture(scope="module")
def tiny_polish(tiny_prior, tmp_path_factory):
    """The polish preset (Gaussians -> DMTet -> mesh polish with normal guidance -> mesh texture
    with DSD + PGC) at 2 steps per stage and 16 px, and its uninterrupted run."""
    from core.priors.tiny import build_tiny_marigold

    root = tmp_path_factory.mktemp("polish")
    marigold = build_tiny_marigold(root / "marigold", kind="normals")
    cfg = load_config(TextTo3DConfig, resolve_preset("text_to_3d/polish"), [
        f"prior.model={tiny_prior}", f"normal_estimator={marigold}", "prompt=a red cube", "turntable_frames=0",
        "export=[ply]", "gaussian.num_points=100", "dmtet.resolution=8", "handoff.resolution=16",
        "checkpoint_every=1", "preview_every=0",
        *[f"stages.{i}.{key}" for i in range(4) for key in
          ("steps=2", "cameras.batch_size=1", "cameras.width=16", "cameras.height=16")]])
    generate(cfg, root / "full")
    return cfg, root / "full"


# Killed after 2 steps: at the Gaussians -> DMTet hand-off (the geometry checkpoint holds step 0,
# the converted scene); after 4: at the DMTet -> mesh hand-off; after 7: inside the DSD stage.
@pytest.mark.parametrize("stop_after,stopped_in", [(2, "geometry"), (4, "polish"), (7, "texture")])
def test_polish_resumed_across_a_stage_hand_off_matches_an_uninterrupted_run(tiny_polish, tmp_path, stop_after,
                                                                              stopped_in):
    """Killed after `stop_after` steps, resumed from the checkpoints in a fresh RNG state: every
    stage's final scene and optimiser state equal the uninterrupted run's, bit for bit."""
    from core.runner import Cancelled

    cfg, full_run = tiny_polish
    with pytest.raises(Cancelled):
        generate(cfg, tmp_path / "cut", callbacks=StopAfter(stop_after))
    state = torch.load(tmp_path / "cut" / "checkpoints" / f"{stopped_in}.pt", weights_only=False)
    assert state["step"] == (stop_after - 2 * POLISH_STAGES.index(stopped_in))
    torch.manual_seed(1234)
    generate(cfg, tmp_path / "cut")
    full, cut = final_states(full_run, POLISH_STAGES), final_states(tmp_path / "cut", POLISH_STAGES)
    assert full.keys() == cut.keys() and any(k.startswith("texture.scene") for k in full)
    for key in full:
        assert torch.equal(full[key], cut[key]), key
    records = [json.loads(l) for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records if r["step"] == 2][-4:] == POLISH_STAGES
