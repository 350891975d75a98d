"""render_mesh: a TriangleMesh seen by Cameras, as a RenderOutput with G-buffer extras.

Colour is the unlit base colour (vertex colours or the base-colour texture) or, for
previews and tests, a headlight Lambert term. Physically based shading lives in
`renderers/shading`; it takes the interpolated attributes from `out.extras` (world
position, normal, uv, base_color, roughness, metallic, normal_map, tangent) and re-applies
`antialias(shaded, extras["rast"], extras["neighbours"])` to its result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from core.cameras import Cameras
from renderers.base import RenderOutput, as_background

from .antialias import antialias, face_neighbours
from .mesh import TriangleMesh, vertex_normals
from .raster import Rasterization, interpolate, rasterize
from .texture import sample_texture


@dataclass
class MeshRenderConfig:
    """How a mesh is rasterised and coloured."""

    shading: Literal["unlit", "lambert"] = "unlit"
    normals: Literal["vertex", "face"] = "vertex"  # what out.normal shows
    antialias: bool = True  # also what gives vertices gradients at silhouettes
    cull_backfaces: bool = False
    near: float = 0.01
    far: float = 100.0
    tile_size: int | None = None  # None: from the typical face size on screen
    backend: Literal["auto", "torch", "nvdiffrast"] = "auto"
    ambient: float = 0.3  # lambert: light that reaches faces turned away from the headlight
    default_color: tuple[float, float, float] = (0.8, 0.8, 0.8)  # a mesh without colours or texture
    wrap_uv: bool = False


def render_mesh(
    mesh: TriangleMesh,
    cameras: Cameras,
    background: Tensor | None = None,
    cfg: MeshRenderConfig | None = None,
    neighbours: Tensor | None = None,
) -> RenderOutput:
    """Render `mesh` into B cameras.

    background: [3] or [B,3] in [0,1] (default white). neighbours: [F,3] from
    `face_neighbours(mesh.faces)`, cached by callers whose topology is fixed.
    Returns rgb [B,H,W,3], alpha [B,H,W,1] (anti-aliased), depth [B,H,W,1], normal
    [B,H,W,3] world space (0 where empty), and extras: "rast" (Rasterization), "mask"
    [B,H,W,1] hard coverage, "face_id" [B,H,W], "position" [B,H,W,3], "normal" [B,H,W,3],
    "base_color" [B,H,W,3], and when the mesh has them "uv" [B,H,W,2], "roughness"
    [B,H,W,1], "metallic" [B,H,W,1], "normal_map" [B,H,W,3] (tangent space, in [0,1]) with
    "tangent" [B,H,W,3] (world space, per face); "neighbours" [F,3].
    """
    cfg = cfg or MeshRenderConfig()
    rast = rasterize(
        mesh.vertices, mesh.faces, cameras, near=cfg.near, far=cfg.far,
        cull_backfaces=cfg.cull_backfaces, tile_size=cfg.tile_size, backend=cfg.backend,
    )
    B = len(cameras)
    position = interpolate(mesh.vertices, rast, dense=False)
    if cfg.normals == "face":
        normal = mesh.face_normals()[rast.face]
    else:
        normal = interpolate(vertex_normals(mesh.vertices, mesh.faces), rast, dense=False)
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    extras = {"rast": rast, "mask": rast.mask, "face_id": rast.face_id, "position": rast.to_dense(position),
              "normal": rast.to_dense(normal)}
    base = _base_color(mesh, rast, cfg, extras)
    color = base
    if cfg.shading == "lambert":
        to_camera = cameras.positions.to(position)[rast.batch] - position
        to_camera = to_camera / to_camera.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # two-sided, so open meshes seen from behind are not black
        cosine = (normal * to_camera).sum(-1, keepdim=True).abs()
        color = base * (cfg.ambient + (1 - cfg.ambient) * cosine)

    bg = as_background(background, B, position.device).to(position.dtype)
    mask = rast.mask
    rgba = torch.cat([rast.to_dense(color) + (1 - mask) * bg[:, None, None], mask], dim=-1)
    if cfg.antialias:
        neighbours = face_neighbours(mesh.faces) if neighbours is None else neighbours
        rgba = antialias(rgba, rast, neighbours)
        extras["neighbours"] = neighbours
    return RenderOutput(rgb=rgba[..., :3], alpha=rgba[..., 3:], depth=rast.depth, normal=extras["normal"], extras=extras)


def _base_color(mesh: TriangleMesh, rast: Rasterization, cfg: MeshRenderConfig, extras: dict) -> Tensor:
    """[N,3] base colour of the covered pixels; fills the material entries of `extras`."""
    if mesh.is_textured:
        uv = interpolate(mesh.uv, rast, faces=mesh.uv_indices(), dense=False)
        extras["uv"] = rast.to_dense(uv)
        base = sample_texture(mesh.base_color, uv, wrap=cfg.wrap_uv)
        for name in ("roughness", "metallic", "normal_map"):
            tex = getattr(mesh, name)
            if tex is not None:
                extras[name] = rast.to_dense(sample_texture(tex, uv, wrap=cfg.wrap_uv))
        if mesh.normal_map is not None:
            extras["tangent"] = rast.to_dense(_face_tangents(mesh)[rast.face])
    elif mesh.vertex_colors is not None:
        base = interpolate(mesh.vertex_colors, rast, dense=False)
    else:
        base = torch.tensor(cfg.default_color, dtype=rast.bary_covered.dtype, device=rast.pixel.device)
        base = base.expand(len(rast.pixel), 3)
    extras["base_color"] = rast.to_dense(base)
    return base


def _face_tangents(mesh: TriangleMesh) -> Tensor:
    """[F,3] unit world-space tangents (direction of increasing u) of a UV-mapped mesh.

    Solves [e1 e2] = [T B] [duv1 duv2] per face (Lengyel's tangent frame); the shading
    module orthogonalises them against the interpolated normal.
    """
    p = mesh.vertices[mesh.faces]  # [F,3,3]
    uv = mesh.uv[mesh.uv_indices()]  # [F,3,2]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    # degenerate UV triangles get det 1: any tangent in the face plane will do for them
    det = torch.where(det.abs() < 1e-12, torch.ones_like(det), det)
    tangent = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) / det[:, None]
    return tangent / tangent.norm(dim=-1, keepdim=True).clamp_min(1e-12)
