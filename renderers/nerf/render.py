"""Cameras -> images for any field: rays, ray-sphere bounds, chunked volume rendering, z-depth."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from core.cameras import Cameras
from renderers.base import RenderOutput
from renderers.nerf.occupancy import OccupancyGrid
from renderers.nerf.volume import render_rays_dense, ray_sphere_bounds

# Below this alpha the normalised depth is ill-conditioned (d(depth)/d(alpha) ~ 1/alpha^2).
_DEPTH_ALPHA_EPS = 1e-4


def render_field(
    field,
    cameras: Cameras,
    background: Tensor | Callable[[Tensor], Tensor],
    bound_radius: float = 1.0,
    n_samples: int = 64,
    max_samples_per_chunk: int = 1 << 18,
    stratified: bool = False,
    normals: str = "analytic",
    occupancy: OccupancyGrid | None = None,
) -> RenderOutput:
    """Volume-render `field` (see renderers.nerf.field) inside the sphere |x| < bound_radius.

    background: [B,3] colours in [0,1], or a function of unit ray dirs [N,3] -> rgb [N,3].
    Only rays that meet the sphere are marched, at most `max_samples_per_chunk` field samples
    at a time. `occupancy` given (CUDA only): nerfacc occupancy-grid marching with step
    2 * bound_radius / n_samples; else the dense path with n_samples intervals per ray.
    Returns rgb [B,H,W,3] composited over the background, alpha [B,H,W,1], depth [B,H,W,1]
    (expected z-depth along the camera's forward axis, normalised by alpha, 0 where alpha is 0),
    normal [B,H,W,3] (weight-accumulated, normalised, world space; None if normals is "none").
    normals: "analytic" | "finite_difference" | "none" (see field.density_and_normals).
    """
    B, H, W = len(cameras), cameras.height, cameras.width
    origins, dirs = cameras.rays()
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    n_rays = origins.shape[0]
    near, far, hit = ray_sphere_bounds(origins, dirs, bound_radius)
    hit_index = hit.nonzero().squeeze(-1)

    rays_per_chunk = max(1, max_samples_per_chunk // n_samples)
    chunks = []
    for start in range(0, hit_index.shape[0], rays_per_chunk):
        index = hit_index[start : start + rays_per_chunk]
        args = (field, origins[index], dirs[index], near[index], far[index])
        if occupancy is not None:
            chunks.append(occupancy.render_rays(*args, 2 * bound_radius / n_samples, stratified, normals))
        else:
            chunks.append(render_rays_dense(*args, n_samples, stratified, normals))

    def scatter(values: list[Tensor], width: int) -> Tensor:
        """Per-hit-ray chunks -> [n_rays, width] with zeros for rays that miss the sphere."""
        full = torch.zeros(n_rays, width, device=origins.device, dtype=origins.dtype)
        if not values:
            return full
        return full.index_copy(0, hit_index, torch.cat(values).reshape(-1, width).to(full.dtype))

    rgb = scatter([c.rgb for c in chunks], 3)
    alpha = scatter([c.alpha for c in chunks], 1)
    distance = scatter([c.distance for c in chunks], 1)

    # Ray distance -> z-depth: scale by the cosine between the ray and the camera forward axis.
    forward = -cameras.c2w[:, :3, 2]
    cosine = (dirs.view(B, H * W, 3) * forward[:, None, :]).sum(-1).reshape(-1, 1)
    depth = distance / alpha.clamp_min(_DEPTH_ALPHA_EPS) * cosine

    if callable(background):
        background_rgb = background(dirs)
    else:
        background_rgb = background.to(rgb)[:, None, :].expand(B, H * W, 3).reshape(-1, 3)
    rgb = rgb + (1 - alpha) * background_rgb

    normal = None
    if normals != "none":
        normal = F.normalize(scatter([c.normal for c in chunks], 3), dim=-1, eps=1e-12).view(B, H, W, 3)
    return RenderOutput(
        rgb=rgb.view(B, H, W, 3),
        alpha=alpha.view(B, H, W, 1),
        depth=depth.view(B, H, W, 1),
        normal=normal,
        extras={"n_samples": sum(c.n_samples for c in chunks), "n_rays_hit": int(hit_index.shape[0])},
    )
