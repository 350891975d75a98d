"""MeshScene: an explicit triangle mesh with fixed topology as a learnable Scene.

What is learned is a configurable subset of: per-vertex offsets from the initial
positions, per-vertex colours, and the texture maps (base colour, roughness, metallic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from core.cameras import Cameras
from renderers.base import RenderOutput

from .antialias import face_neighbours
from .mesh import TriangleMesh
from .render import MeshRenderConfig, render_mesh

LEARNABLE = ("offsets", "colors", "texture", "roughness", "metallic")


@dataclass
class MeshSceneConfig:
    """Which mesh quantities are optimised, and their learning rates."""

    learn: tuple[str, ...] = ("offsets", "colors")  # subset of LEARNABLE
    lr_offsets: float = 1e-3
    lr_colors: float = 1e-2
    lr_texture: float = 1e-2  # also roughness and metallic maps
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    render: MeshRenderConfig = field(default_factory=MeshRenderConfig)

    def __post_init__(self) -> None:
        unknown = [name for name in self.learn if name not in LEARNABLE]
        if unknown:
            raise ValueError(f"learn: unknown {unknown}; choose from {', '.join(LEARNABLE)}")


class MeshScene(nn.Module):
    """A TriangleMesh whose vertex offsets, colours and/or textures are parameters."""

    def __init__(self, mesh: TriangleMesh, cfg: MeshSceneConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MeshSceneConfig()
        learn = set(self.cfg.learn)
        if "texture" in learn and mesh.uv is None:
            raise ValueError("learn=texture needs a mesh with uv coordinates (unwrap it first, e.g. with xatlas)")
        if ({"roughness", "metallic"} & learn) and not mesh.is_textured:
            raise ValueError("learning roughness/metallic maps needs a textured mesh")
        self.register_buffer("vertices", mesh.vertices.detach().clone())
        self.register_buffer("faces", mesh.faces.clone())
        self.register_buffer("uv", None if mesh.uv is None else mesh.uv.detach().clone())
        self.register_buffer("uv_faces", None if mesh.uv_faces is None else mesh.uv_faces.clone())
        self.register_buffer("normal_map", None if mesh.normal_map is None else mesh.normal_map.detach().clone())
        self.register_buffer("neighbours", face_neighbours(mesh.faces), persistent=False)
        # "colors" learns whatever carries the base colour: the texture of a textured mesh
        learn_texture = "texture" in learn or ("colors" in learn and mesh.is_textured)
        learn_colors = "colors" in learn and not mesh.is_textured
        self._slot("offsets", torch.zeros_like(mesh.vertices), "offsets" in learn)
        colors = mesh.vertex_colors
        if colors is None and learn_colors:
            colors = torch.tensor(self.cfg.render.default_color).to(mesh.vertices).expand(mesh.num_vertices, 3)
        self._slot("vertex_colors", colors, learn_colors)
        self._slot("base_color", mesh.base_color, learn_texture)
        for name in ("roughness", "metallic"):
            tex = getattr(mesh, name)
            if tex is None and name in learn:  # a mid-grey map at the base colour's resolution
                tex = torch.full((*mesh.base_color.shape[:2], 1), 0.5 if name == "roughness" else 0.0)
            self._slot(name, tex, name in learn)

    def _slot(self, name: str, value: Tensor | None, learnable: bool) -> None:
        value = None if value is None else value.detach().clone().float()
        if learnable:
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def mesh(self) -> TriangleMesh:
        """The current mesh (differentiable in the learned quantities); colours clamped to [0,1]."""

        def clamp(x):
            return None if x is None else x.clamp(0, 1)

        return TriangleMesh(
            vertices=self.vertices + self.offsets, faces=self.faces, vertex_colors=clamp(self.vertex_colors),
            uv=self.uv, uv_faces=self.uv_faces, base_color=clamp(self.base_color),
            roughness=clamp(self.roughness), metallic=clamp(self.metallic), normal_map=self.normal_map,
        )

    def render(self, cameras: Cameras, background: Tensor | None = None) -> RenderOutput:
        """background [3] or [B,3] in [0,1] (None: cfg.background). See `render_mesh` for outputs."""
        if background is None:
            background = torch.tensor(self.cfg.background)
        return render_mesh(self.mesh(), cameras.to(self.vertices.device), background, self.cfg.render, self.neighbours)

    def param_groups(self, cfg: Any = None) -> list[dict]:
        """One group per learned quantity; `cfg` may override rates with `lr_offsets` etc. (attribute or key)."""
        cfg = cfg if cfg is not None else self.cfg

        def lr(name):
            value = cfg.get(f"lr_{name}") if isinstance(cfg, dict) else getattr(cfg, f"lr_{name}", None)
            return value if value is not None else getattr(self.cfg, f"lr_{name}")

        slots = {"offsets": ("offsets", "offsets"), "colors": ("vertex_colors", "colors"),
                 "texture": ("base_color", "texture"), "roughness": ("roughness", "texture"),
                 "metallic": ("metallic", "texture")}
        if self.uv is not None and self.base_color is not None:
            slots["colors"] = ("base_color", "texture")
        groups, seen = [], set()
        for name in self.cfg.learn:
            attr, rate = slots[name]
            if attr not in seen:
                seen.add(attr)
                groups.append({"name": name, "params": [getattr(self, attr)], "lr": lr(rate)})
        return groups

    def update(self, step: int, out: RenderOutput) -> None:
        """Nothing to do: the topology is fixed (remeshing belongs to a later stage)."""
