"""The gradient maths of SDS / VSD / DSD against priors whose scores are exact.

Particles x0 in R^{3x2x2} are optimised directly (identity encode) by plain SGD. The
conditional distribution is N(mu, 0.5^2 I); the unconditional one is N(mu, 2^2 I), so CFG
sharpens the pull towards mu without moving the mode. VSD's variational branch is the
exact score of a Gaussian fitted to the particles (GaussianFitVariational), i.e. a
perfectly trained LoRA for a Gaussian particle distribution; no network is involved.
"""

import math

import pytest
import torch

from core.distill import ObjectiveConfig, build
from core.distill.analytic import (AnalyticPrior, GaussianFitVariational, GaussianMixture, isotropic_gaussian,
                                   particle_std)
from core.distill.schedules import ScalarSchedule, ScheduleConfig, sample_timesteps

SHAPE = (3, 2, 2)
TARGET_STD = 0.5


@pytest.fixture(scope="module")
def setup():
    mu = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    prior = AnalyticPrior(isotropic_gaussian(mu, TARGET_STD), isotropic_gaussian(mu, 2.0))
    return mu, prior


def drive(prior, mu, kind, steps, lr, s=1.0, l_u=0.5, l_v=0.5, n=64, init_std=0.05, record_at=()):
    """Optimise n particles, started 1.0 away from mu per element, for `steps` SGD steps.
    Returns the particles and {step: distance of their mean to mu} at `record_at`."""
    g = torch.Generator().manual_seed(1)
    x0 = mu + 1.0 + init_std * torch.randn(n, *SHAPE, generator=g)
    variational = GaussianFitVariational(prior.alphas_cumprod, x0) if kind != "sds" else None
    cfg = ObjectiveConfig(kind=kind, guidance_scale=s, dsd_unconditional=l_u, dsd_variational=l_v)
    objective = build(cfg, prior, variational=variational)
    x = x0.clone().requires_grad_(True)
    # d loss / d x0 = g / n: scale the step so each particle moves by lr * g.
    opt = torch.optim.SGD([x], lr=lr * n)
    cond = prior.condition([""] * n)
    distances = {}
    for i in range(steps):
        loss, _ = objective(x, cond, progress=i / steps, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i + 1 in record_at:
            distances[i + 1] = float((x.detach().mean(0) - mu).norm())
    return x.detach(), distances


def test_mixture_eps_is_the_exact_noisy_score():
    """eps(x_t) = -sqrt(1-a) grad log p_t(x_t), with p_t the mixture pushed through the forward process."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, *SHAPE, generator=g)
    stds = torch.tensor([0.3, 0.7, 1.2])
    mix = GaussianMixture(means, stds, torch.tensor([0.2, 0.5, 0.3]))
    x_t = torch.randn(5, *SHAPE, generator=g, dtype=torch.float64).requires_grad_(True)
    a = torch.tensor([0.9, 0.5, 0.2, 0.05, 0.99], dtype=torch.float64)
    D = math.prod(SHAPE)
    var = a[:, None] * stds.double()[None] ** 2 + 1 - a[:, None]
    diff = x_t.reshape(5, 1, D) - a.sqrt()[:, None, None] * means.double().reshape(1, 3, D)
    log_p = torch.logsumexp(mix.log_weights.double()[None] - 0.5 * D * (2 * math.pi * var).log()
                            - 0.5 * (diff**2).sum(-1) / var, dim=1)
    (score,) = torch.autograd.grad(log_p.sum(), x_t)
    expected = -(1 - a).sqrt().view(-1, 1, 1, 1) * score
    assert torch.allclose(mix.eps(x_t.detach(), a), expected, atol=1e-10)


def test_sds_converges_to_the_mode_and_collapses(setup):
    mu, prior = setup
    x, _ = drive(prior, mu, "sds", steps=400, lr=0.05)
    assert float((x.mean(0) - mu).norm()) < 0.05
    # Mode seeking: no diversity, far below the target's std of 0.5.
    assert particle_std(x) < 0.1 * TARGET_STD


def test_cfg_makes_sds_seek_the_mode_harder(setup):
    mu, prior = setup
    _, plain = drive(prior, mu, "sds", steps=100, lr=0.05, s=1.0, record_at=(50, 100))
    _, guided = drive(prior, mu, "sds", steps=100, lr=0.05, s=7.5, record_at=(50, 100))
    assert guided[50] < 0.3 * plain[50]
    assert guided[100] < 0.3 * plain[100]


def test_sds_picks_the_nearest_mode_of_a_mixture():
    mu = torch.zeros(SHAPE)
    modes = torch.stack([mu - 1.5, mu + 1.5])
    prior = AnalyticPrior(GaussianMixture(modes, 0.3), isotropic_gaussian(mu, 3.0))
    # Particles start at -0.6 / +0.6 and must each end at the nearer mode, none at the mean 0.
    # SDS averages the score over noise levels, where the modes blur into one blob around 0,
    # so its fixed point sits a little inside the mode (about 0.15 here), not on it.
    for sign in (-1.0, 1.0):
        x, _ = drive(prior, mu + sign * 0.6 - 1.0, "sds", steps=300, lr=0.05, n=16, init_std=0.1)
        per_particle = x.flatten(1).mean(1)
        assert float((per_particle - sign * 1.5).abs().max()) < 0.3, per_particle


def test_vsd_particles_spread_to_the_target_std(setup):
    mu, prior = setup
    x, _ = drive(prior, mu, "vsd", steps=300, lr=0.4)
    assert float((x.mean(0) - mu).norm()) < 0.05
    assert abs(particle_std(x) - TARGET_STD) < 0.1 * TARGET_STD  # started at 0.05


def test_dsd_spread_grows_with_the_variational_weight(setup):
    mu, prior = setup
    stds = []
    for l_v in (0.0, 0.5, 0.9, 1.0):
        x, _ = drive(prior, mu, "dsd", steps=250, lr=0.2, l_u=1.0 - l_v, l_v=l_v)
        assert float((x.mean(0) - mu).norm()) < 0.1
        stds.append(particle_std(x))
    assert all(a < b for a, b in zip(stds, stds[1:])), stds
    assert stds[0] < 0.1 * TARGET_STD
    assert abs(stds[-1] - TARGET_STD) < 0.1 * TARGET_STD


@pytest.mark.parametrize("l_u,l_v,reference", [(1.0, 0.0, "sds"), (0.0, 1.0, "vsd")])
def test_dsd_reduces_to_sds_and_vsd(setup, l_u, l_v, reference):
    """Same seed, same particles, two steps: DSD's g equals the reference objective's g."""
    mu, prior = setup
    x0 = mu + torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(5))

    def grads(kind, **weights):
        var = GaussianFitVariational(prior.alphas_cumprod, x0)
        objective = build(ObjectiveConfig(kind=kind, guidance_scale=7.5, **weights), prior, variational=var)
        g = torch.Generator().manual_seed(11)
        x = x0.clone().requires_grad_(True)
        out = []
        for step in range(2):
            loss, _ = objective(x, prior.condition([""] * 8), progress=step / 2, generator=g)
            loss.backward()
            out.append(x.grad.clone())
            with torch.no_grad():
                x -= 0.5 * x.grad
            x.grad = None
        return out

    dsd = grads("dsd", dsd_unconditional=l_u, dsd_variational=l_v)
    ref = grads(reference)
    for a, b in zip(dsd, ref):
        assert b.abs().max() > 1e-3  # a non-trivial gradient
        assert torch.equal(a, b)  # bit for bit


def test_loss_gradient_is_g_over_batch_with_clamp_and_stats(setup):
    mu, prior = setup
    x = (mu + torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2))).requires_grad_(True)
    variational = GaussianFitVariational(prior.alphas_cumprod, x.detach())
    # Unclamped first: the gradient reaching x0 is exactly g / B.
    objective = build(ObjectiveConfig(kind="dsd", guidance_scale=20.0), prior, variational=variational)
    loss, stats = objective(x, prior.condition([""] * 4), progress=0.5)
    loss.backward()
    assert torch.allclose(x.grad, objective.last_grad / 4, rtol=1e-6, atol=0)
    for key in ("grad_norm", "grad_norm_cfg", "grad_norm_unconditional", "grad_norm_variational",
                "dsd_lambda_u", "dsd_lambda_v", "t", "w_t", "guidance_scale", "image_grad_norm_before"):
        assert isinstance(stats[key], float), key
    assert stats["guidance_scale"] == 20.0 and stats["dsd_lambda_u"] == 0.5

    # A scheduled element-wise clamp, at HiFA's deterministic timestep for p = 0.25.
    clamp = ScalarSchedule("linear", 8.0, 4.0)  # 7.0 at p = 0.25: about half of this g's elements exceed it
    schedule = ScheduleConfig(timestep_schedule="sqrt")
    free = build(ObjectiveConfig(kind="sds", guidance_scale=20.0, schedule=schedule), prior)
    free(x.detach(), prior.condition([""] * 4), progress=0.25, generator=torch.Generator().manual_seed(5))
    objective = build(ObjectiveConfig(kind="sds", guidance_scale=20.0, latent_grad_clip=clamp, schedule=schedule),
                      prior)
    x.grad = None
    loss, stats = objective(x, prior.condition([""] * 4), progress=0.25, generator=torch.Generator().manual_seed(5))
    loss.backward()
    c = clamp(0.25)
    # Same draws as the unclamped run: g is its g clamped element-wise, and the logged fraction
    # is the share of its elements beyond c (some but not all here, so both branches are used).
    assert torch.equal(objective.last_grad, free.last_grad.clamp(-c, c))
    clipped = float((free.last_grad.abs() > c).float().mean())
    assert 0.05 < clipped < 0.95 and stats["latent_clipped_fraction"] == pytest.approx(clipped)
    assert stats["latent_grad_clip"] == pytest.approx(c)
    assert stats["t"] == round((0.98 - 0.96 * 0.5) * 999)


@pytest.mark.parametrize("kind", ["sds", "vsd", "dsd"])
def test_each_direction_is_its_paper_formula(setup, kind):
    """g recomputed by hand from the exact branch scores, for the same t and noise draws."""
    mu, prior = setup
    x = mu + torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(4))
    variational = GaussianFitVariational(prior.alphas_cumprod, x + 0.3 * torch.randn_like(x))
    cfg = ObjectiveConfig(kind=kind, guidance_scale=5.0, dsd_unconditional=0.3, dsd_variational=0.6,
                          schedule=ScheduleConfig(weighting="fantasia"))
    objective = build(cfg, prior, variational=variational if kind != "sds" else None)
    fit = {k: v.clone() for k, v in variational.state_dict().items()}  # the objective refits after use
    objective(x, prior.condition([""] * 6), progress=0.4, generator=torch.Generator().manual_seed(9))

    g = torch.Generator().manual_seed(9)
    t = sample_timesteps(cfg.schedule, 0.4, 6, 1000, generator=g)
    noise = torch.randn(x.shape, generator=g)
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x + (1 - a).sqrt() * noise
    e_c = prior.conditional.eps(x_t, a.flatten())
    e_u = prior.unconditional.eps(x_t, a.flatten())
    variational.load_state_dict(fit)
    e_v = variational.predict(x_t, t, None, None)
    w = a.sqrt() * (1 - a)  # Fantasia3D weighting
    if kind == "sds":
        g_ref = w * (e_u + 5.0 * (e_c - e_u) - noise)
    elif kind == "vsd":
        g_ref = w * (e_u + 5.0 * (e_c - e_u) - e_v)
    else:
        g_ref = w * (5.0 * (e_c - e_u) + 0.3 * (e_u - noise) + 0.6 * (e_u - e_v))
    assert g_ref.abs().max() > 1e-2
    assert torch.allclose(objective.last_grad, g_ref, atol=1e-5, rtol=1e-5)
