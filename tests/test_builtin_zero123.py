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
    # the reference matters: the object in each sample is closer in colour to its own reference's
    # object than to the other's (objects only: the prior draws the target's background itself)
    from core.training.evaluate_zero123 import border_background, silhouette

    def object_colour(images, background=None):
        m = silhouette(images, background).float()
        return (images * m).sum((2, 3)) / m.sum((2, 3)).clamp(min=1)

    flat = samples.flatten(0, 1)
    sampled = object_colour(flat, border_background(flat)).reshape(2, 2, 3)
    reference = object_colour(views["reference"])
    own = [float((sampled[i] - reference[i]).norm(dim=-1).max()) for i in range(2)]
    other = [float((sampled[i] - reference[1 - i]).norm(dim=-1).min()) for i in range(2)]
    assert own[0] < other[0] and own[1] < other[1], (own, other)


def test_one_sds_step_moves_a_gaussian_scene(prior, views):
    cams = orbit_cameras(2, elevation_deg=15.0, radius=2.5, width=SIZE, height=SIZE)
    assert_one_sds_step_moves_a_gaussian_scene(prior, prior.condition(views["reference"][:1], cameras=cams), cams, 3.0)


def test_pair_renders_are_the_worlds_pairs():
    from core.data.procedural import PRIOR_SEED_START, sample_background
    from core.training.train_zero123 import render_views, zero123_world

    world = zero123_world(SIZE)
    seeds = list(range(PRIOR_SEED_START, PRIOR_SEED_START + 12))
    images, targets, cameras = render_views(world, seeds, views=3)
    assert images.shape == targets.shape == (12, 3, 3, SIZE, SIZE) and images.dtype == targets.dtype == torch.uint8
    assert cameras.shape == (12, 3, 4)
    pair = world.pair(PRIOR_SEED_START + 1)  # the references: over white, as world.pair renders them
    assert torch.equal(images[1, :2], (pair.images * 255).round().to(torch.uint8))
    assert torch.allclose(cameras[1, :2, 0], pair.elevation) and torch.allclose(cameras[1, :2, 1], pair.azimuth)
    # the targets: the same views rendered directly over each object's drawn background
    backgrounds = [sample_background(s, world.cfg) for s in seeds]
    assert len({b for b in backgrounds}) > 2  # the mix draws more than white here
    for i, seed in enumerate(seeds):
        direct, _ = world.render_object(world.spec(seed), world.cameras([tuple(c) for c in cameras[i].tolist()]),
                                        backgrounds[i])
        assert (targets[i].float() - direct * 255).abs().max() <= 1.0, seed


def test_pairs_are_drawn_by_shape_weight():
    from core.data.procedural_shapes import SHAPES
    from core.training.train_zero123 import Zero123TrainConfig, object_weights

    shapes = torch.arange(len(SHAPES)).repeat(100)
    w = object_weights(shapes, Zero123TrainConfig().shape_weights)
    share = float(w[(shapes == SHAPES.index("cube")) | (shapes == SHAPES.index("pyramid"))].sum() / w.sum())
    assert abs(share - 5 / 10) < 1e-6  # 2 x 2.5 against 5 x 1
    with pytest.raises(ValueError, match="shape_weights"):
        Zero123TrainConfig(shape_weights={"teapot": 2.0})


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


def test_a_run_on_another_vae_never_resumes_the_old_one(tmp_path):
    """The cached latents and the checkpoint belong to the VAE that encoded them: the work
    folder follows the VAE's weights (not its path), so retraining the text prior starts a
    fresh Zero123 run while a copy of the same VAE resumes."""
    import shutil

    from safetensors.torch import load_file, save_file

    import core.training.train_zero123 as train
    from core.priors.builtin import TEXT_PRIOR

    same, other = tmp_path / "same", tmp_path / "other"
    for folder in (same, other):
        for sub in ("vae", "scheduler"):
            shutil.copytree(TEXT_PRIOR / sub, folder / sub)
    weights = other / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1
    save_file(tensors, weights)
    out = tmp_path / "zero123"
    work = lambda source: train._work_dir(out, 0, tmp_path / "cache", 32, source)  # noqa: E731
    assert work(same) == work(TEXT_PRIOR)
    assert work(other) != work(TEXT_PRIOR)


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


def test_evaluation_reads_each_samples_background_off_its_border():
    """The evaluation's background-aware comparison against direct renders over a colour:
    the border median is the colour, the re-composited truth is the direct render, and the
    silhouette over the colour is the object's covered pixels."""
    from core.data.procedural import CLASSIFIER_TEST_SEEDS, ProceduralWorld
    from core.data.classifier import over_background
    from core.training.evaluate_zero123 import border_background, iou, silhouette

    world = ProceduralWorld()
    spec = world.spec(CLASSIFIER_TEST_SEEDS[0])
    cams = world.cameras([(15.0, 30.0, 2.5, 45.0), (40.0, -100.0, 2.5, 45.0)])
    white, alpha = world.render_object(spec, cams)
    colour = torch.tensor([[0.2, 0.7, 0.4], [0.0, 0.0, 0.0]])
    direct = torch.cat([world.render_object(spec, cams[i:i + 1], tuple(colour[i].tolist()))[0] for i in range(2)])
    assert torch.allclose(border_background(direct), colour, atol=1e-6)
    assert torch.allclose(over_background(white, alpha, colour), direct, atol=1e-5)
    for sil in (silhouette(direct, colour), silhouette(white)):  # None: over white, as before
        assert not (sil & (alpha == 0)).any()  # nothing outside the object
        assert float(iou(sil, alpha > 0.5).min()) > 0.8  # and the object (its anti-aliased rim in or out)
