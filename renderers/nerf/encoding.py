"""Multi-resolution grid encoding in pure torch: dense 3D feature grids plus a triplane.

Why dense grids and not a hash grid (Instant-NGP) here: on CPU, `F.grid_sample` is one
fused trilinear kernel (forward and backward; the density gradient for normals is one
more backward through it), while a pure-torch hash grid costs eight gathers plus hashing per level. At the
resolutions this backend trains at (finest dense level 64^3 by default) the dense grids
fit in a few MB, so a hash table would only add collisions. The triplane (EG3D-style)
adds detail above the finest dense level at O(R^2) memory instead of O(R^3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def level_resolutions(n_levels: int, base_resolution: int, max_resolution: int) -> list[int]:
    """Geometric ladder of grid resolutions (Instant-NGP, Eq. 2: N_l = floor(N_min * b^l))."""
    if n_levels == 1:
        return [base_resolution]
    growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))
    return [int(math.floor(base_resolution * growth**level + 1e-6)) for level in range(n_levels)]


class GridEncoding(nn.Module):
    """Points in the cube [-bound, bound]^3 -> concatenated grid features.

    Levels: `n_levels` dense grids [1,F,R,R,R] with R from `base_resolution` to
    `max_resolution`, then (if `plane_resolution` > 0) three axis-aligned planes
    [3,F,P,P] whose features are summed. Output width is `output_dim`.
    """

    def __init__(
        self,
        bound: float,
        n_levels: int = 6,
        features_per_level: int = 2,
        base_resolution: int = 8,
        max_resolution: int = 64,
        plane_resolution: int = 128,
        plane_features: int = 8,
        init_scale: float = 1e-2,
    ) -> None:
        super().__init__()
        self.bound = bound
        self.resolutions = level_resolutions(n_levels, base_resolution, max_resolution)
        # Small random init (Instant-NGP uses U(-1e-4, 1e-4)); slightly larger here so the
        # MLP sees varied inputs from step 0 at these coarse resolutions.
        self.grids = nn.ParameterList(
            nn.Parameter(init_scale * (2 * torch.rand(1, features_per_level, r, r, r) - 1)) for r in self.resolutions
        )
        self.planes = (
            nn.Parameter(init_scale * (2 * torch.rand(3, plane_features, plane_resolution, plane_resolution) - 1))
            if plane_resolution > 0
            else None
        )
        self.output_dim = n_levels * features_per_level + (plane_features if plane_resolution > 0 else 0)

    def forward(self, points: Tensor) -> Tensor:
        """points [N,3] world coordinates (clamped to the cube) -> features [N, output_dim]."""
        # grid_sample wants (x,y,z) in [-1,1] indexing (W,H,D) of a [.., D,H,W] grid.
        uvw = (points / self.bound).clamp(-1.0, 1.0)
        n = uvw.shape[0]
        coords = uvw.view(1, n, 1, 1, 3)
        features = [
            F.grid_sample(grid, coords, mode="bilinear", align_corners=True).view(-1, n) for grid in self.grids
        ]
        if self.planes is not None:
            # xy, xz, yz projections, one batched 2D lookup.
            plane_coords = torch.stack([uvw[:, [0, 1]], uvw[:, [0, 2]], uvw[:, [1, 2]]]).view(3, n, 1, 2)
            plane_features = F.grid_sample(self.planes, plane_coords, mode="bilinear", align_corners=True)
            features.append(plane_features.sum(0).view(-1, n))
        return torch.cat(features, dim=0).t()
