"""Analytic priors: diffusion teachers whose noise prediction is exact, for tests and docs.

The data distribution is an isotropic Gaussian mixture over small "images" x0 [C,h,w].
Under the forward process x_t = sqrt(a) x0 + sqrt(1-a) eps, component k becomes
N(sqrt(a) mu_k, (a s_k^2 + 1 - a) I), so the score of the noisy marginal, and with it the
ideal epsilon prediction eps(x_t, t) = -sqrt(1-a) grad log p_t(x_t), is closed form.
Driving particles with an objective against such a prior checks its gradient maths with no
network in the way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from core.priors.base import Cond


def scaled_linear_alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                                 beta_end: float = 0.012) -> Tensor:
    """[T] alphas_cumprod of Stable Diffusion's "scaled_linear" beta schedule."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class GaussianMixture:
    """Isotropic Gaussian mixture over x0 of shape `means.shape[1:]`.

    means [K,*shape], stds [K] (> 0), weights [K] (normalised here; default uniform).
    """

    def __init__(self, means: Tensor, stds: Tensor | float, weights: Tensor | None = None) -> None:
        self.means = means.float()
        K = means.shape[0]
        self.stds = torch.as_tensor(stds, dtype=torch.float32).expand(K).clone()
        w = torch.ones(K) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.log_weights = torch.log(w / w.sum())

    @property
    def shape(self) -> torch.Size:
        return self.means.shape[1:]

    def eps(self, x_t: Tensor, a: Tensor) -> Tensor:
        """Exact noise prediction. x_t [B,*shape], a [B] = alphas_cumprod[t] -> eps [B,*shape]."""
        B, D = x_t.shape[0], self.means[0].numel()
        x = x_t.reshape(B, 1, D).double()
        a = a.double().view(B, 1)
        mu = self.means.reshape(1, -1, D).double()
        var = a * self.stds.double().view(1, -1) ** 2 + (1 - a)  # [B,K] noisy component variances
        diff = x - a.sqrt().unsqueeze(-1) * mu  # [B,K,D]
        log_p = self.log_weights.double().view(1, -1) - 0.5 * D * var.log() - 0.5 * (diff**2).sum(-1) / var
        resp = torch.softmax(log_p, dim=1)  # posterior over components given x_t
        score = -(resp.unsqueeze(-1) * diff / var.unsqueeze(-1)).sum(1)
        return (-(1 - a).sqrt() * score).reshape(x_t.shape).to(x_t.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """[n,*shape] samples of x0."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        noise = torch.randn(n, *self.shape, generator=generator)
        return self.means[k] + self.stds[k].view(n, *([1] * len(self.shape))) * noise


class AnalyticPrior:
    """A `core.priors.base.Prior` whose conditional and unconditional branches are exact
    Gaussian-mixture scores. Pixel prior: `encode`/`decode` are the identity, so "images"
    are x0 [B,*shape] directly (any values, not only [0,1]).

    Conditioning: `embeds` [B,1,1] is 1 for the conditional branch and 0 for the
    unconditional one; `denoiser` picks the mixture per batch element from it.
    """

    def __init__(self, conditional: GaussianMixture, unconditional: GaussianMixture,
                 num_train_timesteps: int = 1000) -> None:
        if conditional.shape != unconditional.shape:
            raise ValueError("conditional and unconditional mixtures must share one x0 shape")
        self.conditional = conditional
        self.unconditional = unconditional
        self.alphas_cumprod = scaled_linear_alphas_cumprod(num_train_timesteps)

    def encode(self, images: Tensor) -> Tensor:
        return images

    def decode(self, x0: Tensor) -> Tensor:
        return x0

    def condition(self, prompt: str | list[str] = "", negative_prompt: str = "", cameras: Any = None) -> Cond:
        B = len(prompt) if isinstance(prompt, list) else (len(cameras) if cameras is not None else 1)
        return Cond(embeds=torch.ones(B, 1, 1), uncond_embeds=torch.zeros(B, 1, 1))

    def predict_noise(self, x_t: Tensor, t: Tensor, cond: Cond) -> tuple[Tensor, Tensor]:
        a = self.alphas_cumprod[t]
        return self.conditional.eps(x_t, a), self.unconditional.eps(x_t, a)

    def denoiser(self, x_t: Tensor, t: Tensor, embeds: Tensor, camera: Tensor | None = None,
                 extras: dict | None = None) -> Tensor:
        a = self.alphas_cumprod[t]
        use_cond = (embeds.reshape(embeds.shape[0], -1)[:, 0] > 0.5).view(-1, *([1] * (x_t.ndim - 1)))
        return torch.where(use_cond, self.conditional.eps(x_t, a), self.unconditional.eps(x_t, a))


class GaussianFitVariational:
    """VSD's variational score for analytic tests: the exact epsilon of a Gaussian fitted to
    the particles (no network), i.e. what a perfectly trained LoRA would predict if the
    particles' distribution were Gaussian. Satisfies `core.distill.objectives.VariationalScore`.

    `update` refits mean and variance to the particles it is shown; `predict` uses the last
    fit, so it lags the particles by one step exactly as the LoRA does. isotropic: one
    variance pooled over all dimensions (a sharper estimate with few particles), else per
    dimension. alphas_cumprod [T] must be the prior's.
    """

    def __init__(self, alphas_cumprod: Tensor, particles: Tensor, isotropic: bool = True) -> None:
        self.alphas_cumprod = alphas_cumprod
        self.isotropic = isotropic
        self.mean = torch.zeros(())
        self.var = torch.ones(())
        self.update(particles, None, None)

    def predict(self, x_t: Tensor, t: Tensor, cond: Cond | None, camera: Tensor | None) -> Tensor:
        a = self.alphas_cumprod[t].view(-1, *([1] * (x_t.ndim - 1)))
        return (1 - a).sqrt() * (x_t - a.sqrt() * self.mean) / (a * self.var + 1 - a)

    def update(self, x0: Tensor, cond: Cond | None, camera: Tensor | None) -> dict[str, float]:
        """Refit to particles x0 [B,*shape], B >= 2."""
        x0 = x0.detach()
        self.mean = x0.mean(0)
        dev2 = (x0 - self.mean) ** 2
        B = x0.shape[0]
        self.var = (dev2.mean() if self.isotropic else dev2.mean(0)) * B / (B - 1)
        return {"variational_std": float(self.var.mean().sqrt())}

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var = state["mean"], state["var"]


def isotropic_gaussian(mean: Tensor, std: float) -> GaussianMixture:
    """One-component mixture N(mean, std^2 I); mean [*shape]."""
    return GaussianMixture(mean.unsqueeze(0), torch.tensor([float(std)]))


def particle_std(x: Tensor) -> float:
    """Pooled standard deviation of particles x [B,*shape] about their mean (for reports)."""
    return float(((x - x.mean(0)) ** 2).mean().sqrt()) * math.sqrt(x.shape[0] / max(1, x.shape[0] - 1))
