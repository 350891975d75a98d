"""Bilinear texture lookups, differentiable in the texture and the UVs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_texture(texture: Tensor, uv: Tensor, wrap: bool = False) -> Tensor:
    """Bilinear samples [...,C] of texture [Ht,Wt,C] at uv [...,2] in [0,1].

    OpenGL/trimesh UV convention: u runs left to right, v bottom to top, so texture row 0 is
    v = 1. Outside [0,1] the border texel repeats, or the texture tiles with `wrap`.
    """
    if wrap:
        uv = uv - uv.detach().floor()
    lead = uv.shape[:-1]
    # grid_sample wants x, y in [-1,1] with y = -1 at the top row
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1).reshape(1, 1, -1, 2)
    image = texture.permute(2, 0, 1)[None].to(grid.dtype)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].transpose(0, 1).reshape(*lead, texture.shape[-1])
