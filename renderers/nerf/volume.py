"""Dense volume rendering of rays through a field, with nerfacc's [n_rays, n_samples] path.

This path is pure torch (nerfacc's dense functions need no CUDA kernel), so it is the CPU
renderer and the reference the CUDA occupancy-grid path is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import nerfacc
import torch
from torch import Tensor


@dataclass
class RayOutputs:
    """Per-ray results of one chunk of R rays (foreground only, no background).

    rgb [R,3] premultiplied by alpha, alpha [R] in [0,1], distance [R] = sum_i w_i t_i
    (ray distance premultiplied by alpha), normal [R,3] = sum_i w_i n_i or None,
    n_samples: how many field samples were evaluated.
    """

    rgb: Tensor
    alpha: Tensor
    distance: Tensor
    normal: Tensor | None
    n_samples: int


def ray_sphere_bounds(origins: Tensor, dirs: Tensor, radius: float) -> tuple[Tensor, Tensor, Tensor]:
    """Where rays cross the sphere |x| = radius centred at the origin.

    origins, dirs: [R,3], dirs unit length. Returns near [R] >= 0, far [R] and hit [R] (bool:
    the ray meets the sphere ahead of its origin). A ray starting inside has near = 0.
    """
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    disc = b * b - c
    root = disc.clamp_min(0).sqrt()
    near = (-b - root).clamp_min(0)
    far = -b + root
    hit = (disc > 0) & (far > near)
    return near, far, hit


def sample_intervals(
    near: Tensor, far: Tensor, n_samples: int, stratified: bool, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Split [near, far] (each [R]) into n_samples intervals -> t_starts, t_ends [R, n_samples].

    Eval: equal bins. Training (stratified, NeRF Eq. 2): every inner bin edge is jittered
    uniformly within half a bin either way, so the intervals still tile [near, far] exactly
    while sample midpoints cover the whole ray over iterations.
    """
    u = torch.linspace(0.0, 1.0, n_samples + 1, device=near.device, dtype=near.dtype).expand(near.shape[0], -1)
    if stratified and n_samples > 1:
        jitter = torch.rand(near.shape[0], n_samples - 1, device=near.device, dtype=near.dtype, generator=generator)
        inner = u[:, 1:-1] + (jitter - 0.5) / n_samples
        u = torch.cat([u[:, :1], inner, u[:, -1:]], dim=-1)
    edges = near[:, None] + (far - near)[:, None] * u
    return edges[:, :-1].contiguous(), edges[:, 1:].contiguous()


def render_rays_dense(
    field,
    origins: Tensor,
    dirs: Tensor,
    near: Tensor,
    far: Tensor,
    n_samples: int,
    stratified: bool = False,
    normals: str = "analytic",
) -> RayOutputs:
    """Volume-render R rays with n_samples intervals each between near and far.

    field(points [N,3], dirs [N,3], normals) -> sigma [N], rgb [N,3], normal [N,3]|None.
    origins, dirs [R,3] (dirs unit), near, far [R]. Densities are taken at interval midpoints;
    weights are NeRF's w_i = T_i (1 - exp(-sigma_i delta_i)) (NeRF, Eq. 3) via nerfacc.
    """
    R = origins.shape[0]
    t_starts, t_ends = sample_intervals(near, far, n_samples, stratified)
    t_mid = 0.5 * (t_starts + t_ends)
    points = origins[:, None, :] + t_mid[..., None] * dirs[:, None, :]
    sample_dirs = dirs[:, None, :].expand(R, n_samples, 3)
    sigma, rgb, normal = field(points.reshape(-1, 3), sample_dirs.reshape(-1, 3), normals)
    weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, sigma.view(R, n_samples))
    return RayOutputs(
        rgb=nerfacc.accumulate_along_rays(weights, rgb.view(R, n_samples, 3)),
        alpha=nerfacc.accumulate_along_rays(weights, None).squeeze(-1),
        distance=nerfacc.accumulate_along_rays(weights, t_mid[..., None]).squeeze(-1),
        normal=None if normal is None else nerfacc.accumulate_along_rays(weights, normal.view(R, n_samples, 3)),
        n_samples=R * n_samples,
    )
