"""The teacher contract: every diffusion prior (Stable Diffusion format, Zero123, the
built-in ones, analytic test priors) looks like this to the objectives.

Classifier-free guidance is written one way everywhere (DESIGN.md), by the objective:
    eps_cfg = eps_uncond + s * (eps_cond - eps_uncond)
Priors only return the two branches, computed in one batch of 2B.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class Cond:
    """Conditioning for a batch of B renders.

    embeds:        [B,L,D] conditional embeddings (text tokens, or a reference image's CLIP embedding).
    uncond_embeds: [B,L,D] unconditional / negative-prompt embeddings.
    camera:        [B,k] camera features for the UNet's class embedding, or None when the
                   network has no camera input.
    extras:        prior-specific tensors, e.g. Zero123's reference latents [B,4,h,w]
                   concatenated to the noisy input.
    """

    embeds: Tensor
    uncond_embeds: Tensor
    camera: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.embeds.shape[0]


@runtime_checkable
class Prior(Protocol):
    """A frozen diffusion teacher that predicts noise (epsilon parametrisation).

    alphas_cumprod: [T] cumulative products of (1 - beta_t) of its training schedule,
    on the prior's device, float32. Timesteps are integer tensors in [0, T).
    """

    alphas_cumprod: Tensor

    def encode(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] in [0,1] -> x0 [B,C,h,w] float32 (latents, or scaled pixels), differentiable."""

    def decode(self, x0: Tensor) -> Tensor:
        """x0 [B,C,h,w] -> images [B,3,H,W] in [0,1], float32."""

    def condition(self, prompt: str | list[str] | Tensor, negative_prompt: str = "", cameras: Any = None) -> Cond:
        """Conditioning for a batch; `cameras` (core.cameras.Cameras, B of them) selects
        view-dependent prompts and camera features where the prior uses them. Text priors
        take a prompt; view-conditioned priors (Zero123) take the reference image [1,3,H,W]."""

    def predict_noise(self, x_t: Tensor, t: Tensor, cond: Cond) -> tuple[Tensor, Tensor]:
        """(eps_cond, eps_uncond), each shaped like x_t [B,C,h,w], from one network batch of 2B.

        t: [B] integer timesteps. Runs with any attached adapters (LoRA) disabled. The
        prior builds its own unconditional inputs (e.g. Zero123's zeroed concat latents).
        eps comes back in x_t's dtype.
        """

    def denoiser(self, x_t: Tensor, t: Tensor, embeds: Tensor, camera: Tensor | None = None,
                 extras: dict | None = None) -> Tensor:
        """One branch of the network as it stands (active adapters included): eps [B,C,h,w].
        `extras` (e.g. extras["concat"]) is used exactly as given. VSD's LoRA branch and
        training use this."""


def add_noise(x0: Tensor, noise: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps (DDPM forward process), a_t = alphas_cumprod[t]."""
    a = alphas_cumprod[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def device_dtype(device: str | torch.device) -> torch.dtype:
    """fp16 on CUDA, fp32 on CPU (CPU half kernels are slow or missing)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32
