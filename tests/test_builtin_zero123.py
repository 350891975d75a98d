"""The built-in Zero123 prior (core/priors/builtin/zero123): it loads through Zero123Prior
like any zero123 checkpoint, samples novel views, drives score distillation; and its
trainer renders the world's pairs and resumes a killed run exactly."""

import pytest
import torch

from core.cameras import orbit_cameras
from core.priors.builtin import ZERO123_PRIOR
from prior_checks import assert_one_sds_step_moves_a_gaussian_scene, die_at_step, load_shipped_prior

SIZE = 32


@pytest.fixture(scope="module")
def prior():
    return load_shipped_prior("zero123", kind="zero123")


@pytest.fixture(scope="module")
def views():
    from core.training.evaluate_zero123 import held_out_views

    return held_out_views(2)


def test_loads_as_a_zero123_folder(prior):
    from safetensors.torch import load_file

    assert prior.resolution == (SIZE, SIZE) and prior.clip_size == SIZE  # the reference is not upsampled
    assert prior.unet.config.in_channels == 2 * prior.latent_channels == 16
    assert prior.camera_dim is None and prior.camera_style == "zero123"
    assert prior.projection.in_features == prior.projection.out_features + 4
    files = [f for f in ZERO123_PRIOR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 25 * 2**20
    weights = load_file(str(ZERO123_PRIOR / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.float16}


def test_four_step_ddim_sample_has_the_right_shape_and_range(prior, views):
    from core.training.evaluate_zero123 import sample_novel_views

    deltas = torch.tensor([[0.0, 45.0, 0.0], [0.0, -90.0, 0.0]])
    samples = sample_novel_views(prior, views["reference"], deltas, steps=4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 2, 3, SIZE, SIZE)
    assert torch.isfinite(samples).all()  # (decode clamps to [0, 1]: a range check would always pass)
    assert float(samples.std()) > 0.01  # not a constant image
    # the reference matters: each object's samples are closer to its own reference than to the other's
    ref = views["reference"]
    own = [float((samples[i] - ref[i]).abs().mean()) for i in range(2)]
    other = [float((samples[i] - ref[1 - i]).abs().mean()) for i in range(2)]
    assert own[0] < other[0] and own[1] < other[1], (own, other)


def test_one_sds_step_moves_a_gaussian_scene(prior, views):
    cams = orbit_cameras(2, elevation_deg=15.0, radius=2.5, width=SIZE, height=SIZE)
    assert_one_sds_step_moves_a_gaussian_scene(prior, prior.condition(views["reference"][:1], cameras=cams), cams, 3.0)


def test_pair_renders_are_the_worlds_pairs():
    from core.data.procedural import PRIOR_SEED_START, ProceduralWorld
    from core.training.train_zero123 import render_views

    world = ProceduralWorld()
    images, cameras = render_views(world, [PRIOR_SEED_START, PRIOR_SEED_START + 1], views=3)
    assert images.shape == (2, 3, 3, SIZE, SIZE) and images.dtype == torch.uint8 and cameras.shape == (2, 3, 4)
    pair = world.pair(PRIOR_SEED_START + 1)
    assert torch.equal(images[1, :2], (pair.images * 255).round().to(torch.uint8))
    assert torch.allclose(cameras[1, :2, 0], pair.elevation) and torch.allclose(cameras[1, :2, 1], pair.azimuth)


def _tiny_run(work, monkeypatch=None, fail_at=None):
    """4 steps of a small model on random latents, checkpointing every step; with `fail_at`
    the run dies (like a killed job) when it reaches that step."""
    import core.training.train_zero123 as train
    from core.training.zero123_model import Zero123PriorConfig

    cfg = train.Zero123TrainConfig(steps=4, batch=4, warmup_steps=2, checkpoint_minutes=0.0, seed=3,
                                   model=dict(unet_channels=(32, 32), embed_dim=32, vision_width=32,
                                              attention_head_dim=8))
    g = torch.Generator().manual_seed(0)
    n, v = 4, 3
    data = {"images": torch.randint(0, 256, (n, v, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
            "cameras": torch.rand(n, v, 4, generator=g) * torch.tensor([70.0, 360.0, 0.6, 10.0])}
    latents = (torch.randn(n, v, 8, 8, 8, generator=g), torch.full((n, v, 8, 8, 8), 0.1))
    alphas_cumprod = torch.linspace(0.999, 0.01, 1000)
    if fail_at is not None:
        die_at_step(monkeypatch, train, fail_at)
    return train.train_modules(work, data, latents, 1.0, alphas_cumprod, cfg, Zero123PriorConfig(**cfg.model),
                               budget_s=None, progress=False)


def test_training_resumes_exactly_after_a_kill(tmp_path, monkeypatch):
    reference = _tiny_run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path / "killed", monkeypatch, fail_at=2)
    monkeypatch.undo()
    assert torch.load(tmp_path / "killed" / "zero123.pt", weights_only=False)["step"] == 2
    resumed = _tiny_run(tmp_path / "killed")
    ref, res = reference.state_dict(), resumed.state_dict()
    for k in ref:
        assert torch.equal(ref[k], res[k]), k


def test_saving_over_the_folder_that_lends_the_vae_keeps_it(tmp_path):
    """`--vae-from core/priors/builtin/zero123` retrains with the VAE the shipped prior holds."""
    import shutil

    import core.training.train_zero123 as train
    from core.priors.builtin import ZERO123_PRIOR
    from core.training.zero123_model import Zero123PriorConfig

    out = tmp_path / "zero123"
    for folder in ("vae", "scheduler"):
        shutil.copytree(ZERO123_PRIOR / folder, out / folder)
    vae_before = (out / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    mcfg = Zero123PriorConfig(unet_channels=(32, 32), embed_dim=32, vision_width=32, attention_head_dim=8)
    train.save_zero123_prior(out, train.Zero123Modules(mcfg), mcfg, vae_source=out)
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == vae_before
    assert (out / "scheduler" / "scheduler_config.json").is_file() and (out / "unet").is_dir()


def test_train_prior_command_dispatches_zero123(monkeypatch):
    import core.training.train_zero123 as train_zero123
    from app.cli import main

    seen = []
    monkeypatch.setattr(train_zero123, "main", lambda argv: seen.append(argv))
    assert main(["train-prior", "zero123", "--minutes", "60", "--seed", "3"]) == 0
    assert seen == [["--minutes", "60", "--seed", "3"]]
