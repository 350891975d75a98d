"""GGX / Cook-Torrance microfacet BRDF, its importance sampling and the split-sum BRDF table.

Roughness is the perceptual roughness r in [0,1] of the metallic workflow; the GGX
width is alpha = r^2 (Karis 2013, "Real Shading in Unreal Engine 4", p.3). Cosines are
clamped to >= 1e-4 so grazing angles stay finite.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

MIN_ALPHA = 1e-4  # below this GGX's D is a delta the float32 grid cannot hold
DIELECTRIC_F0 = 0.04  # reflectance at normal incidence of common dielectrics (Karis 2013, p.4)


def as_channel(value: Tensor | float, like: Tensor) -> Tensor:
    """A per-pixel scalar (float, [...] or [...,1]) as a tensor broadcastable to `like` [...,C]."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.unsqueeze(-1) if 0 < value.ndim == like.ndim - 1 else value


def roughness_to_alpha(roughness: Tensor) -> Tensor:
    # Karis 2013 p.3: alpha = roughness^2 spreads perceived roughness evenly.
    return (roughness * roughness).clamp_min(MIN_ALPHA)


def ggx_distribution(n_dot_h: Tensor, alpha: Tensor) -> Tensor:
    """Trowbridge-Reitz/GGX normal distribution D(h) [...] (Karis 2013 eq. 3)."""
    a2 = alpha * alpha
    d = n_dot_h * n_dot_h * (a2 - 1) + 1
    return a2 / (math.pi * d * d)


def fresnel_schlick(f0: Tensor, v_dot_h: Tensor) -> Tensor:
    """Schlick Fresnel F0 + (1 - F0)(1 - v.h)^5 [...,C] (Karis 2013 eq. 5, without the spherical-Gaussian fit)."""
    fc = (1 - v_dot_h).clamp(0.0, 1.0) ** 5
    return f0 + (1 - f0) * fc


def smith_visibility_height_correlated(n_dot_v: Tensor, n_dot_l: Tensor, alpha: Tensor) -> Tensor:
    """V = G2 / (4 n.l n.v) for height-correlated Smith-GGX [...].

    Heitz 2014, "Understanding the Masking-Shadowing Function", eq. 99, in the
    rearranged form of Filament's "Physically Based Rendering in Filament", eq. 15.
    """
    a2 = alpha * alpha
    lambda_v = n_dot_l * torch.sqrt(n_dot_v * n_dot_v * (1 - a2) + a2)
    lambda_l = n_dot_v * torch.sqrt(n_dot_l * n_dot_l * (1 - a2) + a2)
    return 0.5 / (lambda_v + lambda_l)


def smith_g_schlick_ggx(n_dot_v: Tensor, n_dot_l: Tensor, alpha: Tensor, ibl: bool = True) -> Tensor:
    """Separable Smith G with Schlick-GGX G1 [...] (Karis 2013 eq. 4).

    k = alpha/2 for image-based lighting; for analytic lights Karis remaps k = (r+1)^2/8,
    pass `ibl=False` with alpha = r^2 to get it.
    """
    k = alpha / 2 if ibl else (torch.sqrt(alpha) + 1) ** 2 / 8
    return (n_dot_v / (n_dot_v * (1 - k) + k)) * (n_dot_l / (n_dot_l * (1 - k) + k))


def cook_torrance_specular(
    normal: Tensor, view_dir: Tensor, light_dir: Tensor, f0: Tensor, roughness: Tensor
) -> Tensor:
    """Specular BRDF value f_s = D F G / (4 n.l n.v) [...,C] (Karis 2013 eq. 2).

    normal, view_dir (surface -> eye), light_dir (surface -> light): unit [...,3];
    f0: [...,C] reflectance at normal incidence; roughness: [...,1] in [0,1].
    Zero where the light or the eye is below the surface.
    """
    h = view_dir + light_dir
    h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n_dot_l_raw = (normal * light_dir).sum(-1, keepdim=True)
    n_dot_v_raw = (normal * view_dir).sum(-1, keepdim=True)
    n_dot_l, n_dot_v = n_dot_l_raw.clamp(1e-4, 1.0), n_dot_v_raw.clamp(1e-4, 1.0)
    n_dot_h = (normal * h).sum(-1, keepdim=True).clamp(0.0, 1.0)
    v_dot_h = (view_dir * h).sum(-1, keepdim=True).clamp(0.0, 1.0)
    alpha = roughness_to_alpha(roughness)
    f = ggx_distribution(n_dot_h, alpha) * smith_visibility_height_correlated(n_dot_v, n_dot_l, alpha)
    f = f * fresnel_schlick(f0, v_dot_h)
    return torch.where((n_dot_l_raw > 0) & (n_dot_v_raw > 0), f, torch.zeros_like(f))


