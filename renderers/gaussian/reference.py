"""Dense reference rasteriser: every pixel against every depth-sorted Gaussian, plain autograd.

Slow and memory hungry by design (pixels x Gaussians); it exists so that tests and
bench/render.py can hold the tiled backend (`renderers.gaussian.tiles`) to the same
compositing rules written the obvious way. Never used for rendering.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from renderers.gaussian.rasterize import render_with
from renderers.gaussian.tiles import ALPHA_MAX, ALPHA_THRESHOLD, T_MIN

MAX_BLOCK_ELEMENTS = 1 << 22  # pixels x Gaussians per block; several blocks are checkpointed


def rasterize_reference(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                        viewmats: Tensor, Ks: Tensor, width: int, height: int, near_plane: float = 0.01,
                        far_plane: float = 1e10, sh_degree: int | None = None,
                        backgrounds: Tensor | None = None, render_mode: str = "RGB") -> tuple[Tensor, Tensor, dict]:
    """`renderers.gaussian.rasterize` (same arguments and outputs) with dense compositing."""
    return render_with(composite_dense, means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                       near_plane, far_plane, sh_degree, backgrounds, render_mode)


def composite_dense(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, radii: Tensor,
                    depths: Tensor, width: int, height: int,
                    backgrounds: Tensor | None = None) -> tuple[Tensor, Tensor, dict]:
    """Composite every visible Gaussian at every pixel, nearest first.

    means2d [C,N,2], conics [C,N,3], opacities [C,N], colors [C,N,D], radii [C,N,2]
    (0: culled), depths [C,N], backgrounds [C,D] or None.
    Returns colours [C,H,W,D], alphas [C,H,W,1] and an empty meta dict.
    """
    C, N, D = colors.shape
    dtype, device = means2d.dtype, means2d.device
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype, device=device) + 0.5,
                            torch.arange(width, dtype=dtype, device=device) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys], dim=-1).reshape(-1, 2)  # [HW,2]
    out_colors, out_alphas = [], []
    for cam in range(C):
        visible = (radii[cam] > 0).all(dim=-1)
        order = torch.argsort(depths[cam].detach(), stable=True)
        order = order[visible[order]]
        args = (means2d[cam, order], conics[cam, order], opacities[cam, order], colors[cam, order])
        blocks = pixels.split(max(1, MAX_BLOCK_ELEMENTS // max(1, len(order))))
        rgb, T = [], []
        for pix in blocks:
            # Checkpointing keeps big dense renders (bench) in memory; small ones skip its overhead.
            if torch.is_grad_enabled() and len(blocks) > 1:
                c, t = checkpoint(_composite_pixels, pix, *args, use_reentrant=False)
            else:
                c, t = _composite_pixels(pix, *args)
            rgb.append(c)
            T.append(t)
        rgb, T = torch.cat(rgb), torch.cat(T)
        if backgrounds is not None:
            rgb = rgb + T[:, None] * backgrounds[cam]
        out_colors.append(rgb.reshape(height, width, D))
        out_alphas.append((1.0 - T).reshape(height, width, 1))
    return torch.stack(out_colors), torch.stack(out_alphas), {}


def _composite_pixels(pixels: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor,
                      colors: Tensor) -> tuple[Tensor, Tensor]:
    """pixels [P,2] against depth-sorted Gaussians [M,...]: colour [P,D] and final transmittance [P]."""
    if len(means2d) == 0:
        return pixels.new_zeros(len(pixels), colors.shape[-1]), pixels.new_ones(len(pixels))
    delta = pixels[:, None, :] - means2d[None, :, :]  # [P,M,2]
    dx, dy = delta[..., 0], delta[..., 1]
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp_max(opacities * torch.exp(-power), ALPHA_MAX)
    alpha = torch.where((power >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    # Sequential products, as the CUDA kernel's T *= (1 - alpha); skipped alphas multiply by 1.
    T_after = torch.cumprod(1.0 - alpha, dim=-1)
    T_before = torch.cat([torch.ones_like(T_after[:, :1]), T_after[:, :-1]], dim=-1)
    # The kernel stops before the Gaussian that would make T <= 1e-4; T is monotone, so a prefix.
    included = T_after > T_MIN
    weights = torch.where(included, alpha * T_before, torch.zeros_like(alpha))
    T_final = torch.where(included, 1.0 - alpha, torch.ones_like(alpha)).prod(dim=-1)
    return weights @ colors, T_final
