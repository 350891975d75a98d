"""Objectives on a tiny random Stable-Diffusion-format prior (core.priors.tiny): PGC after a
real VAE encoder, the LoRA branch of VSD (adapter on/off, camera conditioning, training,
checkpointing), DSD's reductions with a real LoRA, and one step on a rendered Gaussian scene."""

import io

import pytest
import torch

from core.cameras import orbit_cameras
from core.distill import ObjectiveConfig, PGCConfig, build
from core.distill.lora import LoraConfig, LoraVariational
from core.distill.objectives import camera_features
from core.distill.pgc import pixel_norms
from core.priors import PriorConfig, load
from core.priors.tiny import build_tiny_stable_diffusion

SIZE = 32


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_sd")
    return {"sd": build_tiny_stable_diffusion(root / "sd", sample_size=SIZE),
            "sd_camera": build_tiny_stable_diffusion(root / "sd_camera", sample_size=SIZE, class_embed_dim=8)}


def make_prior(repos, which="sd"):
    """A fresh prior (each VSD objective adds its own adapter); deterministic encoding."""
    return load(PriorConfig(model=str(repos[which]), device="cpu", latent="mean", view_dependent_prompt=False))


def cameras(n=2):
    return orbit_cameras(n, elevation_deg=20.0, radius=2.0, width=SIZE, height=SIZE)


def test_pgc_bounds_the_gradient_after_a_vae_encoder(repos):
    """Leaf image -> tiny random VAE encoder -> SDS: with PGC every pixel's gradient has
    norm <= c, without it some exceed c, and clipped pixels keep their direction."""
    prior = make_prior(repos)
    cond = prior.condition("a red cube", cameras=None)
    base = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def image_grad(pgc: PGCConfig):
        image = base.clone().requires_grad_(True)
        objective = build(ObjectiveConfig(kind="sds", guidance_scale=7.5, pgc=pgc), prior)
        loss, stats = objective(image, cond, 0.5, generator=torch.Generator().manual_seed(1))
        loss.backward()
        return image.grad, stats

    free, _ = image_grad(PGCConfig(enabled=False))
    c = 0.25 * float(pixel_norms(free).max())
    clipped, stats = image_grad(PGCConfig(enabled=True, threshold=c))
    n_free, n_clipped = pixel_norms(free), pixel_norms(clipped)
    assert float(n_clipped.max()) <= c * (1 + 1e-6)
    assert 0 < stats["image_pgc_clipped_fraction"] < 1
    over = (n_free > c).expand_as(free)
    assert torch.equal(clipped[~over], free[~over])
    cos = torch.nn.functional.cosine_similarity(clipped, free, dim=1)[(n_free > c)[:, 0]]
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)


def test_lora_branch_starts_as_the_teacher_learns_and_leaves_the_teacher_alone(repos):
    prior = make_prior(repos)
    cams = cameras()
    cond = prior.condition("a red cube", cameras=cams)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([200, 700])
    x_t = 0.7 * x0 + 0.7 * torch.randn(2, 4, 16, 16, generator=g)
    teacher_cond, teacher_uncond = prior.predict_noise(x_t, t, cond)

    lora = LoraVariational(prior, LoraConfig(lr=1e-2, camera_dropout=0.0))
    cam = camera_features(cond, cams)
    assert cam.shape == (2, 16) and not lora.uses_class_embedding
    # Zero-initialised LoRA B and camera MLP: the variational branch is the teacher's conditional one.
    assert torch.allclose(lora.predict(x_t, t, cond, cam), teacher_cond, atol=1e-5)
    assert torch.equal(prior.predict_noise(x_t, t, cond)[0], teacher_cond)

    # Fixed evaluation draws; the LoRA's diffusion loss on these renders must fall.
    t_eval = torch.tensor([100, 300, 500, 800])
    noise_eval = torch.randn(4, 4, 16, 16, generator=g)
    x0_eval = torch.cat([x0, x0])
    cond_eval = prior.condition("a red cube", cameras=orbit_cameras(4, 20.0, 2.0, width=SIZE, height=SIZE))
    cam_eval = torch.cat([cam, cam])

    def eval_loss():
        a = prior.alphas_cumprod[t_eval].view(-1, 1, 1, 1)
        x = a.sqrt() * x0_eval + (1 - a).sqrt() * noise_eval
        with torch.no_grad():
            return float(((lora.predict(x, t_eval, cond_eval, cam_eval) - noise_eval) ** 2).mean())

    before = eval_loss()
    for _ in range(15):
        assert lora.update(x0, cond, cam) == {}  # queued: nothing trains until the step is taken
        stats = lora.step()
    after = eval_loss()
    assert after < 0.8 * before, (before, after)
    lora_b = [p for n, p in prior.unet.named_parameters() if "lora_B.vsd" in n]
    assert lora_b and max(float(p.abs().max()) for p in lora_b) > 1e-4  # the LoRA itself learned

    # The teacher is untouched and the adapter is off outside the LoRA branch.
    assert torch.equal(prior.predict_noise(x_t, t, cond)[0], teacher_cond)
    with torch.no_grad():  # batch 2 here vs 4 in predict_noise: equal up to kernel rounding
        assert torch.allclose(prior.denoiser(x_t, t, cond.embeds), teacher_cond, atol=1e-4)
    assert (lora.predict(x_t, t, cond, cam) - teacher_cond).abs().max() > 1e-3
    # The camera now matters to the LoRA branch (and only there).
    assert (lora.predict(x_t, t, cond, cam) - lora.predict(x_t, t, cond, cam.flip(0))).abs().max() > 1e-4