def hammersley(n: int, device=None) -> Tensor:
    """[n,2] Hammersley points in [0,1)^2: (i/n, radical inverse of i in base 2)."""
    i = torch.arange(n, dtype=torch.int64, device=device)
    bits = torch.zeros(n, dtype=torch.float64, device=device)
    scale, rest = 0.5, i.clone()
    while bool((rest > 0).any()):
        bits += (rest & 1).double() * scale
        rest, scale = rest >> 1, scale / 2
    return torch.stack([i.double() / n, bits], dim=-1).float()


def importance_sample_ggx(xi: Tensor, alpha: Tensor) -> Tensor:
    """GGX-distributed half vectors [...,3] in the tangent frame (normal = +Z).

    xi: [...,2] uniform in [0,1); alpha: broadcastable to xi[...,0]. The pdf over half
    vectors is D(h) n.h (Karis 2013, "ImportanceSampleGGX").
    """
    phi = 2 * math.pi * xi[..., 0]
    cos_theta = torch.sqrt((1 - xi[..., 1]) / (1 + (alpha * alpha - 1) * xi[..., 1]))
    sin_theta = torch.sqrt((1 - cos_theta * cos_theta).clamp_min(0.0))
    return torch.stack([sin_theta * torch.cos(phi), sin_theta * torch.sin(phi), cos_theta], dim=-1)


@functools.lru_cache(maxsize=4)
def brdf_lut(size: int = 64, samples: int = 512) -> Tensor:
    """Split-sum environment BRDF table [size(n.v), size(roughness), 2] = (scale, bias).

    The specular integral of a GGX lobe with Schlick Fresnel under unit radiance is
    F0 * scale + bias (Karis 2013 eq. 8, "IntegrateBRDF"); here with the height-correlated
    visibility of `cook_torrance_specular`. Grid points include the ends: n.v runs over
    linspace(1/size, 1, size), roughness over linspace(0, 1, size). Estimated with
    `samples` Hammersley points importance-sampled from GGX; cached per arguments.
    """
    n_dot_v = torch.linspace(1.0 / size, 1.0, size, dtype=torch.float64).view(size, 1, 1)
    alpha = roughness_to_alpha(torch.linspace(0.0, 1.0, size, dtype=torch.float64)).view(1, size, 1)
    xi = hammersley(samples).double()
    h = importance_sample_ggx(xi.view(1, 1, samples, 2), alpha)  # [1,size,S,3]
    v = torch.stack([torch.sqrt(1 - n_dot_v * n_dot_v), torch.zeros_like(n_dot_v), n_dot_v], dim=-1)  # [size,1,1,3]
    v_dot_h = (v * h).sum(-1)
    l_z = 2 * v_dot_h * h[..., 2] - n_dot_v  # n.l of l = reflect(-v, h)
    n_dot_h = h[..., 2]
    valid = (l_z > 0).double()
    n_dot_l, v_dot_h = l_z.clamp_min(1e-8), v_dot_h.clamp_min(0.0)
    # f * n.l / pdf(l) with pdf(l) = D n.h / (4 v.h): D cancels, leaving 4 V n.l v.h / n.h.
    weight = 4 * smith_visibility_height_correlated(n_dot_v, n_dot_l, alpha) * n_dot_l * v_dot_h / n_dot_h
    weight = weight * valid
    fc = (1 - v_dot_h) ** 5
    scale = ((1 - fc) * weight).mean(-1)
    bias = (fc * weight).mean(-1)
    return torch.stack([scale, bias], dim=-1).float()


def lookup_brdf_lut(n_dot_v: Tensor, roughness: Tensor, lut: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Bilinear (scale, bias), each [...,1], for n.v [...,1] in [0,1] and roughness [...,1] in [0,1]."""
    lut = brdf_lut() if lut is None else lut
    size = lut.shape[0]
    lut = lut.to(n_dot_v.device, n_dot_v.dtype)
    # Continuous grid coordinates matching the linspace grids of `brdf_lut`.
    x = ((n_dot_v - 1.0 / size) / (1 - 1.0 / size) * (size - 1)).clamp(0, size - 1)
    y = (roughness * (size - 1)).clamp(0, size - 1)
    x0, y0 = x.floor().clamp(max=size - 2), y.floor().clamp(max=size - 2)
    wx, wy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    flat = lut.reshape(size * size, 2)

    def tap(i, j):
        return flat[(i * size + j).reshape(-1)].reshape(*i.shape[:-1], 2)

    top = tap(x0, y0) * (1 - wy) + tap(x0, y0 + 1) * wy
    bottom = tap(x0 + 1, y0) * (1 - wy) + tap(x0 + 1, y0 + 1) * wy
    ab = top * (1 - wx) + bottom * wx
    return ab[..., :1], ab[..., 1:]
