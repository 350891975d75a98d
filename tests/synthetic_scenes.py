"""Gaussian scenes built by hand for the cleanliness and export tests: a splat torus lying flat
(axis +Z), optionally with its hole plugged by white Gaussians or white floaters above it.

Every Gaussian is isotropic on a cubic lattice of spacing `spacing` (sigma 0.6 spacing,
so neighbours overlap into a solid), which makes the covered regions known in closed form:
seen from straight above, the torus covers the annulus R - r < rho < R + r and a plug
covers the disc rho < R - r.
"""

from __future__ import annotations

import math

import torch

from renderers.gaussian.ply import SH_C0, GaussianData
from renderers.gaussian.scene import GaussianScene

MAJOR, MINOR = 0.45, 0.15
RED = (0.8, 0.1, 0.1)
WHITE = (1.0, 1.0, 1.0)
SPACING = 0.04


def lattice(lo: float, hi: float, spacing: float) -> torch.Tensor:
    axis = torch.arange(lo, hi + 1e-9, spacing)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def blobs(points: torch.Tensor, rgb, sigma: float, opacity: float) -> GaussianData:
    n = len(points)
    return GaussianData(
        means=points.float(), quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        log_scales=torch.full((n, 3), math.log(sigma)),
        logit_opacities=torch.full((n,), math.log(opacity / (1 - opacity))),
        sh0=((torch.tensor(rgb).expand(n, 3) - 0.5) / SH_C0)[:, None, :], shN=torch.zeros(n, 0, 3))


def merge(*parts: GaussianData) -> GaussianData:
    return GaussianData(*(torch.cat([getattr(p, f) for p in parts]) for f in
                          ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN")))


def torus_scene(plug: bool = False, floaters: bool = False, spacing: float = SPACING) -> GaussianScene:
    """A red solid torus (major MAJOR, minor MINOR); plug: white Gaussians filling its hole
    (the disc rho < MAJOR - MINOR, |z| <= MINOR / 2); floaters: three white clumps of 8
    Gaussians well above and beside it."""
    grid = lattice(-0.7, 0.7, spacing)
    rho = grid[:, :2].norm(dim=-1)
    tube = ((rho - MAJOR) ** 2 + grid[:, 2] ** 2).sqrt()
    parts = [blobs(grid[tube <= MINOR], RED, 0.6 * spacing, 0.9)]
    if plug:
        disc = (rho < MAJOR - MINOR - 0.5 * spacing) & (grid[:, 2].abs() <= MINOR / 2)
        parts.append(blobs(grid[disc], WHITE, 0.6 * spacing, 0.95))
    if floaters:
        centres = torch.tensor([[0.0, 0.0, 0.55], [0.5, 0.3, 0.45], [-0.45, -0.4, 0.5]])
        offsets = lattice(-0.5 * spacing, 0.5 * spacing, spacing)   # 2x2x2 clump per centre
        parts.append(blobs((centres[:, None] + offsets[None]).reshape(-1, 3), WHITE, 0.6 * spacing, 0.8))
    return GaussianScene.from_data(merge(*parts))
