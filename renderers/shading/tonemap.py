"""Linear radiance -> display: ACES filmic tone curve and the sRGB transfer function."""

from __future__ import annotations

import torch
from torch import Tensor


def srgb_encode(linear: Tensor) -> Tensor:
    """Linear [...] in [0,1] -> sRGB-encoded [...] in [0,1] (IEC 61966-2-1 piecewise OETF)."""
    linear = linear.clamp(0.0, 1.0)
    # clamp_min keeps the pow's gradient finite at 0, where the linear branch is used anyway.
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def srgb_decode(encoded: Tensor) -> Tensor:
    """sRGB-encoded [...] in [0,1] -> linear [...] in [0,1]; inverse of `srgb_encode`."""
    encoded = encoded.clamp(0.0, 1.0)
    return torch.where(encoded <= 0.04045, encoded / 12.92, ((encoded.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def aces_filmic(linear: Tensor) -> Tensor:
    """Linear radiance [...] >= 0 -> tone-mapped linear [...] in [0,1].

    Narkowicz 2015, "ACES Filmic Tone Mapping Curve": (x(ax+b)) / (x(cx+d)+e).
    """
    x = linear.clamp_min(0.0)
    return ((x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14)).clamp(0.0, 1.0)


def tonemap(linear: Tensor, exposure: float = 0.0, method: str = "aces") -> Tensor:
    """Linear radiance [...,3] -> display sRGB [...,3] in [0,1].

    exposure: in stops (multiplies by 2**exposure). method: "aces" (filmic curve) or
    "clamp" (no curve, values above 1 clip).
    """
    x = linear * (2.0 ** exposure)
    if method == "aces":
        x = aces_filmic(x)
    elif method != "clamp":
        raise ValueError(f"unknown tone mapping {method!r}; use 'aces' or 'clamp'")
    return srgb_encode(x)
