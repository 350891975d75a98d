"""Cube maps: face layout, bilinear lookup, conversion to and from equirect, a learnable one.

Faces are a tensor [6,R,R,C] in the OpenGL order +X, -X, +Y, -Y, +Z, -Z, each face
indexed [t, s] with the OpenGL face coordinates (OpenGL 4.6 spec, table 8.19) in the
world frame (+Z up). Lookups clamp at face edges, so a seam differs by at most half a
texel of blending from a seamless filter; that is below what distillation resolves.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from renderers.shading.envmap import bilinear_lookup, equirect_directions, sample_equirect


def cube_face_directions(resolution: int, device=None) -> Tensor:
    """[6,R,R,3] unit directions through every face texel centre."""
    t, s = torch.meshgrid(
        (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution,
        (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution,
        indexing="ij",
    )
    a, b = 2 * s - 1, 2 * t - 1
    one = torch.ones_like(a)
    faces = torch.stack([
        torch.stack([one, -b, -a], -1),   # +X
        torch.stack([-one, -b, a], -1),   # -X
        torch.stack([a, one, b], -1),     # +Y
        torch.stack([a, -one, -b], -1),   # -Y
        torch.stack([a, -b, one], -1),    # +Z
        torch.stack([-a, -b, -one], -1),  # -Z
    ])
    return faces / faces.norm(dim=-1, keepdim=True)


def direction_to_cube_face_st(directions: Tensor) -> tuple[Tensor, Tensor]:
    """Directions [...,3] -> face index [...] (long, 0..5) and face coordinates st [...,2] in [0,1]."""
    x, y, z = directions.unbind(-1)
    ax, ay, az = x.abs(), y.abs(), z.abs()
    major_x = (ax >= ay) & (ax >= az)
    major_y = ~major_x & (ay >= az)
    face = torch.where(major_x, (x < 0).long(), torch.where(major_y, 2 + (y < 0).long(), 4 + (z < 0).long()))
    ma = torch.where(major_x, ax, torch.where(major_y, ay, az)).clamp_min(1e-12)
    # (sc, tc) per face, OpenGL spec table 8.19.
    sc = torch.where(major_x, torch.where(x >= 0, -z, z), torch.where(major_y, x, torch.where(z >= 0, x, -x)))
    tc = torch.where(major_x, -y, torch.where(major_y, torch.where(y >= 0, z, -z), -y))
    st = torch.stack([sc / ma, tc / ma], dim=-1) * 0.5 + 0.5
    return face, st


def sample_cubemap(faces: Tensor, directions: Tensor) -> Tensor:
    """Bilinear lookup: faces [6,R,R,C], directions [...,3] (any length) -> [...,C]."""
    _, R, _, C = faces.shape
    face, st = direction_to_cube_face_st(directions)
    x = (st[..., 0] * R).clamp(0.5, R - 0.5)
    y = (st[..., 1] * R).clamp(0.5, R - 0.5) + face.to(st.dtype) * R
    return bilinear_lookup(faces.reshape(6 * R, R, C), x, y, wrap_x=False)


def equirect_to_cubemap(envmap: Tensor, resolution: int) -> Tensor:
    """Equirect [H,W,C] -> cube faces [6,R,R,C] by bilinear lookup at the face texel centres."""
    return sample_equirect(envmap, cube_face_directions(resolution, envmap.device))


def cubemap_to_equirect(faces: Tensor, height: int, width: int | None = None) -> Tensor:
    """Cube faces [6,R,R,C] -> equirect [H,W,C] (W defaults to 2H) by bilinear lookup."""
    return sample_cubemap(faces, equirect_directions(height, width, faces.device))


class CubeMap(nn.Module):
    """A learnable environment: linear radiance on 6 faces, `faces` [6,R,R,C] an nn.Parameter.

    The raw parameter is the radiance; keep it >= 0 with a clamp or an activation in the
    caller if the optimiser may push it negative.
    """

    def __init__(self, resolution: int = 32, channels: int = 3, init: float = 0.5):
        super().__init__()
        self.faces = nn.Parameter(torch.full((6, resolution, resolution, channels), float(init)))

    @classmethod
    def from_equirect(cls, envmap: Tensor, resolution: int) -> "CubeMap":
        cube = cls(resolution, envmap.shape[-1])
        with torch.no_grad():
            cube.faces.copy_(equirect_to_cubemap(envmap, resolution))
        return cube

    @property
    def resolution(self) -> int:
        return self.faces.shape[1]

    def forward(self, directions: Tensor) -> Tensor:
        """Radiance [...,C] along unit directions [...,3]."""
        return sample_cubemap(self.faces, directions)

    def to_equirect(self, height: int, width: int | None = None) -> Tensor:
        """[H,W,C] equirect; differentiable in `faces`."""
        return cubemap_to_equirect(self.faces, height, width)
