"""Posed views of a procedural object written as a NeRF-synthetic folder (RGBA PNGs +
transforms_train.json): a ready-made reconstruction dataset with no download."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from core.cameras import save_nerf_synthetic, spherical_cameras
from core.data.procedural import COLOR_RGB, ProceduralWorld, ProceduralWorldConfig, make_caption


def procedural_object(shape: str, color: str, material: str = "matte", pattern: str = "plain", seed: int = 0):
    """An ObjectSpec of the procedural world with the given words (proportions from `seed`)."""
    world = ProceduralWorld()
    spec = world.spec(seed)
    return replace(spec, shape=shape, color=color, material=material, pattern=pattern, rgb=COLOR_RGB[color],
                   roughness=0.7 if material == "matte" else 0.25, metallic=0.0,
                   caption=make_caption(shape, color, material, pattern))


def write_procedural_views(out_dir: str | Path, spec, n_views: int = 24, size: int = 64,
                           radius: float = 2.5, fov_deg: float = 45.0) -> Path:
    """Render `spec` from `n_views` cameras spiralling in azimuth over elevations -5..50 degrees
    into `out_dir` (NeRF-synthetic layout); returns the transforms file."""
    from core.io import write_png

    out_dir = Path(out_dir)
    n = torch.arange(n_views, dtype=torch.float32)
    azimuth = n * (360.0 / n_views) * 3 % 360.0 - 180.0       # three turns, interleaved
    elevation = -5.0 + 55.0 * (n / max(1, n_views - 1))
    cams = spherical_cameras(elevation, azimuth, torch.full_like(n, radius), torch.full_like(n, fov_deg), size, size)
    world = ProceduralWorld(ProceduralWorldConfig(resolution=size))
    rgb, alpha = world.render_object(spec, cams)
    names = [f"./train/r_{i:03d}" for i in range(n_views)]
    for i, name in enumerate(names):
        write_png(out_dir / f"{name}.png", torch.cat([rgb[i], alpha[i]], dim=0).permute(1, 2, 0))
    path = out_dir / "transforms_train.json"
    save_nerf_synthetic(path, cams, names)
    return path
