"""Densification: gsplat's strategies over a Gaussian scene's parameters and its optimizer.

`Densifier` wraps `gsplat.strategy.DefaultStrategy` (3DGS clone/split/prune, Kerbl et al.
2023) or `MCMCStrategy` (3DGS-MCMC, Kheradmand et al. 2024). gsplat wants one optimizer
per parameter; scorelift builds one optimizer with one named group per parameter (from
`param_groups`), so `optimizer_views` hands gsplat a per-name view of each group that
shares the real optimizer's `param_groups` entry and `state`. When gsplat swaps in a
resized parameter, the real optimizer therefore sees it too, with its Adam moments
resized in step.

gsplat's MCMCStrategy calls CUDA-only ops (the eq. 9 relocation kernel, the fused
covariance); `TorchMCMCStrategy` is the same strategy on torch ops, so it runs on the CPU.
Only `compute_relocation` still uses gsplat's kernel, for CUDA tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from gsplat.strategy import DefaultStrategy, MCMCStrategy
from gsplat.strategy.ops import _multinomial_sample, _update_param_with_optimizer, remove, reset_opa
from gsplat.utils import normalized_quat_to_rotmat
from torch import Tensor


@dataclass
class DensifyConfig:
    """When and how Gaussians are grown, pruned or relocated.

    Score-distillation gradients are not reconstruction gradients: their size depends on
    the objective's weighting and guidance scale, so `grow_grad2d` (mean screen-space
    gradient norm, in gsplat's [-1,1]-normalised units) must be tuned per objective.
    3DGS reconstruction uses 0.0002; DreamGaussian uses 0.01 for SDS.
    """

    strategy: Literal["default", "mcmc", "none"] = "default"
    grow_grad2d: float = 0.01
    grow_scale3d: float = 0.01   # relative to scene_scale: at or below -> duplicate, above -> split
    prune_scale3d: float = 0.1   # relative to scene_scale: larger ones pruned after the first reset
    prune_opa: float = 0.005     # opacity below which a Gaussian is pruned (MCMC: relocated)
    scene_scale: float = 1.0     # generated objects live in the unit sphere
    refine_start: int = 100
    refine_stop: int = 3000
    refine_every: int = 100
    reset_every: int = 0         # opacity reset period in steps; 0 disables it
    max_gaussians: int = 200_000
    mcmc_noise_lr: float = 5e5   # 3DGS-MCMC position noise, times the means learning rate
    mcmc_opacity_reg: float = 0.01
    mcmc_scale_reg: float = 0.01

    def __post_init__(self) -> None:
        if self.refine_every <= 0:
            raise ValueError(f"refine_every must be positive, got {self.refine_every}")
        if self.max_gaussians <= 0:
            raise ValueError(f"max_gaussians must be positive, got {self.max_gaussians}")
        if self.reset_every < 0:
            raise ValueError(f"reset_every must be >= 0 (0 disables it), got {self.reset_every}")


class _GroupView:
    """One named group of a torch optimizer, seen as the single-group optimizer gsplat expects."""

    def __init__(self, optimizer: torch.optim.Optimizer, group: dict) -> None:
        self.param_groups = [group]
        self.state = optimizer.state


def optimizer_views(params: torch.nn.ParameterDict, optimizer: torch.optim.Optimizer) -> dict[str, _GroupView]:
    """{name: view} for every trainable parameter, checking the optimizer holds exactly these tensors."""
    views = {}
    for group in optimizer.param_groups:
        name = group.get("name")
        if name in params:
            if len(group["params"]) != 1 or group["params"][0] is not params[name]:
                raise RuntimeError(
                    f"optimizer group '{name}' does not hold the scene's current '{name}' tensor; build the "
                    "optimizer from scene.param_groups() after loading, then call scene.attach_optimizer()"
                )
            views[name] = _GroupView(optimizer, group)
    missing = [name for name, p in params.items() if p.requires_grad and name not in views]
    if missing:
        raise RuntimeError(f"optimizer has no group named {missing}; build it from scene.param_groups()")
    return views


def compute_relocation_torch(
    opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor
) -> tuple[Tensor, Tensor]:
    """Opacity and scale of each of `ratios` copies that together match one Gaussian.

    3DGS-MCMC (Kheradmand et al. 2024), eq. 9:
      o_new = 1 - (1 - o)^(1/n),
      s_new = o / (sum_{i=1..n} sum_{k=0..i-1} C(i-1,k) (-1)^k o_new^(k+1) / sqrt(k+1)) * s.
    opacities [N] in (0,1), scales [N,3] (linear), ratios [N] copies per Gaussian (clamped
    to [1, n_max]), binoms [n_max,n_max] C(n,k) (MCMCStrategy's state). The alternating
    binomial sums cancel badly in float32, so they are evaluated in float64. Returns new opacities [N] and scales [N,3].
    """
    n_max = binoms.shape[0]
    dtype = opacities.dtype
    o = opacities.double()
    n = ratios.clamp(1, n_max).long()
    o_new = 1 - (1 - o) ** (1.0 / n.double())
    k = torch.arange(n_max, device=o.device, dtype=torch.float64)
    # coef[i-1, k] = C(i-1,k) (-1)^k / sqrt(k+1); the cumulative sum over i sums i = 1..n at row n-1.
    coef = binoms.to(o.device, torch.float64) * ((-1.0) ** k) / torch.sqrt(k + 1)
    cumulative = coef.cumsum(dim=0)
    denom = (cumulative[n - 1] * o_new[:, None] ** (k + 1)).sum(-1)
    new_scales = (o / denom)[:, None] * scales.double()
    return o_new.to(dtype), new_scales.to(scales.dtype)


def compute_relocation(opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor) -> tuple[Tensor, Tensor]:
    """gsplat's CUDA kernel for CUDA tensors, `compute_relocation_torch` otherwise (same arguments)."""
    if opacities.is_cuda:
        from gsplat.relocation import compute_relocation as cuda_relocation

        return cuda_relocation(opacities, scales, ratios.clone(), binoms)
    return compute_relocation_torch(opacities, scales, ratios, binoms)


@torch.no_grad()
def _relocated_copies(params, binoms: Tensor, sampled: Tensor, min_opacity: float) -> None:
    """Give the `sampled` [M] source Gaussians the eq. 9 opacity/scale of their copy count (in place)."""
    opacities = torch.sigmoid(params["opacities"])
    new_opacities, new_scales = compute_relocation(
        opacities[sampled], torch.exp(params["scales"])[sampled], torch.bincount(sampled)[sampled] + 1, binoms
    )
    eps = torch.finfo(torch.float32).eps
    params["opacities"].data[sampled] = torch.logit(new_opacities.clamp(min_opacity, 1 - eps))
    params["scales"].data[sampled] = torch.log(new_scales)


@torch.no_grad()
def relocate(params, optimizers, dead: Tensor, binoms: Tensor, min_opacity: float) -> None:
    """Move dead Gaussians (`dead` [N] bool) onto live ones drawn by opacity (gsplat `ops.relocate`)."""
    alive = (~dead).nonzero(as_tuple=True)[0]
    dead_idx = dead.nonzero(as_tuple=True)[0]
    sampled = alive[_multinomial_sample(torch.sigmoid(params["opacities"][alive]), len(dead_idx))]
    _relocated_copies(params, binoms, sampled, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        p[dead_idx] = p[sampled]
        return torch.nn.Parameter(p, requires_grad=p.requires_grad)

    def optimizer_fn(key: str, v: Tensor) -> Tensor:
        v[sampled] = 0
        return v

    _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)


@torch.no_grad()
def sample_add(params, optimizers, n: int, binoms: Tensor, min_opacity: float) -> None:
    """Append `n` copies of Gaussians drawn by opacity (gsplat `ops.sample_add`)."""
    sampled = _multinomial_sample(torch.sigmoid(params["opacities"]), n)
    _relocated_copies(params, binoms, sampled, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        return torch.nn.Parameter(torch.cat([p, p[sampled]]), requires_grad=p.requires_grad)

    def optimizer_fn(key: str, v: Tensor) -> Tensor:
        return torch.cat([v, torch.zeros((n, *v.shape[1:]), device=v.device, dtype=v.dtype)])

    _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)


@torch.no_grad()
def inject_noise(params, scaler: float) -> None:
    """3DGS-MCMC position noise, shaped by each covariance and large only for transparent Gaussians."""
    opacities = torch.sigmoid(params["opacities"])
    rotmats = normalized_quat_to_rotmat(F.normalize(params["quats"], dim=-1))
    covars = rotmats @ torch.diag_embed(torch.exp(params["scales"]) ** 2) @ rotmats.transpose(-1, -2)
    gate = torch.sigmoid(100 * ((1 - opacities) - 0.995))  # gsplat's op_sigmoid(1 - opacity)
    noise = torch.randn_like(params["means"]) * gate[:, None] * scaler
    params["means"].add_(torch.einsum("nij,nj->ni", covars, noise))


@dataclass
class TorchMCMCStrategy(MCMCStrategy):
    """gsplat's MCMCStrategy (same fields, same step) on torch ops: every `refine_every` steps
    relocate Gaussians with opacity <= min_opacity onto live ones and add 5 % (up to cap_max),
    then, every step, perturb positions with opacity-gated noise."""

    @torch.no_grad()
    def step_post_backward(self, params, optimizers, state: dict[str, Any], step: int, info: dict | None,
                           lr: float) -> None:
        """lr: the means' learning rate, which scales the position noise."""
        binoms = state["binoms"] = state["binoms"].to(params["means"].device)
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            dead = torch.sigmoid(params["opacities"]) <= self.min_opacity
            if dead.any() and not dead.all():
                relocate(params, optimizers, dead, binoms, self.min_opacity)
            n = len(params["means"])
            n_new = max(0, min(self.cap_max, int(1.05 * n)) - n)
            if n_new:
                sample_add(params, optimizers, n_new, binoms, self.min_opacity)
        inject_noise(params, scaler=lr * self.noise_lr)


class Densifier:
    """Runs one densification strategy over a ParameterDict with keys means, quats, scales
    (log), opacities (logit), sh0[, shN] and the optimizer passed to `step`."""

    def __init__(self, cfg: DensifyConfig) -> None:
        self.cfg = cfg
        # gsplat 1.5.3 never resets opacities (`step % reset_every == 0 & step > 0` parses as a
        # chained comparison ending in `0 > 0`), so `step` does it; gsplat still reads reset_every
        # to start pruning large Gaussians, hence "never" when resets are off.
        never = 2**62
        if cfg.strategy == "default":
            self.strategy = DefaultStrategy(
                prune_opa=cfg.prune_opa, grow_grad2d=cfg.grow_grad2d, grow_scale3d=cfg.grow_scale3d,
                prune_scale3d=cfg.prune_scale3d, refine_start_iter=cfg.refine_start,
                refine_stop_iter=cfg.refine_stop, refine_every=cfg.refine_every,
                reset_every=cfg.reset_every or never,
            )
            self.state: dict[str, Any] = self.strategy.initialize_state(scene_scale=cfg.scene_scale)
        elif cfg.strategy == "mcmc":
            self.strategy = TorchMCMCStrategy(
                cap_max=cfg.max_gaussians, noise_lr=cfg.mcmc_noise_lr, refine_start_iter=cfg.refine_start,
                refine_stop_iter=cfg.refine_stop, refine_every=cfg.refine_every, min_opacity=cfg.prune_opa,
            )
            self.state = self.strategy.initialize_state()
        else:
            self.strategy = None
            self.state = {}

    @property
    def needs_means2d_grad(self) -> bool:
        """Whether `step` reads the gradient of the projected means (render must retain it)."""
        return self.cfg.strategy == "default"

    @torch.no_grad()
    def step(self, params: torch.nn.ParameterDict, optimizer: torch.optim.Optimizer | None, step: int,
             info: dict | None) -> dict[str, int]:
        """After backward and the optimizer step: grow / prune / relocate. Returns counts for logging.

        info: the rasteriser's meta (means2d with .grad [C,N,2], radii [C,N,2], width, height,
        n_cameras, gaussian_ids); renders without a gradient (e.g. previews) are skipped.
        """
        if self.strategy is None or (self.cfg.strategy == "default" and step >= self.cfg.refine_stop):
            return {}  # (MCMC keeps perturbing positions after its refine window, as gsplat does)
        if optimizer is None:
            raise RuntimeError("densification needs the optimizer: call scene.attach_optimizer(optimizer) first")
        views = optimizer_views(params, optimizer)
        n_before = len(params["means"])
        if self.cfg.strategy == "default":
            if info is None or getattr(info.get("means2d"), "grad", None) is None:
                return {}
            self.strategy.step_post_backward(params, views, self.state, step, info, packed=False)
            if self.cfg.reset_every and step % self.cfg.reset_every == 0:
                reset_opa(params, views, self.state, value=self.cfg.prune_opa * 2.0)
            self._enforce_cap(params, views)
        else:
            lr = views["means"].param_groups[0]["lr"]
            self.strategy.step_post_backward(params, views, self.state, step, info, lr=lr)
        return {"n_gaussians": len(params["means"]), "n_added": len(params["means"]) - n_before}

    def _enforce_cap(self, params, views) -> None:
        excess = len(params["means"]) - self.cfg.max_gaussians
        if excess > 0:
            # Drop the most transparent ones: they contribute least to any render.
            drop = torch.zeros(len(params["means"]), dtype=torch.bool, device=params["means"].device)
            drop[torch.argsort(params["opacities"])[:excess]] = True
            remove(params, views, self.state, drop)

    def regularisers(self, params: torch.nn.ParameterDict) -> dict[str, Tensor]:
        """3DGS-MCMC's L1 opacity and scale regularisers (empty for other strategies)."""
        if self.cfg.strategy != "mcmc":
            return {}
        return {
            "opacity_reg": self.cfg.mcmc_opacity_reg * torch.sigmoid(params["opacities"]).mean(),
            "scale_reg": self.cfg.mcmc_scale_reg * torch.exp(params["scales"]).mean(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.update(state)
