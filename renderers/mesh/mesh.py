"""TriangleMesh: vertices, faces and appearance (vertex colours or UV textures with PBR maps).

Appearance is one of: per-vertex colours, or UVs plus a base-colour texture (optionally
roughness, metallic and tangent-space normal maps). UVs are per vertex (`uv [V,2]`, indexed
by `faces`) or per face corner (`uv [T,2]` indexed by `uv_faces [F,3]`, as OBJ stores them
where a seam splits a vertex). UV convention is OpenGL/trimesh: u right, v up, so texture
row 0 is v = 1.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor


@dataclass
class TriangleMesh:
    """A triangle mesh in world space.

    vertices [V,3] float, faces [F,3] long (counter-clockwise seen from outside),
    vertex_colors [V,3] in [0,1] or None, uv [V,2] or [T,2] in [0,1] or None,
    uv_faces [F,3] long into `uv` or None (then `uv` is per vertex),
    base_color [Ht,Wt,3] in [0,1], roughness [Ht,Wt,1] in [0,1], metallic [Ht,Wt,1] in [0,1],
    normal_map [Ht,Wt,3] tangent-space normals in [0,1] (0.5,0.5,1 is flat); textures or None.
    """

    vertices: Tensor
    faces: Tensor
    vertex_colors: Tensor | None = None
    uv: Tensor | None = None
    uv_faces: Tensor | None = None
    base_color: Tensor | None = None
    roughness: Tensor | None = None
    metallic: Tensor | None = None
    normal_map: Tensor | None = None

    def __post_init__(self) -> None:
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must be [V,3], got {tuple(self.vertices.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"faces must be [F,3], got {tuple(self.faces.shape)}")
        self.faces = self.faces.long()
        V = self.vertices.shape[0]
        if self.faces.numel() and (int(self.faces.min()) < 0 or int(self.faces.max()) >= V):
            raise ValueError(f"faces index outside the {V} vertices")
        if self.vertex_colors is not None and self.vertex_colors.shape != (V, 3):
            raise ValueError(f"vertex_colors must be [V,3]=[{V},3], got {tuple(self.vertex_colors.shape)}")
        if self.uv is not None:
            if self.uv_faces is None and self.uv.shape != (V, 2):
                raise ValueError(f"per-vertex uv must be [V,2]=[{V},2], got {tuple(self.uv.shape)}")
            if self.uv_faces is not None:
                self.uv_faces = self.uv_faces.long()
                if self.uv_faces.shape != self.faces.shape:
                    raise ValueError("uv_faces must be [F,3] like faces")
        if self.base_color is not None and self.uv is None:
            raise ValueError("a base_color texture needs uv coordinates")

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    @property
    def is_textured(self) -> bool:
        return self.base_color is not None

    def uv_indices(self) -> Tensor:
        """[F,3] indices into `uv` for each face corner."""
        return self.faces if self.uv_faces is None else self.uv_faces

    def face_normals(self) -> Tensor:
        """[F,3] unit face normals (right-handed winding), differentiable in vertices."""
        n = _face_cross(self.vertices, self.faces)
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def vertex_normals(self) -> Tensor:
        """[V,3] unit vertex normals, area-weighted mean of adjacent face normals."""
        return vertex_normals(self.vertices, self.faces)

    def with_vertices(self, vertices: Tensor) -> "TriangleMesh":
        """The same mesh (topology, appearance) with new vertex positions [V,3]."""
        return replace(self, vertices=vertices)

    def to(self, device) -> "TriangleMesh":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def detach(self) -> "TriangleMesh":
        return replace(self, **{f.name: getattr(self, f.name).detach() for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    @classmethod
    def from_trimesh(cls, mesh, device=None) -> "TriangleMesh":
        """Geometry and appearance from a `trimesh.Trimesh` (vertex colours or a UV texture)."""
        import trimesh

        if isinstance(mesh, trimesh.Scene):
            mesh = mesh.to_geometry() if hasattr(mesh, "to_geometry") else mesh.dump(concatenate=True)
        f32 = dict(dtype=torch.float32, device=device)
        out = dict(
            vertices=torch.as_tensor(np.asarray(mesh.vertices), **f32),
            faces=torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long, device=device),
        )
        visual = mesh.visual
        if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
            out["uv"] = torch.as_tensor(np.asarray(visual.uv), **f32)
            material = visual.material
            image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
            if image is not None:
                out["base_color"] = _image_tensor(image, 3).to(device)
            else:  # uv without an image: a flat texture of the material colour
                rgba = getattr(material, "baseColorFactor", None)
                if rgba is None:
                    rgba = getattr(material, "main_color", [255, 255, 255, 255])
                out["base_color"] = torch.as_tensor(np.asarray(rgba)[:3], **f32).view(1, 1, 3) / 255.0
            mr = getattr(material, "metallicRoughnessTexture", None)
            if mr is not None:  # glTF packs roughness in G and metallic in B
                mr = _image_tensor(mr, 3).to(device)
                out["roughness"], out["metallic"] = mr[..., 1:2], mr[..., 2:3]
            nm = getattr(material, "normalTexture", None)
            if nm is not None:
                out["normal_map"] = _image_tensor(nm, 3).to(device)
        elif visual.kind in ("vertex", "face"):
            out["vertex_colors"] = torch.as_tensor(np.asarray(visual.vertex_colors)[:, :3], **f32) / 255.0
        return cls(**out)

    def to_trimesh(self):
        """A `trimesh.Trimesh` with vertex colours or a textured material (for .ply/.obj/.glb)."""
        import trimesh
        from PIL import Image

        vertices = self.vertices.detach().cpu().numpy()
        faces = self.faces.detach().cpu().numpy()
        if self.is_textured:
            if self.uv_faces is not None:  # trimesh stores uv per vertex: split vertices on seams
                corner = self.faces.reshape(-1).cpu().numpy()
                vertices = vertices[corner]
                uv = self.uv.detach().cpu().numpy()[self.uv_faces.reshape(-1).cpu().numpy()]
                faces = np.arange(len(corner)).reshape(-1, 3)
            else:
                uv = self.uv.detach().cpu().numpy()
            image = Image.fromarray(_to_uint8(self.base_color))
            material = trimesh.visual.material.PBRMaterial(baseColorTexture=image)
            if self.roughness is not None or self.metallic is not None:
                h, w = self.base_color.shape[:2]
                mr = torch.ones(h, w, 3)
                if self.roughness is not None:
                    mr[..., 1:2] = _resize(self.roughness.detach().cpu(), h, w)
                if self.metallic is not None:
                    mr[..., 2:3] = _resize(self.metallic.detach().cpu(), h, w)
                material.metallicRoughnessTexture = Image.fromarray(_to_uint8(mr))
            visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
            return trimesh.Trimesh(vertices, faces, visual=visual, process=False)
        colors = None
        if self.vertex_colors is not None:
            colors = _to_uint8(self.vertex_colors)
        return trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)


def _face_cross(vertices: Tensor, faces: Tensor) -> Tensor:
    """[..., F, 3] (v1 - v0) x (v2 - v0): twice the area times the unit normal."""
    v0, v1, v2 = (vertices[..., faces[:, i], :] for i in range(3))
    return torch.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """[..., V, 3] unit normals from vertices [..., V, 3]; adjacent face normals weighted by area."""
    n = _face_cross(vertices, faces)
    out = torch.zeros_like(vertices)
    for i in range(3):
        out = out.index_add(-2, faces[:, i], n)
    # an isolated vertex keeps a zero normal instead of NaN
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _image_tensor(image, channels: int) -> Tensor:
    """[H,W,channels] float in [0,1] from a PIL image."""
    arr = np.asarray(image.convert("RGB" if channels == 3 else "L"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], channels).copy())


def _to_uint8(x: Tensor) -> np.ndarray:
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _resize(tex: Tensor, h: int, w: int) -> Tensor:
    """[h,w,C] bilinear resize of a [Ht,Wt,C] texture."""
    if tex.shape[:2] == (h, w):
        return tex
    out = torch.nn.functional.interpolate(tex.permute(2, 0, 1)[None], size=(h, w), mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0)


def laplacian_smoothness(vertices: Tensor, faces: Tensor) -> Tensor:
    """Scalar mean squared uniform-Laplacian length of vertices [V,3]: a regulariser against spiky offsets."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = torch.cat([edges, edges.flip(1)])  # both directions, so every neighbour counts once per face
    total = torch.zeros_like(vertices).index_add(0, edges[:, 0], vertices[edges[:, 1]])
    count = torch.zeros(vertices.shape[0], 1, dtype=vertices.dtype, device=vertices.device)
    count = count.index_add(0, edges[:, 0], torch.ones(len(edges), 1, dtype=vertices.dtype, device=vertices.device))
    return ((total / count.clamp_min(1) - vertices) ** 2).sum(-1).mean()
