"""Checks the built-in priors' tests share: the shipped weights load (or the test fails,
saying how to train them), one SDS step moves a Gaussian scene, and a training run can be
made to die at a given step like a killed job."""

import pytest
import torch


def load_shipped_prior(name: str, kind: str = "stable_diffusion"):
    """The built-in prior `builtin:<name>` on the CPU (posterior-mean latents); fails the
    test, naming the training command, when its weights are missing."""
    from core.priors import PriorConfig, load
    from core.priors.loading import builtin_path

    folder = builtin_path(name)
    if not (folder / "unet").is_dir():
        pytest.fail(f"the built-in {name} prior's weights are missing from {folder}; "
                    f"train them with `python -m core.training.train {name}`")
    return load(PriorConfig(kind=kind, model=f"builtin:{name}", device="cpu", latent="mean"))


def assert_one_sds_step_moves_a_gaussian_scene(prior, cond, cameras, guidance_scale: float) -> None:
    """One SDS step of `prior` under `cond` on a 300-Gaussian scene seen from `cameras`:
    finite gradients on every parameter, and colours and means move."""
    from core.distill import ObjectiveConfig, build
    from renderers.gaussian.scene import GaussianConfig, GaussianScene

    scene = GaussianScene(GaussianConfig(num_points=300, backend="torch", seed=0))
    optimizer = torch.optim.Adam(scene.param_groups(), eps=1e-15)
    before = {k: v.detach().clone() for k, v in scene.params.items()}
    objective = build(ObjectiveConfig(kind="sds", guidance_scale=guidance_scale), prior)
    loss, _ = objective(scene.render(cameras), cond, progress=0.3, cameras=cameras,
                        generator=torch.Generator().manual_seed(0))
    optimizer.zero_grad()
    loss.backward()
    for name, p in scene.params.items():
        assert torch.isfinite(p.grad).all(), name
    optimizer.step()
    moved = {k: float((scene.params[k].detach() - v).abs().max()) for k, v in before.items()}
    assert moved["sh0"] > 1e-4 and moved["means"] > 1e-5, moved


def die_at_step(monkeypatch, trainer_module, step: int) -> None:
    """Make `trainer_module`'s training loop raise KeyboardInterrupt when it reaches `step`
    (through its learning-rate schedule, which every step calls first)."""
    real_lr = trainer_module.lr_at_step

    def dying_lr(s, total, cfg):
        if s == step:
            raise KeyboardInterrupt
        return real_lr(s, total, cfg)

    monkeypatch.setattr(trainer_module, "lr_at_step", dying_lr)
