"""VSD/DSD inside the runner: the LoRA steps with the scene (never on a skipped step), leaves
the shared prior as loaded when its stage ends (so a second VSD/DSD stage can start), and is
checkpointed with its optimiser so a killed and resumed run equals an uninterrupted one;
metrics.jsonl holds each step once after a resume."""

from __future__ import annotations

import json

import pytest
import torch

from core.cameras import orbit_cameras
from core.config import load_config
from core.data.procedural import CAPTION_WORDS, VIEW_WORDS
from core.distill import ObjectiveConfig, build
from core.distill.lora import ADAPTER, LoraConfig
from core.pipelines.text_to_3d import TextTo3DConfig, generate
from core.priors import PriorConfig, load
from core.priors.tiny import build_tiny_stable_diffusion
from core.runner import Batch, RunFolder, SilentCallbacks, Stage, run_stage
from renderers.gaussian.scene import GaussianConfig, GaussianScene

SIZE = 32


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    """A tiny random SD-format prior over the world's words, without a class embedding (so the
    LoRA gets the camera through its own camera MLP, which the checkpoint must also hold)."""
    path = tmp_path_factory.mktemp("prior") / "tiny-sd"
    build_tiny_stable_diffusion(path, sample_size=SIZE, words=CAPTION_WORDS + VIEW_WORDS)
    return str(path)


def make_prior(path):
    return load(PriorConfig(model=path, device="cpu", view_dependent_prompt=False))


def stage_yaml(name, kind, steps):
    return (f"{{name: {name}, representation: gaussian, steps: {steps}, objective: {{kind: {kind}, "
            f"guidance_scale: 7.5, target_space: image, lora: {{rank: 2, lr: 0.01, camera_dropout: 0.0}}}}, "
            f"cameras: {{batch_size: 2, width: {SIZE}, height: {SIZE}}}}}")


def config(tiny_prior, stages, checkpoint_every=2):
    return load_config(TextTo3DConfig, None, [
        f"prior.model={tiny_prior}", "prior.view_dependent_prompt=false", "prompt=a red cube",
        "gaussian.num_points=100", "gaussian.render_normals=false", "turntable_frames=0", "export=[ply]",
        "preview_every=0", f"checkpoint_every={checkpoint_every}", f"stages=[{', '.join(stages)}]"])


def lora_weights(prior) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in prior.unet.named_parameters() if f".{ADAPTER}." in n}


class KillAt(SilentCallbacks):
    """Callbacks that die (as a killed process would) right after `step` of `stage` is logged."""

    def __init__(self, stage, step):
        self.stage, self.step = stage, step

    def on_step(self, stage, step, total, stats):
        if (stage, step) == (self.stage, self.step):
            raise KeyboardInterrupt(f"killed at {stage} {step}")


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["vsd", "dsd"])
def test_two_variational_stages_share_one_prior(tiny_prior, tmp_path, kind):
    prior = make_prior(tiny_prior)
    teacher = {n: p.detach().clone() for n, p in prior.unet.named_parameters()}
    hooks_before = len(prior.unet.time_embedding._forward_hooks)
    cfg = config(tiny_prior, [stage_yaml("first", kind, 2), stage_yaml("second", kind, 2)])
    generate(cfg, tmp_path / "run", prior=prior)  # the second stage used to fail: "already has a 'vsd' adapter"
    assert [(r["stage"], r["step"]) for r in records(tmp_path / "run")] == [
        ("first", 1), ("first", 2), ("second", 1), ("second", 2)]
    assert all(r["lora_loss"] > 0 for r in records(tmp_path / "run"))
    # each stage trained its own LoRA, then took it (and its camera hook) off the teacher
    second = torch.load(tmp_path / "run" / "checkpoints" / "second.pt", weights_only=False)
    assert second["stateful"]["objective"]["variational"]["lora"]
    assert ADAPTER not in (getattr(prior.unet, "peft_config", None) or {})
    assert len(prior.unet.time_embedding._forward_hooks) == hooks_before
    after = dict(prior.unet.named_parameters())
    assert after.keys() == teacher.keys() and all(torch.equal(after[n], v) for n, v in teacher.items())