def test_unet_with_a_class_embedding_takes_the_camera_through_it(repos):
    prior = make_prior(repos, "sd_camera")
    cams = cameras()
    cond = prior.condition("a red cube", cameras=cams)
    assert cond.camera.shape == (2, 8)
    objective = build(ObjectiveConfig(kind="vsd"), prior)
    assert objective.variational.uses_class_embedding
    image = torch.rand(2, 3, SIZE, SIZE, requires_grad=True)
    loss, stats = objective(image, cond, 0.0, cameras=cams)
    loss.backward()
    stats.update(objective.step())  # as the runner does after its optimizer step
    assert objective.variational.camera_mlp is None
    assert stats["lora_loss"] > 0 and float(image.grad.abs().sum()) > 0


def _vsd_steps(prior, cond, cams, steps, seed, objective=None, kind="vsd", **cfg):
    """Run `steps` objective calls on one leaf image; returns (objective, [g on x0 per step])."""
    if objective is None:
        torch.manual_seed(0)  # LoRA A init
        objective = build(ObjectiveConfig(kind=kind, guidance_scale=7.5, lora=LoraConfig(lr=1e-2), **cfg), prior)
    torch.manual_seed(seed)  # LoRA training draws
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3), requires_grad=True)
    grads = []
    for step in range(steps):
        loss, _ = objective(image, cond, step / 4, cameras=cams, generator=g)
        loss.backward()
        objective.step()  # the LoRA trains after the step, as in the runner
        grads.append(objective.last_grad.clone())
    return objective, grads


def test_checkpoint_restores_lora_camera_mlp_and_optimiser(repos):
    cams = cameras()
    prior_a = make_prior(repos)
    cond = prior_a.condition("a red cube", cameras=cams)
    a, _ = _vsd_steps(prior_a, cond, cams, steps=2, seed=1)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)

    prior_b = make_prior(repos)
    torch.manual_seed(123)  # a different LoRA init, overwritten by the checkpoint
    b = build(ObjectiveConfig(kind="vsd", guidance_scale=7.5, lora=LoraConfig(lr=1e-2)), prior_b)
    b.load_state_dict(torch.load(buffer, weights_only=False))
    # One more step from the same state: identical g, and identical parameters after the LoRA's
    # AdamW step (which needs the restored moments to match).
    _, (g_a,) = _vsd_steps(prior_a, cond, cams, steps=1, seed=7, objective=a)
    _, (g_b,) = _vsd_steps(prior_b, cond, cams, steps=1, seed=7, objective=b)
    assert g_a.abs().max() > 1e-3 and torch.allclose(g_a, g_b, atol=1e-6)
    sa, sb = a.state_dict()["variational"], b.state_dict()["variational"]
    assert sa["lora"].keys() == sb["lora"].keys() and len(sa["lora"]) > 0
    for k in sa["lora"]:
        assert torch.allclose(sa["lora"][k], sb["lora"][k], atol=1e-7), k
    assert any(v.abs().max() > 0 for k, v in sa["lora"].items() if "lora_B" in k)
    for k, v in sa["camera_mlp"].items():
        assert torch.allclose(v, sb["camera_mlp"][k], atol=1e-7), k


