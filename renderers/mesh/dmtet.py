"""DMTetScene: a deformable tetrahedral grid with a learnable SDF (Shen et al. 2021, "Deep
Marching Tetrahedra"), whose surface is extracted by marching tetrahedra and rasterised
at every render.

Parameters live on the grid vertices: the signed distance (< 0 inside), an offset bounded
to `deform_scale` grid spacings by a tanh, and an RGB colour that is interpolated onto the
surface with the same edge weights as the positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.cameras import Cameras
from core.config import to_dict
from core.io import save_torch
from renderers.base import RenderOutput

from .mesh import TriangleMesh
from .render import MeshRenderConfig, render_mesh
from .tets import marching_tets, tet_edges, tet_grid

LEARNABLE = ("sdf", "deform", "colors")


@dataclass
class DMTetSceneConfig:
    """Grid size and what is optimised."""

    resolution: int = 32  # grid cells per axis
    scale: float = 1.0  # the grid spans [-scale, scale]^3; objects live in the unit sphere
    # Offsets are bounded to a quarter cell so neighbouring vertices cannot swap places,
    # which would invert tetrahedra and flip the orientation of the extracted triangles.
    deform_scale: float = 0.25
    init_radius: float = 0.5  # the SDF starts as a sphere of this radius
    learn: tuple[str, ...] = LEARNABLE
    lr_sdf: float = 1e-3
    lr_deform: float = 1e-3
    lr_colors: float = 1e-2
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    render: MeshRenderConfig = field(default_factory=MeshRenderConfig)

    def __post_init__(self) -> None:
        unknown = [name for name in self.learn if name not in LEARNABLE]
        if unknown:
            raise ValueError(f"learn: unknown {unknown}; choose from {', '.join(LEARNABLE)}")
        if self.resolution < 2:
            raise ValueError(f"resolution must be >= 2 cells per axis, got {self.resolution}")


class DMTetScene(nn.Module):
    """Learnable SDF + vertex offsets + colours on a tet grid; renders its marching-tets surface."""

    def __init__(self, cfg: DMTetSceneConfig | None = None, device=None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or DMTetSceneConfig()
        grid, tets = tet_grid(cfg.resolution, cfg.scale, device=device)
        self.spacing = 2 * cfg.scale / cfg.resolution
        self.register_buffer("grid", grid)
        self.register_buffer("tets", tets, persistent=False)
        self.register_buffer("edges", tet_edges(tets), persistent=False)
        learn = set(cfg.learn)
        initial = {
            "sdf": grid.norm(dim=-1) - cfg.init_radius,
            "deform": torch.zeros_like(grid),
            "colors": torch.full_like(grid, 0.5),
        }
        for name, value in initial.items():
            if name in learn:
                setattr(self, name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def vertices(self) -> Tensor:
        """[N,3] deformed grid vertices; each moves at most deform_scale * spacing per axis."""
        return self.grid + self.cfg.deform_scale * self.spacing * torch.tanh(self.deform)

    @torch.no_grad()
    def init_from_sdf(
        self, sdf_fn: Callable[[Tensor], Tensor], color_fn: Callable[[Tensor], Tensor] | None = None,
        chunk: int = 65536,
    ) -> None:
        """Set the SDF (and optionally colours) from functions of world points [M,3] -> [M] or [M,1].

        sdf_fn must be negative inside. Offsets are reset to zero. Use this to start from
        another representation (e.g. an SDF computed from a mesh or a density field).
        """
        self.deform.zero_()
        for start in range(0, len(self.grid), chunk):
            points = self.grid[start:start + chunk]
            self.sdf[start:start + chunk] = sdf_fn(points).reshape(-1).to(self.sdf)
            if color_fn is not None:
                self.colors[start:start + chunk] = color_fn(points).reshape(-1, 3).to(self.colors)

    def surface(self) -> tuple[Tensor, Tensor, Tensor]:
        """Marching-tets surface: vertices [S,3], faces [F,3], colours [S,3], differentiable."""
        return marching_tets(self.vertices(), self.tets, self.sdf, self.colors)

    def extract_mesh(self) -> TriangleMesh:
        """The current surface as a vertex-coloured TriangleMesh (differentiable in the parameters)."""
        vertices, faces, colors = self.surface()
        return TriangleMesh(vertices, faces, vertex_colors=colors.clamp(0, 1))

    def render(self, cameras: Cameras, background: Tensor | None = None) -> RenderOutput:
        """Extract the surface and rasterise it; outputs as `render_mesh`, plus extras["mesh"]."""
        if background is None:
            background = torch.tensor(self.cfg.background)
        mesh = self.extract_mesh()
        out = render_mesh(mesh, cameras.to(self.grid.device), background, self.cfg.render)
        out.extras["mesh"] = mesh
        return out

    def sdf_regularizer(self) -> Tensor:
        """Scalar: cross-entropy between the signs at both ends of every sign-changing grid edge.

        nvdiffrec's SDF regulariser (Munkberg et al. 2022, "Extracting Triangular 3D Models,
        Materials, and Lighting From Images", Sec. 3): it removes floaters and internal
        surfaces the image losses cannot see.
        """
        s = self.sdf[self.edges]  # [E,2]
        crossing = (s[:, 0] > 0) != (s[:, 1] > 0)
        s = s[crossing]
        if not len(s):
            return self.sdf.sum() * 0
        return 0.5 * (F.binary_cross_entropy_with_logits(s[:, 0], (s[:, 1] > 0).float())
                      + F.binary_cross_entropy_with_logits(s[:, 1], (s[:, 0] > 0).float()))

    def param_groups(self, cfg: Any = None) -> list[dict]:
        """One group per learned quantity; `cfg` may override `lr_sdf`, `lr_deform`, `lr_colors`."""
        cfg = cfg if cfg is not None else self.cfg
        groups = []
        for name in self.cfg.learn:
            value = cfg.get(f"lr_{name}") if isinstance(cfg, dict) else getattr(cfg, f"lr_{name}", None)
            groups.append({"name": name, "params": [getattr(self, name)],
                           "lr": value if value is not None else getattr(self.cfg, f"lr_{name}")})
        return groups

    def update(self, step: int, out: RenderOutput) -> None:
        """Nothing to do: the surface is re-extracted at every render."""

    def export(self, path: str | Path) -> Path:
        """Save the scene itself as a torch checkpoint ({"config", "state_dict"}, suffix .pt),
        which core.export.assets.load_scene reads back. Mesh files (.ply/.obj/.glb) of the
        extracted surface are written by core.export.assets.export_scene."""
        path = Path(path)
        if path.suffix != ".pt":
            path = path.with_suffix(".pt")
        return save_torch(path, {"config": to_dict(self.cfg), "state_dict": self.state_dict()})
