"""Ground-truth normal maps of the procedural world: the training and test set of the
built-in image-to-normal network (`builtin:normals`, DreamPolish's polish stage).

Each object is rendered twice from the same cameras: its colour by the world's own
renderer (`ProceduralWorld.render`, unchanged) and its normals by the project's mesh
renderer (`render_mesh`, interpolated vertex normals, the same normals the world shades
with). Both are rasterised `supersample` times larger and box-filtered; the normal map is
the mean normal over a pixel's covered sub-pixels, renormalised.

Cameras follow the world's sampler (`sample_camera_params`: elevation -10..60, radius
2.2-2.8) with the polish stage's wider field of view, 30-60 degrees (NORMALS_FOV_RANGE),
so the network sees the framings normal guidance shows it. Everything is a function of
the object seed; seeds below PRIOR_SEED_START are held out (the network trains on seeds
NORMALS_TRAIN_SEED_START and up, inside the prior's range).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from core.data.procedural import PRIOR_SEED_START, ProceduralWorld, ProceduralWorldConfig, sample_camera_params
from core.data.procedural_render import spec_mesh
from core.cameras import world_to_camera_normals
from renderers.mesh.mesh import TriangleMesh
from renderers.mesh.render import MeshRenderConfig, render_mesh

NORMALS_FOV_RANGE = (30.0, 60.0)
# The prior's shards start at PRIOR_SEED_START; the normal network's data sits far above
# them so the two caches never share objects (not that it matters for either).
NORMALS_TRAIN_SEED_START = PRIOR_SEED_START + 100_000_000
# Held out: below the prior's range, above the classifier's training seeds.
NORMALS_TEST_SEED_START = 600_000


def normals_world_config(**overrides) -> ProceduralWorldConfig:
    """The procedural world as the normal network sees it: the default world with the
    polish stage's field-of-view range."""
    return replace(ProceduralWorldConfig(fov_range=NORMALS_FOV_RANGE), **overrides)


@dataclass
class NormalMapBatch:
    """images [n,3,H,W] in [0,1] (white background); normals [n,3,H,W] unit camera-space
    normals (OpenGL axes: x right, y up, z toward the viewer; 0 where nothing is covered);
    alpha [n,1,H,W] coverage in [0,1]; seeds: object seed of each image (views of one
    object are consecutive); views: view index of each image."""

    images: Tensor
    normals: Tensor
    alpha: Tensor
    seeds: list[int]
    views: list[int]

    def __len__(self) -> int:
        return len(self.seeds)


def render_normal_maps(first_seed: int, n_objects: int, views: int = 1,
                       world: ProceduralWorld | None = None) -> NormalMapBatch:
    """Objects first_seed..first_seed+n_objects-1, each from `views` cameras (view v of
    object s is `sample_camera_params(s, cfg, v)`); n_objects * views images, identical for
    any batching. world: default `ProceduralWorld(normals_world_config())`."""
    if n_objects < 1 or views < 1:
        raise ValueError(f"n_objects and views must be at least 1, got {n_objects}, {views}")
    world = world or ProceduralWorld(normals_world_config())
    seeds = [s for s in range(first_seed, first_seed + n_objects) for _ in range(views)]
    view_ids = [v for _ in range(n_objects) for v in range(views)]
    specs = [world.spec(s) for s in seeds]
    cams = world.cameras([sample_camera_params(s, world.cfg, v) for s, v in zip(seeds, view_ids)])
    images, alpha = world.render(specs, cams)
    ss = world.cfg.supersample
    hi = cams.resized(cams.width * ss, cams.height * ss)
    render_cfg = MeshRenderConfig(antialias=False)
    normals = []
    with torch.no_grad():
        for start in range(0, len(seeds), views):
            mesh = spec_mesh(specs[start], world.cfg.detail)
            mesh = TriangleMesh(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces))
            out = render_mesh(mesh, hi[start:start + views], cfg=render_cfg)
            normals.append(world_to_camera_normals(out.normal, hi[start:start + views]))
    normals = F.avg_pool2d(torch.cat(normals).permute(0, 3, 1, 2), ss)   # sum of covered sub-pixels / ss^2
    normals = F.normalize(normals, dim=1, eps=1e-6)
    return NormalMapBatch(images, normals, alpha, seeds, view_ids)
