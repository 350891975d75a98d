"""Schedules over training progress p in [0,1]: which diffusion timesteps to distil at,
how to weight them (w(t)), and scalar schedules for guidance scales and term weights.

Timesteps are given as fractions of the prior's T training steps (0.02 = step 20 of 1000),
so one preset serves priors with any T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

TimestepSchedule = Literal["uniform", "linear", "sqrt"]
Weighting = Literal["sds", "uniform", "fantasia", "sqrt"]


@dataclass
class ScalarSchedule:
    """A number that moves from `start` to `end` over training progress.

    kind: "constant" (always `start`), "linear", or "cosine" (half cosine, flat at both ends).
    """

    kind: Literal["constant", "linear", "cosine"] = "constant"
    start: float = 1.0
    end: float | None = None

    def __post_init__(self) -> None:
        if self.kind != "constant" and self.end is None:
            raise ValueError(f"a {self.kind} schedule needs an `end` value")

    def __call__(self, progress: float) -> float:
        p = min(max(float(progress), 0.0), 1.0)
        if self.kind == "constant" or self.end is None:
            return self.start
        if self.kind == "linear":
            return self.start + (self.end - self.start) * p
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * p))


def as_schedule(value: float | ScalarSchedule | None) -> ScalarSchedule | None:
    """Config values may be a plain number (constant) or a ScalarSchedule."""
    if value is None or isinstance(value, ScalarSchedule):
        return value
    return ScalarSchedule("constant", float(value))


@dataclass
class ScheduleConfig:
    """Timestep sampling and weighting.

    t_min, t_max:         fractions of T bounding the sampled timesteps at p = 0.
    timestep_schedule:    "uniform": t ~ U[t_min, t_max] throughout;
                          "linear": the bounds move linearly to (t_min_end, t_max_end) over
                          training (DreamGaussian's annealing of the maximum timestep) and
                          t ~ U[bounds];
                          "sqrt": deterministic t = t_max - (t_max - t_min) sqrt(p) (HiFA).
    t_min_end, t_max_end: the "linear" bounds at p = 1 (None: unchanged).
    weighting:            w(t): "sds" 1 - a_t (DreamFusion), "uniform" 1,
                          "fantasia"/"sqrt" sqrt(a_t)(1 - a_t) (Fantasia3D).
    """

    t_min: float = 0.02
    t_max: float = 0.98
    timestep_schedule: TimestepSchedule = "uniform"
    t_min_end: float | None = None
    t_max_end: float | None = None
    weighting: Weighting = "sds"

    def __post_init__(self) -> None:
        for name in ("t_min", "t_max", "t_min_end", "t_max_end"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} is a fraction of the prior's timesteps and must lie in [0,1], got {v}")
        if self.t_min > self.t_max:
            raise ValueError(f"t_min ({self.t_min}) must not exceed t_max ({self.t_max})")
        lo, hi = self.bounds(1.0)
        if lo > hi:
            raise ValueError(f"at the end of training t_min ({lo}) would exceed t_max ({hi})")

    def bounds(self, progress: float) -> tuple[float, float]:
        """(lo, hi) fractions of T that timesteps are drawn from at `progress`."""
        p = min(max(float(progress), 0.0), 1.0)
        if self.timestep_schedule != "linear":
            return self.t_min, self.t_max
        lo_end = self.t_min if self.t_min_end is None else self.t_min_end
        hi_end = self.t_max if self.t_max_end is None else self.t_max_end
        # DreamGaussian (Tang et al. 2024): anneal the timestep range linearly with progress.
        return self.t_min + (lo_end - self.t_min) * p, self.t_max + (hi_end - self.t_max) * p


def sample_timesteps(
    cfg: ScheduleConfig,
    progress: float,
    batch: int,
    num_train_timesteps: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """[batch] integer timesteps in [0, num_train_timesteps) for training progress in [0,1]."""
    T = num_train_timesteps
    lo, hi = cfg.bounds(progress)
    if cfg.timestep_schedule == "sqrt":
        p = min(max(float(progress), 0.0), 1.0)
        # HiFA (Zhu et al., ICLR 2024), timestep annealing: t = t_max - (t_max - t_min) sqrt(p).
        t = round((hi - (hi - lo) * math.sqrt(p)) * (T - 1))
        return torch.full((batch,), t, dtype=torch.long, device=device)
    lo_i, hi_i = round(lo * (T - 1)), round(hi * (T - 1))
    u = torch.rand(batch, generator=generator, device=device if generator is None else generator.device)
    return (lo_i + (u * (hi_i - lo_i + 1)).floor().long().clamp(max=hi_i - lo_i)).to(device)


def timestep_weight(alphas_cumprod: Tensor, t: Tensor, weighting: Weighting) -> Tensor:
    """w(t) [B] for timesteps t [B]; alphas_cumprod [T]."""
    a = alphas_cumprod[t].float()
    if weighting == "sds":
        return 1.0 - a  # DreamFusion (Poole et al. 2023) eq. 3: w(t) = sigma_t^2
    if weighting == "uniform":
        return torch.ones_like(a)
    if weighting in ("fantasia", "sqrt"):
        return a.sqrt() * (1.0 - a)  # Fantasia3D (Chen et al. 2023): w(t) = sqrt(a_t)(1 - a_t)
    raise ValueError(f"unknown weighting '{weighting}'; expected one of sds, uniform, fantasia, sqrt")
