"""3D Gaussians -> triangle mesh (DreamGaussian's hand-off, with an automatic level).

The density of the Gaussians at x is the sum of their opacity-weighted kernels,
    rho(x) = sum_i o_i exp(-0.5 (x - mu_i)^T Sigma_i^-1 (x - mu_i)),   Sigma_i = R_i S_i^2 R_i^T
(Kerbl et al. 2023, "3D Gaussian Splatting", Eq. 4), evaluated on grid nodes inside each
Gaussian's 3-sigma box only, so memory stays bounded by `max_elements` whatever N and the
grid size. The same pass accumulates opacity-weighted colours, which give the vertex colours.
The iso-surface itself is core.export.extract's (silhouette-matched level, tightened box).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from gsplat.utils import normalized_quat_to_rotmat
from torch import Tensor

from core.export.extract import IsoSurfaceConfig, extract_iso_surface, extraction_cameras
from renderers.gaussian.ply import SH_C0, GaussianData
from renderers.mesh import TriangleMesh

CUTOFF_SIGMAS = 3.0


def _window_sizes(limit: int) -> list[int]:
    """Cube window sides tried in turn, growing by about 1.5x: little wasted work per Gaussian."""
    sizes, s = [], 1
    while s < limit:
        sizes.append(s)
        s = max(s + 1, int(s * 1.5))
    return sizes + [limit]


@torch.no_grad()
def gaussian_grid(data: GaussianData, lo: Tensor, hi: Tensor, shape: tuple[int, int, int],
                  max_elements: int = 1 << 21) -> Tensor:
    """[Rx,Ry,Rz,4] (density, density-weighted r, g, b) on the nodes of the grid over [lo, hi].

    Colours are the degree-0 SH colours (view-independent) clamped to [0,1]. Each Gaussian,
    widened by half a voxel (see below), touches the nodes of its axis-aligned 3-sigma box;
    `max_elements` bounds the (Gaussian, node) pairs held at once.
    """
    means = data.means.float()
    opacity = torch.sigmoid(data.logit_opacities.float())
    rot = normalized_quat_to_rotmat(F.normalize(data.quats.float(), dim=-1))  # [N,3,3]
    scales = data.log_scales.float().exp()
    size = torch.tensor(shape)
    voxel = (hi - lo) / (size - 1)
    # A grid of spacing h cannot hold detail finer than h: widen every Gaussian by sigma = h/2
    # and keep its mass (Mip-Splatting's 3D smoothing filter, Yu et al. 2024, Eq. 7), so a
    # shell thinner than a voxel stays a continuous sheet instead of aliasing into holes.
    scales = (scales ** 2 + (0.5 * float(voxel.max())) ** 2).sqrt()
    opacity = opacity * (data.log_scales.float().exp() / scales).prod(-1)
    covariance = rot @ torch.diag_embed(scales ** 2) @ rot.transpose(1, 2)
    precision = rot @ torch.diag_embed(scales ** -2) @ rot.transpose(1, 2)
    colors = (0.5 + SH_C0 * data.sh0.float()[:, 0]).clamp(0, 1)
    extent = CUTOFF_SIGMAS * torch.diagonal(covariance, dim1=1, dim2=2).sqrt()
    first = torch.ceil((means - extent - lo) / voxel).long().clamp_min(0)
    last = torch.minimum(torch.floor((means + extent - lo) / voxel).long(), size - 1)
    side = (last - first + 1).max(-1).values
    alive = ((last >= first).all(-1)) & (opacity > 1e-6)
    out = torch.zeros(int(size.prod()), 4)
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1])
    previous = 0
    for s in _window_sizes(int(side.max()) if alive.any() else 1):
        members = (alive & (side > previous) & (side <= s)).nonzero().squeeze(-1)
        previous = s
        if len(members) == 0:
            continue
        offsets = torch.stack(torch.meshgrid(*(torch.arange(s),) * 3, indexing="ij"), -1).reshape(-1, 3)
        per_chunk = max(1, max_elements // len(offsets))
        for start in range(0, len(members), per_chunk):
            g = members[start:start + per_chunk]
            index = first[g, None] + offsets  # [n,s^3,3]
            valid = (index <= last[g, None]).all(-1)
            d = lo + index * voxel - means[g, None]
            q = torch.einsum("nki,nij,nkj->nk", d, precision[g], d)
            weight = opacity[g, None] * torch.exp(-0.5 * q)
            valid &= q <= CUTOFF_SIGMAS ** 2 * 3  # the box's corners lie past 3 sigma anyway
            flat = (index * strides).sum(-1)[valid]
            w = weight[valid]
            values = torch.cat([w[:, None], w[:, None] * colors[g, None].expand(-1, s ** 3, -1)[valid]], -1)
            out.index_add_(0, flat, values)
    return out.view(*shape, 4)


def default_bound(data: GaussianData) -> float:
    """Half-side of a cube around the origin holding the Gaussians that matter (99.5% of the
    visible ones, plus three typical sigmas), at least 1e-3."""
    visible = torch.sigmoid(data.logit_opacities) > 0.05
    means = data.means[visible] if visible.any() else data.means
    reach = torch.quantile(means.abs().max(-1).values.float(), 0.995)
    sigma = data.log_scales.float().exp().max(-1).values.median()
    return max(float(reach + CUTOFF_SIGMAS * sigma), 1e-3)


def _trilinear(grid: Tensor, lo: Tensor, hi: Tensor, points: Tensor) -> Tensor:
    """[P,C] values of grid [Rx,Ry,Rz,C] at points [P,3] (node-aligned, clamped at the border)."""
    volume = grid.permute(3, 0, 1, 2)[None].float()
    normalised = (2 * (points - lo) / (hi - lo) - 1).flip(-1).float()
    values = F.grid_sample(volume, normalised[None, None, None], mode="bilinear", padding_mode="border",
                           align_corners=True)
    return values[0, :, 0, 0].t()


@torch.no_grad()
def gaussians_to_mesh(scene, cfg: IsoSurfaceConfig | None = None, bound: float | None = None) -> TriangleMesh:
    """A closed, vertex-coloured TriangleMesh of a GaussianScene's surface.

    bound: half-side of the cube searched (default `default_bound`). The level is chosen
    against the scene's alpha from cfg.views cameras (see core.export.extract).
    """
    cfg = cfg or IsoSurfaceConfig()
    data = scene.to_data()
    data = GaussianData(*(t.detach().cpu() for t in (data.means, data.quats, data.log_scales,
                                                     data.logit_opacities, data.sh0, data.shN)))
    bound = bound if bound is not None else default_bound(data)
    cache: dict = {}

    def grid_fn(lo: Tensor, hi: Tensor, shape: tuple[int, int, int]) -> Tensor:
        cache["grid"] = gaussian_grid(data, lo, hi, shape)
        return cache["grid"][..., 0]

    cameras = extraction_cameras(cfg, bound)
    alpha = scene.render(cameras.to(scene.device), background=torch.zeros(3)).alpha[..., 0].cpu()
    surface = extract_iso_surface(grid_fn, bound, cfg, cameras, alpha)
    vertices = torch.from_numpy(surface.vertices)
    # extract_iso_surface meshes the last grid it asked for: its colour channels are cached
    sums = _trilinear(cache["grid"], surface.lo, surface.hi, vertices)
    colors = (sums[:, 1:] / sums[:, :1].clamp_min(1e-12)).clamp(0, 1)
    return TriangleMesh(vertices, torch.from_numpy(surface.faces), vertex_colors=colors)
