"""Split-sum specular pre-filtering: the environment convolved with GGX lobes, one level per roughness.

Karis 2013, "Real Shading in Unreal Engine 4", eq. 7 ("PrefilterEnvMap"): with n = v = r
assumed, level k holds sum L(l) n.l / sum n.l over GGX samples of roughness k/(K-1).
Each sample reads a pre-averaged copy of the environment whose texels match the
sample's solid angle (Colbert & Krivanek 2007, GPU Gems 3 ch. 20, eq. 13), so a few
dozen samples give a smooth result.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from renderers.shading.brdf import ggx_distribution, hammersley, importance_sample_ggx, roughness_to_alpha
from renderers.shading.envmap import downsample_equirect, equirect_directions, sample_equirect


def equirect_mip_chain(envmap: Tensor, min_height: int = 2) -> list[Tensor]:
    """[envmap, envmap/2, ...] each [H_j,W_j,C], halving while the height stays >= min_height and even."""
    chain = [envmap]
    while chain[-1].shape[0] % 2 == 0 and chain[-1].shape[1] % 2 == 0 and chain[-1].shape[0] // 2 >= min_height:
        chain.append(downsample_equirect(chain[-1]))
    return chain


def _tangent_frame(normal: Tensor) -> tuple[Tensor, Tensor]:
    """Two unit tangents [...,3] completing `normal` [...,3] to an orthonormal frame."""
    up = torch.zeros_like(normal)
    near_pole = normal[..., 2].abs() > 0.999
    up[..., 0] = near_pole.to(normal.dtype)
    up[..., 2] = (~near_pole).to(normal.dtype)
    tangent = torch.cross(up, normal, dim=-1)
    tangent = tangent / tangent.norm(dim=-1, keepdim=True)
    return tangent, torch.cross(normal, tangent, dim=-1)


def _sample_chain(chain: list[Tensor], directions: Tensor, lod: Tensor) -> Tensor:
    """Trilinear lookup: directions [N,S,3], per-sample level of detail lod [S] -> [N,S,C]."""
    lod = lod.clamp(0, len(chain) - 1)
    lo = lod.floor().long().clamp(max=max(len(chain) - 2, 0))
    out = directions.new_zeros(*directions.shape[:-1], chain[0].shape[-1])
    for j in lo.unique().tolist():
        idx = (lo == j).nonzero().squeeze(-1)
        dirs = directions[:, idx]
        value = sample_equirect(chain[j], dirs)
        if j + 1 < len(chain):
            w = (lod[idx] - j).clamp(0, 1).unsqueeze(-1)
            value = value * (1 - w) + sample_equirect(chain[j + 1], dirs) * w
        out[:, idx] = value
    return out


def prefilter_specular(envmap: Tensor, levels: int = 6, samples: int = 96, min_height: int = 8) -> list[Tensor]:
    """GGX-prefiltered radiance, level k for roughness k/(levels-1): a list of [H_k,W_k,C] equirects.

    envmap: [H,W,C] linear radiance, H even. Level 0 (mirror) is the map itself; level k
    has height max(min_height, H / 2^k). Differentiable in `envmap`.
    """
    if levels < 2:
        raise ValueError(f"need at least 2 roughness levels, got {levels}")
    H, W, _ = envmap.shape
    chain = equirect_mip_chain(envmap)
    xi = hammersley(samples, envmap.device)
    texel_solid_angle = 4 * math.pi / (H * W)
    out = [envmap]
    for k in range(1, levels):
        alpha = roughness_to_alpha(torch.tensor(k / (levels - 1), device=envmap.device))
        h_local = importance_sample_ggx(xi, alpha)  # [S,3]
        n_dot_h = h_local[:, 2]
        # With n = v, l = reflect(-n, h) has n.l = 2 (n.h)^2 - 1 and pdf(l) = D / 4.
        n_dot_l = 2 * n_dot_h * n_dot_h - 1
        keep = n_dot_l > 0
        h_local, n_dot_h, n_dot_l = h_local[keep], n_dot_h[keep], n_dot_l[keep]
        sample_solid_angle = 4 / (len(xi) * ggx_distribution(n_dot_h, alpha))
        lod = 0.5 * torch.log2(sample_solid_angle / texel_solid_angle) + 1  # GPU Gems 3 ch. 20 eq. 13

        height = max(min_height, H >> k)
        normal = equirect_directions(height, height * W // H, envmap.device).reshape(-1, 1, 3)
        tangent, bitangent = _tangent_frame(normal)
        h = tangent * h_local[:, 0:1] + bitangent * h_local[:, 1:2] + normal * h_local[:, 2:3]  # [N,S,3]
        light = 2 * n_dot_h.unsqueeze(-1) * h - normal
        radiance = _sample_chain(chain, light, lod)
        weights = n_dot_l / n_dot_l.sum()
        out.append((radiance * weights.unsqueeze(-1)).sum(1).reshape(height, height * W // H, -1))
    return out


def sample_prefiltered(levels: list[Tensor], directions: Tensor, roughness: Tensor) -> Tensor:
    """Pre-filtered radiance [...,C] along reflected directions [...,3] for roughness [...,1] in [0,1].

    Linear in roughness between the two nearest levels.
    """
    position = roughness.clamp(0, 1) * (len(levels) - 1)
    out = 0.0
    for k, level in enumerate(levels):
        w = (1 - (position - k).abs()).clamp_min(0.0)
        if bool((w > 0).any()):
            out = out + w * sample_equirect(level, directions)
    return out