def test_a_step_skipped_for_nan_does_not_train_the_lora(tiny_prior, tmp_path):
    prior = make_prior(tiny_prior)
    cams = orbit_cameras(2, elevation_deg=20.0, radius=2.5, width=SIZE, height=SIZE)
    cond = prior.condition("a red cube", cameras=cams)
    objective = build(ObjectiveConfig(kind="vsd", target_space="image", lora=LoraConfig(lr=1e-2)), prior)
    scene = GaussianScene(GaussianConfig(num_points=100, backend="torch", seed=0, render_normals=False))
    optimizer = torch.optim.Adam(scene.param_groups(), eps=1e-15)
    scene.attach_optimizer(optimizer)

    def loss(out, batch, step, progress):
        images = out.chw()
        if step == 2:  # a render gone bad: the objective sees NaN, the runner must skip the step
            images = images * float("nan")
        return objective(images, cond, progress, cameras=cams)

    seen = {}

    class Snapshot(SilentCallbacks):
        def on_step(self, stage, step, total, stats):
            seen[step] = lora_weights(prior)

    initial = lora_weights(prior)
    stage = Stage("vsd", scene, 2, lambda step: Batch(cams), loss, optimizer, after_step=objective.step)
    run_stage(stage, RunFolder(tmp_path / "run"), Snapshot())
    assert list(seen) == [1]  # step 2 was skipped
    assert any(not torch.equal(seen[1][n], initial[n]) for n in initial)  # step 1 trained it
    final = lora_weights(prior)
    assert all(torch.equal(final[n], seen[1][n]) for n in final)  # step 2 left it as step 1 did
    assert objective.variational.optimizer.state_dict()["state"][0]["step"] == 1
    log = records(tmp_path / "run")
    assert log[-1] == {"stage": "vsd", "step": 2, "skipped": "non-finite loss or gradient"}
    objective.close()


def test_resume_logs_each_step_once(tiny_prior, tmp_path):
    cfg = config(tiny_prior, [stage_yaml("coarse", "sds", 5)], checkpoint_every=2)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, run, callbacks=KillAt("coarse", 3))  # checkpoint at 2, step 3 already logged
    assert [r["step"] for r in records(run)] == [1, 2, 3]
    generate(cfg, run)
    steps = [r["step"] for r in records(run)]
    assert steps == [1, 2, 3, 4, 5]  # not 1, 2, 3, 3, 4, 5


@pytest.mark.parametrize("kind", ["vsd", "dsd"])
def test_killed_and_resumed_equals_uninterrupted(tiny_prior, tmp_path, kind):
    cfg = config(tiny_prior, [stage_yaml("coarse", kind, 4)], checkpoint_every=2)
    generate(cfg, tmp_path / "full", prior=make_prior(tiny_prior))
    prior = make_prior(tiny_prior)
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, tmp_path / "cut", prior=prior, callbacks=KillAt("coarse", 3))
    torch.manual_seed(1234)  # the resumed process starts from another RNG state
    generate(cfg, tmp_path / "cut", prior=make_prior(tiny_prior))
    full = torch.load(tmp_path / "full" / "checkpoints" / "coarse.pt", weights_only=False)
    cut = torch.load(tmp_path / "cut" / "checkpoints" / "coarse.pt", weights_only=False)
    for key, value in full["scene"].items():
        if torch.is_tensor(value):
            assert torch.equal(value, cut["scene"][key]), key
    lora_full = full["stateful"]["objective"]["variational"]
    lora_cut = cut["stateful"]["objective"]["variational"]
    assert lora_full["lora"].keys() == lora_cut["lora"].keys() and lora_full["lora"]
    assert any(v.abs().max() > 0 for k, v in lora_full["lora"].items() if "lora_B" in k)  # it trained
    for name, value in lora_full["lora"].items():
        assert torch.equal(value, lora_cut["lora"][name]), name
    assert lora_full["camera_mlp"] is not None
    for name, value in lora_full["camera_mlp"].items():
        assert torch.equal(value, lora_cut["camera_mlp"][name]), name
    moments_full = lora_full["optimizer"]["state"]
    moments_cut = lora_cut["optimizer"]["state"]
    assert moments_full.keys() == moments_cut.keys()
    for index in moments_full:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(moments_full[index][name], moments_cut[index][name]), (index, name)
    assert [r["step"] for r in records(tmp_path / "cut")] == [1, 2, 3, 4]
