"""CUDA path: nerfacc's occupancy grid skips empty space, then packed volume rendering.

Only ever called on CUDA tensors: nerfacc's grid traversal and packed kernels are CUDA-only
(on CPU they try to JIT-compile and fail). `NerfScene` picks this path when its tensors are
on a GPU; `volume.render_rays_dense` is the reference it is tested against.
"""

from __future__ import annotations

from typing import Callable

import nerfacc
import torch
from torch import Tensor, nn

from renderers.nerf.volume import RayOutputs


class OccupancyGrid(nn.Module):
    """An `nerfacc.OccGridEstimator` over the cube [-bound, bound]^3 plus its render call."""

    def __init__(self, bound: float, resolution: int = 64, threshold: float = 0.01, update_every: int = 16):
        super().__init__()
        self.estimator = nerfacc.OccGridEstimator(roi_aabb=[-bound] * 3 + [bound] * 3, resolution=resolution, levels=1)
        self.threshold = threshold
        self.update_every = update_every

    @torch.no_grad()
    def update(self, step: int, density_fn: Callable[[Tensor], Tensor], step_size: float) -> None:
        """Refresh occupancy every `update_every` steps; occupancy = sigma * step (nerfacc's opacity proxy)."""
        self.estimator.update_every_n_steps(
            step, occ_eval_fn=lambda x: density_fn(x) * step_size, occ_thre=self.threshold, n=self.update_every
        )

    @torch.no_grad()
    def ensure_initialised(self, density_fn: Callable[[Tensor], Tensor], step_size: float) -> None:
        """A fresh estimator marks every cell empty; fill it once from the current field."""
        if not bool(self.estimator.binaries.any()):
            # Step 0 counts as warm-up, so every cell is evaluated.
            self.estimator._update(step=0, occ_eval_fn=lambda x: density_fn(x) * step_size, occ_thre=self.threshold)

    def render_rays(
        self,
        field,
        origins: Tensor,
        dirs: Tensor,
        near: Tensor,
        far: Tensor,
        step_size: float,
        stratified: bool = False,
        normals: str = "analytic",
    ) -> RayOutputs:
        """Same inputs and outputs as `render_rays_dense`, sampling at `step_size` inside occupied cells.

        origins, dirs [R,3] on CUDA, near, far [R]; early ray termination at transmittance 1e-4.
        """
        R = origins.shape[0]

        def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
            # Visibility only: no graph for these extra samples.
            with torch.no_grad():
                t_mid = 0.5 * (t_starts + t_ends)[:, None]
                return field.density(origins[ray_indices] + t_mid * dirs[ray_indices])

        ray_indices, t_starts, t_ends = self.estimator.sampling(
            origins, dirs, sigma_fn=sigma_fn, t_min=near, t_max=far,
            render_step_size=step_size, stratified=stratified,
        )
        t_mid = 0.5 * (t_starts + t_ends)
        points = origins[ray_indices] + t_mid[:, None] * dirs[ray_indices]
        sigma, rgb, normal = field(points, dirs[ray_indices], normals)
        weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, sigma, ray_indices=ray_indices, n_rays=R)

        def accumulate(values: Tensor | None) -> Tensor:
            return nerfacc.accumulate_along_rays(weights, values, ray_indices=ray_indices, n_rays=R)

        return RayOutputs(
            rgb=accumulate(rgb),
            alpha=accumulate(None).squeeze(-1),
            distance=accumulate(t_mid[:, None]).squeeze(-1),
            normal=None if normal is None else accumulate(normal),
            n_samples=int(t_starts.shape[0]),
        )
