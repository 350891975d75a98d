"""NeRF -> triangle mesh: the iso-surface of the field's density (core.export.extract), with
the level matched to the field's own rendered alpha and vertex colours from its colour head."""

from __future__ import annotations

import torch
from torch import Tensor

from core.export.extract import IsoSurfaceConfig, extract_iso_surface, extraction_cameras, sample_grid
from renderers.mesh import TriangleMesh


@torch.no_grad()
def nerf_to_mesh(scene, cfg: IsoSurfaceConfig | None = None) -> TriangleMesh:
    """A closed, vertex-coloured TriangleMesh of a NerfScene (anything with `density(points)`,
    `color(points, dirs)`, `render(cameras, background)` and `cfg.bound_radius`).

    The density is zero outside the bound sphere, where the renderer never marches. Vertex
    colours are the field's colour seen along the inward normal (a camera looking at the surface).
    """
    cfg = cfg or IsoSurfaceConfig()
    bound = float(scene.cfg.bound_radius)
    device = scene.device
    was_training = scene.training
    scene.eval()  # no stratified jitter in the alpha renders

    def density(points: Tensor) -> Tensor:
        points = points.to(device)
        sigma = scene.density(points).reshape(-1)
        return torch.where(points.norm(dim=-1) <= bound, sigma, torch.zeros_like(sigma)).cpu()

    try:
        cameras = extraction_cameras(cfg, bound)
        alpha = scene.render(cameras.to(device), background=torch.zeros(3, device=device)).alpha[..., 0].cpu()
        surface = extract_iso_surface(sample_grid(density), bound, cfg, cameras, alpha)
        vertices = torch.from_numpy(surface.vertices)
        faces = torch.from_numpy(surface.faces)
        normals = TriangleMesh(vertices, faces).vertex_normals()
        colors = torch.cat([
            scene.color(vertices[s:s + 65536].to(device), -normals[s:s + 65536].to(device)).cpu()
            for s in range(0, len(vertices), 65536)
        ])
    finally:
        scene.train(was_training)
    return TriangleMesh(vertices, faces, vertex_colors=colors.clamp(0, 1).float())
