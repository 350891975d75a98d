"""Procedural scenes with per-pixel depth: the training and test set of the built-in
monocular depth network (`builtin:depth`, DreamScene4D's recompose step).

Why scenes and not single objects: recompose asks which of several objects is nearer and
how far each sits along its rays, in video frames where every pixel shows something (a
textured static background, the floor the objects stand on). A network trained on one
object over white would have seen neither depth between objects nor a background, and
its "depth" of a white pixel would be meaningless. So a scene is a closed room (floor,
four walls and a ceiling, each textured: a checkered floor, plain or striped walls) with
1-4 objects of the procedural world standing on the floor at different places; the
camera stands inside the room and looks at its centre, so objects appear at different
distances, in front of one another, and every pixel has a finite depth.

Colour is shaded as the world's objects are (`render_specs`: the key light fixed relative
to the camera's azimuth, GGX + Lambert + ambient, clamp tonemap, patterns evaluated from
the object-space position); depth is the rasteriser's camera z-depth (distance along the
optical axis, world units). Both are rendered `supersample` times larger and box-filtered;
a pixel's depth is the mean over its sub-pixels and is valid when all of them are covered.

Everything is a function of the scene seed: `render_depth_scenes(first_seed, n)` renders
scenes first_seed..first_seed+n-1, identically for any batching. Training scenes start at
DEPTH_TRAIN_SEED_START, held-out scenes at DEPTH_TEST_SEED_START, far apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.cameras import spherical_cameras
from core.data.procedural import PRIOR_SEED_START, SEED_END, ProceduralWorldConfig, sample_spec
from core.data.procedural_render import LightingConfig, _light_direction, _pattern_mask, _rotate_z, spec_mesh
from renderers.mesh.mesh import vertex_normals
from renderers.mesh.raster import interpolate, rasterize
from renderers.shading import DirectionalLight, srgb_decode, tonemap

DEPTH_TRAIN_SEED_START = 300_000_000
DEPTH_TEST_SEED_START = 700_000


@dataclass
class DepthSceneConfig:
    """How scenes are drawn. Distances in world units (an object's half-size is 0.48-0.62);
    angles in degrees; fov is vertical."""

    resolution: int = 48
    supersample: int = 2
    objects_range: tuple[int, int] = (1, 4)
    placement_radius: float = 1.8
    room_half_size_range: tuple[float, float] = (4.5, 7.0)
    room_height_range: tuple[float, float] = (3.5, 6.0)
    floor_offset_range: tuple[float, float] = (0.3, 0.7)   # floor at z = -offset, the camera looks at the origin
    elevation_range: tuple[float, float] = (5.0, 40.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    radius_range: tuple[float, float] = (2.8, 4.2)
    fov_range: tuple[float, float] = (35.0, 60.0)
    room_tiles: int = 6    # grid cells per room face; faces crossing the camera plane cost a full-image test


@dataclass
class DepthBatch:
    """images [n,3,H,W] in [0,1]; depth [n,1,H,W] camera z-depth in world units (0 where
    invalid); valid [n,1,H,W] bool (every sub-pixel covered); objects [n,1,H,W] long:
    which object a pixel shows (1..k, 0 the room, taken at its centre sub-pixel, as an
    instance mask would be); seeds: scene seed of each image."""

    images: Tensor
    depth: Tensor
    valid: Tensor
    objects: Tensor
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.seeds)


def _box_room(half: float, height: float, floor_z: float, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inward-facing box: vertices [V,3], faces [F,3], surface id per face [F] (0 floor,
    1-4 walls, 5 ceiling), each face a tiles x tiles grid."""
    t = np.linspace(0.0, 1.0, tiles + 1)
    u, v = (a.reshape(-1) for a in np.meshgrid(t, t, indexing="ij"))
    cells = [(i * (tiles + 1) + j, (i + 1) * (tiles + 1) + j, (i + 1) * (tiles + 1) + j + 1, i * (tiles + 1) + j + 1)
             for i in range(tiles) for j in range(tiles)]
    grid_faces = np.array([f for a, b, c, d in cells for f in ((a, b, c), (a, c, d))])
    top = floor_z + height
    x0, x1 = -half, half
    # corner + u * edge_u + v * edge_v, ordered so the normal edge_u x edge_v points into the room
    planes = [((x0, x1, floor_z), (2 * half, 0, 0), (0, -2 * half, 0)),        # floor, normal +z
              ((x0, x0, floor_z), (0, 2 * half, 0), (0, 0, height)),           # x = -half, normal +x
              ((x1, x1, floor_z), (0, -2 * half, 0), (0, 0, height)),          # x = +half, normal -x
              ((x1, x0, floor_z), (-2 * half, 0, 0), (0, 0, height)),          # y = -half, normal +y
              ((x0, x1, floor_z), (2 * half, 0, 0), (0, 0, height)),           # y = +half, normal -y
              ((x0, x0, top), (2 * half, 0, 0), (0, 2 * half, 0))]             # ceiling, normal -z
    verts, faces, ids = [], [], []
    for k, (corner, eu, ev) in enumerate(planes):
        p = np.asarray(corner) + u[:, None] * np.asarray(eu) + v[:, None] * np.asarray(ev)
        faces.append(grid_faces + sum(len(x) for x in verts))
        verts.append(p)
        ids.append(np.full(len(grid_faces), k))
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(ids)


def _room_albedo(pos: Tensor, surface: Tensor, style: dict) -> Tensor:
    """Display-sRGB albedo [N,3] of room points pos [N,3] on surfaces [N] (ids of `_box_room`)."""
    floor = torch.floor(pos[:, :2] / style["floor_cell"]).long().sum(-1) % 2 == 1
    floor_rgb = torch.where(floor[:, None], style["floor_rgb"][1], style["floor_rgb"][0])
    along = torch.where((surface == 1) | (surface == 2), pos[:, 1], pos[:, 0])
    stripe = (torch.floor(along / style["wall_stripe"]).long() % 2 == 1) & style["wall_striped"][surface.clamp(1, 4) - 1]
    wall_rgb = style["wall_rgb"][surface.clamp(1, 4) - 1]
    wall_rgb = torch.where(stripe[:, None], wall_rgb * 0.6 + 0.4 * style["stripe_rgb"], wall_rgb)
    out = torch.where((surface == 0)[:, None], floor_rgb, wall_rgb)
    return torch.where((surface == 5)[:, None], style["ceiling_rgb"], out)


def _draw_scene(seed: int, cfg: DepthSceneConfig, world: ProceduralWorldConfig):
    rng = np.random.default_rng([seed, 17])
    half = rng.uniform(*cfg.room_half_size_range)
    height = rng.uniform(*cfg.room_height_range)
    floor_z = -rng.uniform(*cfg.floor_offset_range)
    style = {"floor_cell": float(rng.uniform(0.3, 0.9)),
             "floor_rgb": torch.tensor(rng.uniform(0.15, 0.9, (2, 3)), dtype=torch.float32),
             "wall_rgb": torch.tensor(rng.uniform(0.2, 0.95, (4, 3)), dtype=torch.float32),
             "stripe_rgb": torch.tensor(rng.uniform(0.0, 1.0, 3), dtype=torch.float32),
             "wall_striped": torch.tensor(rng.random(4) < 0.5),
             "wall_stripe": float(rng.uniform(0.3, 1.2)),
             "ceiling_rgb": torch.tensor(rng.uniform(0.7, 0.95, 3), dtype=torch.float32)}
    n_objects = int(rng.integers(cfg.objects_range[0], cfg.objects_range[1] + 1))
    specs, offsets = [], []
    for _ in range(n_objects):
        spec = sample_spec(int(rng.integers(PRIOR_SEED_START, SEED_END)), world)
        for _attempt in range(20):   # keep objects apart (bounding circles), give up after 20 tries
            r, a = cfg.placement_radius * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            xy = np.array([r * math.cos(a), r * math.sin(a)])
            if all(np.linalg.norm(xy - o[:2]) > spec.size + s.size for s, o in zip(specs, offsets)):
                break
        zmin = float(spec_mesh(spec, world.detail).vertices[:, 2].min())
        specs.append(spec)
        offsets.append(np.array([xy[0], xy[1], floor_z - zmin]))
    camera = tuple(float(rng.uniform(*r)) for r in (cfg.elevation_range, cfg.azimuth_range, cfg.radius_range,
                                                     cfg.fov_range))
    return (half, height, floor_z), style, specs, offsets, camera


def render_depth_scene(seed: int, cfg: DepthSceneConfig | None = None,
                       world: ProceduralWorldConfig | None = None,
                       lighting: LightingConfig | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Scene `seed`: image [3,H,W] in [0,1], depth [1,H,W] (world units, 0 where invalid),
    valid [1,H,W] bool, objects [1,H,W] long (0 room, 1..k the objects), at cfg.resolution."""
    cfg, world = cfg or DepthSceneConfig(), world or ProceduralWorldConfig()
    lighting = lighting or world.lighting
    (half, height, floor_z), style, specs, offsets, (el, az, radius, fov) = _draw_scene(seed, cfg, world)
    room_v, room_f, room_ids = _box_room(half, height, floor_z, cfg.room_tiles)
    verts, faces, part = [torch.from_numpy(room_v).float()], [torch.from_numpy(room_f)], [torch.from_numpy(room_ids)]
    local = [torch.zeros(len(room_v), 3)]
    count = len(room_v)
    for k, (spec, offset) in enumerate(zip(specs, offsets)):
        mesh = spec_mesh(spec, world.detail)
        v = torch.from_numpy(mesh.vertices).float()
        verts.append(v + torch.from_numpy(offset).float())
        local.append(v)
        faces.append(torch.from_numpy(mesh.faces) + count)
        part.append(torch.full((len(mesh.faces),), 6 + k))
        count += len(v)
    verts, faces, part, local = torch.cat(verts), torch.cat(faces).long(), torch.cat(part), torch.cat(local)
    ss, size = cfg.supersample, cfg.resolution
    cams = spherical_cameras(*(torch.tensor([x]) for x in (el, az, radius, fov)), size * ss, size * ss)
    with torch.no_grad():
        rast = rasterize(verts, faces, cams)
        normals = vertex_normals(verts, faces)
        attrs = interpolate(torch.cat([verts, local, normals], -1), rast, dense=False)
        pos, obj_pos, normal = attrs[:, :3], attrs[:, 3:6], attrs[:, 6:]
        surface = part[rast.face]
        on_object = surface >= 6
        room_face = surface.clamp(max=5)
        # Room faces are flat: their face normal, not the vertex normal blended across the box's edges.
        face_n = torch.linalg.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
        normal = torch.where(on_object[:, None], normal, F.normalize(face_n, dim=-1)[rast.face])
        albedo = _room_albedo(pos, room_face, style)
        if on_object.any():
            obj = (surface[on_object] - 6).long()
            heights = torch.tensor([[float(spec_mesh(s, world.detail).vertices[:, 2].min()),
                                     float(spec_mesh(s, world.detail).vertices[:, 2].max())] for s in specs])
            patterned = _pattern_mask(obj_pos[on_object], obj, specs, heights)
            base = torch.tensor([s.rgb for s in specs])[obj]
            second = torch.tensor([s.secondary_rgb for s in specs])[obj]
            albedo[on_object] = torch.where(patterned[:, None], second, base)
        roughness = torch.full((len(pos), 1), 0.85)
        if on_object.any():
            roughness[on_object] = torch.tensor([s.roughness for s in specs])[obj, None]
        view_dir = cams.positions.to(pos)[rast.batch] - pos
        turn = torch.full((len(pos),), -math.radians(az))
        light = DirectionalLight(direction=_light_direction(lighting), irradiance=lighting.irradiance,
                                 ambient=lighting.ambient)
        radiance = light.shade(_rotate_z(normal, turn), _rotate_z(view_dir, turn), srgb_decode(albedo), roughness, 0.0)
        colour = tonemap(radiance, lighting.exposure, lighting.tonemap)
        rgb = F.avg_pool2d(rast.to_dense(colour).permute(0, 3, 1, 2), ss)[0]
        depth = F.avg_pool2d(rast.depth.permute(0, 3, 1, 2), ss)[0]
        valid = F.avg_pool2d(rast.mask.permute(0, 3, 1, 2), ss)[0] > 0.999
        ids = rast.to_dense((surface - 5).clamp_min(0)[:, None].float())[0, ss // 2::ss, ss // 2::ss, 0]
    return rgb.clamp(0, 1), torch.where(valid, depth, torch.zeros_like(depth)), valid, ids.long()[None]


def render_depth_scenes(first_seed: int, n: int, cfg: DepthSceneConfig | None = None) -> DepthBatch:
    """Scenes first_seed..first_seed+n-1 stacked (see `render_depth_scene`)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    seeds = list(range(first_seed, first_seed + n))
    images, depth, valid, objects = zip(*(render_depth_scene(s, cfg) for s in seeds))
    return DepthBatch(torch.stack(images), torch.stack(depth), torch.stack(valid), torch.stack(objects), seeds)
