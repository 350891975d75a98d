"""Renders procedural objects with the project's mesh rasteriser and analytic shading.

Many objects go through one `rasterize` call: objects of one shape share a topology, so
the batch's vertex tensor is [B, V_union, 3] over the union of the shapes present, and
sample b fills only its own shape's block; the other blocks stay at the origin, where
their triangles are degenerate (zero determinant) and the rasteriser drops them.
(`render_mesh` takes one [V,3] mesh for all cameras, hence `rasterize` directly here.)

Shading is per pixel: positions and vertex normals are interpolated, the pattern (stripes,
checks) is evaluated from the object-space position so its edges stay sharp at any
tessellation, and `DirectionalLight.shade` (GGX + Lambert + ambient) gives radiance that
`tonemap` turns into display sRGB. The key light keeps a fixed place relative to the
camera's azimuth (above, to the side of the viewer): every view shows a lit and a shaded
side, so shapes read from behind as well as from the front.

Anti-aliasing: the image is rendered `supersample` times larger and box-filtered down.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.cameras import Cameras
from core.data.procedural_shapes import ShapeMesh, build_shape
from renderers.mesh.mesh import vertex_normals
from renderers.mesh.raster import interpolate, rasterize
from renderers.shading import DirectionalLight, srgb_decode, tonemap

if TYPE_CHECKING:
    from core.data.procedural import ObjectSpec


@dataclass
class LightingConfig:
    """Key light + ambient, placed relative to the camera's azimuth.

    key_elevation_deg: light elevation above the ground plane; key_azimuth_offset_deg:
    light azimuth minus camera azimuth (positive: from the viewer's right). The defaults
    light a cube's top, right and left faces at about 1 : 0.75 : 0.3, so its faces stay
    apart at 32 px. irradiance/ambient as in `DirectionalLight`; exposure in stops;
    tonemap: "aces" or "clamp" (clamp keeps the colour words' hues).
    """

    key_elevation_deg: float = 55.0
    key_azimuth_offset_deg: float = 60.0
    irradiance: float = 2.2
    ambient: float = 0.28
    exposure: float = 0.0
    tonemap: str = "clamp"


@functools.lru_cache(maxsize=4096)
def object_mesh(shape: str, geometry_seed: int, size: float, detail: int) -> ShapeMesh:
    """The canonical mesh of one object; cached because every view of it is the same mesh."""
    return build_shape(shape, np.random.default_rng(geometry_seed), size, detail)


def spec_mesh(spec: "ObjectSpec", detail: int) -> ShapeMesh:
    return object_mesh(spec.shape, spec.geometry_seed, spec.size, detail)


def _batched_geometry(specs: Sequence["ObjectSpec"], detail: int) -> tuple[Tensor, Tensor]:
    """Vertices [B,V_union,3] (each sample fills its shape's block, zeros elsewhere) and faces [F_union,3]."""
    meshes = [spec_mesh(s, detail) for s in specs]
    shapes = sorted({s.shape for s in specs})
    offsets, faces, total = {}, [], 0
    for name in shapes:
        template = meshes[next(i for i, s in enumerate(specs) if s.shape == name)]
        offsets[name] = total
        faces.append(torch.from_numpy(template.faces) + total)
        total += len(template.vertices)
    verts = torch.zeros(len(specs), total, 3)
    for b, (spec, mesh) in enumerate(zip(specs, meshes)):
        o = offsets[spec.shape]
        verts[b, o:o + len(mesh.vertices)] = torch.from_numpy(mesh.vertices)
    return verts, torch.cat(faces)


def _pattern_mask(pos: Tensor, sample: Tensor, specs: Sequence["ObjectSpec"], z_range: Tensor) -> Tensor:
    """[N] True where the secondary colour shows; pos [N,3] object space, sample [N] index into specs."""
    pattern = torch.tensor([{"plain": 0, "striped": 1, "checkered": 2}[s.pattern] for s in specs])[sample]
    freq = torch.tensor([s.pattern_frequency for s in specs], dtype=pos.dtype)[sample]
    torus = torch.tensor([s.shape == "torus" for s in specs])[sample]
    size = torch.tensor([s.size for s in specs], dtype=pos.dtype)[sample]
    zmin, zmax = z_range[sample, 0], z_range[sample, 1]
    # Stripes run across the height; on a flat torus they go around the ring instead.
    height_t = (pos[:, 2] - zmin) / (zmax - zmin).clamp_min(1e-6)
    angle_t = (torch.atan2(pos[:, 1], pos[:, 0]) / (2 * math.pi)) % 1.0
    stripe_t = torch.where(torus, angle_t * 2, height_t) * freq
    stripes = torch.floor(stripe_t).long() % 2 == 1
    cell = size / freq
    checks = torch.floor(pos / cell[:, None]).long().sum(-1) % 2 == 1
    return torch.where(pattern == 1, stripes, torch.where(pattern == 2, checks, torch.zeros_like(stripes)))


def _rotate_z(v: Tensor, angle_rad: Tensor) -> Tensor:
    """Vectors [N,3] rotated by angle_rad [N] about +Z."""
    c, s = torch.cos(angle_rad), torch.sin(angle_rad)
    return torch.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1], v[:, 2]], -1)