@pytest.mark.parametrize("l_u,l_v,reference", [(1.0, 0.0, "sds"), (0.0, 1.0, "vsd")])
def test_dsd_reduces_to_sds_and_vsd_with_a_real_lora(repos, l_u, l_v, reference):
    cams = cameras()
    runs = {}
    for kind, cfg in (("dsd", dict(dsd_unconditional=l_u, dsd_variational=l_v)), (reference, {})):
        prior = make_prior(repos)
        cond = prior.condition("a red cube", cameras=cams)
        _, runs[kind] = _vsd_steps(prior, cond, cams, steps=2, seed=5, kind=kind, **cfg)
    for a, b in zip(runs["dsd"], runs[reference]):
        assert b.abs().max() > 1e-3
        assert torch.equal(a, b)  # bit for bit


@pytest.mark.parametrize("kind", ["sds", "vsd", "dsd"])
def test_one_step_on_a_rendered_gaussian_scene_moves_it(repos, kind):
    from renderers.gaussian.scene import GaussianConfig, GaussianScene

    prior = make_prior(repos)
    scene = GaussianScene(GaussianConfig(num_points=300, backend="torch", seed=0))
    optimizer = torch.optim.Adam(scene.param_groups(), eps=1e-15)
    before = {k: v.detach().clone() for k, v in scene.params.items()}
    cams = cameras()
    cond = prior.condition("a red cube", cameras=cams)
    objective = build(ObjectiveConfig(kind=kind, pgc=PGCConfig(enabled=True, threshold=0.05)), prior)
    out = scene.render(cams)
    loss, stats = objective(out, cond, progress=0.3, cameras=cams)
    optimizer.zero_grad()
    loss.backward()
    for name, p in scene.params.items():
        assert torch.isfinite(p.grad).all(), name
    assert float(scene.params["sh0"].grad.abs().sum()) > 0 and float(scene.params["means"].grad.abs().sum()) > 0
    optimizer.step()
    moved = {k: float((scene.params[k].detach() - v).abs().max()) for k, v in before.items()}
    assert moved["sh0"] > 1e-4 and moved["means"] > 1e-5, moved
    # The step's record is complete once backward has run (the PGC hook fills the image part).
    for key in ("t", "guidance_scale", "grad_norm", "image_grad_norm_before", "image_grad_norm_after",
                "image_pgc_clipped_fraction"):
        assert key in stats and isinstance(stats[key], float), key
    assert stats["image_grad_norm_after"] <= stats["image_grad_norm_before"] + 1e-9
    stats.update(objective.step())
    if kind != "sds":
        assert stats["lora_loss"] > 0


def test_image_space_target_is_the_decoded_latent_target_and_skips_the_encoder(repos):
    """target_space="image": d loss / d image = (image - D(x0 - g)) / B with the same g as the
    latent path, at the render's resolution, and the encoder is never differentiated."""
    prior = make_prior(repos)
    cond = prior.condition(["a red cube", "a red cube"], cameras=None)
    base = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))   # not the prior's 32 px
    grads = {}
    for space in ("latent", "image"):
        image = base.clone().requires_grad_(True)
        objective = build(ObjectiveConfig(kind="sds", guidance_scale=7.5, target_space=space), prior)
        calls = []
        hook = prior.vae.encoder.register_full_backward_hook(lambda *a: calls.append(1))
        loss, _ = objective(image, cond, 0.5, generator=torch.Generator().manual_seed(1))
        loss.backward()
        hook.remove()
        grads[space] = (image.grad, objective.last_grad, calls)
    image_grad, g, calls = grads["image"]
    assert not calls and grads["latent"][2], "only the latent path differentiates the encoder"
    assert torch.equal(g, grads["latent"][1]), "same direction g on both paths"
    with torch.no_grad():
        target = torch.nn.functional.interpolate(prior.decode(prior.encode(base) - g), (48, 48),
                                                 mode="bilinear", align_corners=False)
    torch.testing.assert_close(image_grad, (base - target) / 2, atol=1e-6, rtol=1e-5)


def test_unknown_target_space_is_a_clear_error(repos):
    with pytest.raises(ValueError, match="target_space"):
        build(ObjectiveConfig(kind="sds", target_space="pixels"), make_prior(repos))
