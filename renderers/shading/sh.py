"""Diffuse irradiance from 9 spherical-harmonic coefficients of the environment.

Ramamoorthi & Hanrahan 2001, "An Efficient Representation for Irradiance Environment
Maps": the clamped-cosine kernel is nearly band-limited to l <= 2, so projecting the
radiance onto 9 real SH and scaling band l by A_l gives irradiance to ~1% on average.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from renderers.shading.envmap import equirect_directions, equirect_solid_angles

# Convolution of the clamped cosine with band l (R&H 2001 eq. 8): A_0 = pi, A_1 = 2pi/3, A_2 = pi/4.
_COSINE_BANDS = (math.pi,) + (2 * math.pi / 3,) * 3 + (math.pi / 4,) * 5


def sh9_basis(directions: Tensor) -> Tensor:
    """Real SH Y_lm for l <= 2 at unit directions [...,3] -> [...,9], ordered
    (0,0), (1,-1), (1,0), (1,1), (2,-2), (2,-1), (2,0), (2,1), (2,2) (R&H 2001 eq. 3)."""
    x, y, z = directions.unbind(-1)
    return torch.stack([
        torch.full_like(x, 0.282095),
        0.488603 * y, 0.488603 * z, 0.488603 * x,
        1.092548 * x * y, 1.092548 * y * z, 0.315392 * (3 * z * z - 1), 1.092548 * x * z, 0.546274 * (x * x - y * y),
    ], dim=-1)


def project_sh9(envmap: Tensor) -> Tensor:
    """Equirect radiance [H,W,C] -> SH coefficients L_lm [9,C] (R&H 2001 eq. 10), exact solid angles."""
    H, W, _ = envmap.shape
    basis = sh9_basis(equirect_directions(H, W, envmap.device))  # [H,W,9]
    weights = equirect_solid_angles(H, W, envmap.device).unsqueeze(-1)  # [H,1,1]
    return torch.einsum("hwk,hwc->kc", basis * weights, envmap)


def sh9_irradiance(coeffs: Tensor, normals: Tensor) -> Tensor:
    """Irradiance E(n) [...,C] at unit normals [...,3] from coefficients [9,C] (R&H 2001 eq. 7)."""
    bands = torch.tensor(_COSINE_BANDS, dtype=coeffs.dtype, device=coeffs.device).unsqueeze(-1)
    return sh9_basis(normals) @ (bands * coeffs)