def render_specs(
    specs: Sequence["ObjectSpec"],
    cameras: Cameras,
    lighting: LightingConfig,
    background: Tensor,
    detail: int = 24,
    supersample: int = 2,
) -> tuple[Tensor, Tensor]:
    """Render object b from camera b (or one object from every camera when len(specs) == 1).

    background [3] or [B,3] in [0,1]. Returns rgb [B,3,H,W] in [0,1] composited over the
    background and alpha [B,1,H,W] in [0,1], at the cameras' size.
    """
    B, H, W = len(cameras), cameras.height, cameras.width
    if len(specs) not in (1, B):
        raise ValueError(f"need one object or one per camera, got {len(specs)} objects for {B} cameras")
    hi = cameras.resized(W * supersample, H * supersample)
    if len(specs) == 1:
        mesh = spec_mesh(specs[0], detail)
        verts, faces = torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces)
        specs = list(specs) * B
    else:
        verts, faces = _batched_geometry(specs, detail)
    heights = [spec_mesh(s, detail).vertices[:, 2] for s in specs]
    z_range = torch.tensor([[float(z.min()), float(z.max())] for z in heights])
    with torch.no_grad():
        rast = rasterize(verts, faces, hi)
        normals = vertex_normals(verts, faces)
        attrs = interpolate(torch.cat([verts, normals], -1), rast, dense=False)  # [N,6] at covered pixels
        sample = rast.batch
        pos, normal = attrs[:, :3], attrs[:, 3:]
        base = torch.tensor([s.rgb for s in specs])[sample]
        second = torch.tensor([s.secondary_rgb for s in specs])[sample]
        albedo = srgb_decode(torch.where(_pattern_mask(pos, sample, specs, z_range)[:, None], second, base))
        roughness = torch.tensor([s.roughness for s in specs])[sample, None]
        metallic = torch.tensor([s.metallic for s in specs])[sample, None]
        view_dir = cameras.positions.to(pos)[sample] - pos
        # Shade in a frame turned with the camera's azimuth, so one light direction serves all samples.
        _, azimuth, _ = cameras.spherical()
        turn = -torch.deg2rad(azimuth.to(pos))[sample]
        light = DirectionalLight(direction=_light_direction(lighting), irradiance=lighting.irradiance,
                                 ambient=lighting.ambient)
        radiance = light.shade(_rotate_z(normal, turn), _rotate_z(view_dir, turn), albedo, roughness, metallic)
        colour = tonemap(radiance, lighting.exposure, lighting.tonemap)
        bg = torch.as_tensor(background, dtype=colour.dtype).expand(B, 3)
        mask = rast.mask  # [B,h,w,1]
        rgb = rast.to_dense(colour) + (1 - mask) * bg[:, None, None, :]
        rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), supersample)
        alpha = F.avg_pool2d(mask.permute(0, 3, 1, 2), supersample)
    return rgb.clamp(0, 1), alpha


def _light_direction(lighting: LightingConfig) -> tuple[float, float, float]:
    """Unit direction towards the key light in the camera-azimuth frame (camera on +X)."""
    el, az = math.radians(lighting.key_elevation_deg), math.radians(lighting.key_azimuth_offset_deg)
    return (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
