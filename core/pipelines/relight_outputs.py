"""What a relight run writes: model_pbr.ply, environment.hdr/.npy, model.glb with PBR textures,
a relit turntable, and model_radiance.ply (the radiance Gaussians after pre-training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.cameras import orbit_cameras
from renderers.gaussian.pbr import PBRGaussianScene
from renderers.gaussian.scene import GaussianScene
from renderers.shading.environment import EnvironmentLight
from renderers.shading.envmap_files import write_envmap


def save_radiance_snapshot(scene: PBRGaussianScene, out: Path) -> Path:
    """model_radiance.ply: the standard 3DGS radiance Gaussians as they are now (after stage 1)."""
    return GaussianScene.export(scene, out / "model_radiance.ply")


def rotated_envmap(envmap: torch.Tensor, turn: float) -> torch.Tensor:
    """The map [H,W,3] turned by `turn` of a full circle about +Z (columns rolled; exact for whole texels)."""
    return torch.roll(envmap, shifts=int(round(turn * envmap.shape[1])), dims=1)


@torch.no_grad()
def relit_turntable(scene: PBRGaussianScene, envmap: torch.Tensor, out_dir: Path, frames: int, size: int,
                    elevation: float, radius: float, fov: float, background=(1.0, 1.0, 1.0)) -> Path:
    """Orbit frames (and turntable.mp4) with the environment turning once around the object: the light moves."""
    from core.export.video import write_png, write_video

    cams = orbit_cameras(frames, elevation, radius, fov, size, size)
    bg = torch.tensor(background)
    images = []
    for i in range(frames):
        light = EnvironmentLight(rotated_envmap(envmap, i / frames), levels=scene.environment.levels,
                                 samples=scene.environment.samples)
        rgb = scene.render(cams[i:i + 1], bg, light=light).rgb[0]
        images.append(rgb.cpu())
        write_png(out_dir / f"frame_{i:04d}.png", rgb)
    return write_video(out_dir / "turntable.mp4", images)


def export_glb(scene: PBRGaussianScene, path: Path, resolution: int, texture_size: int) -> Path:
    """Gaussians -> mesh -> baked baseColor + metallicRoughness textures (core.export's bake)."""
    from core.export.assets import ExportOptions, export_scene

    options = ExportOptions(resolution=resolution, texture_size=texture_size, target_faces=20_000,
                            remove_floaters=False)
    return export_scene(scene, path, "glb", options)


def export_relight(scene: PBRGaussianScene, cfg, out: Path) -> dict[str, Path]:
    """Write every output of a finished relight run into `out`; returns their paths."""
    if not cfg.progressive:  # the PBR-only model shows a = 1 wherever it is rendered from file
        scene.set_attribute("progress", 1.0)
    envmap = scene.environment.envmap().detach().cpu()
    paths = {"model_pbr": scene.export(out / "model_pbr.ply"),
             "environment_hdr": write_envmap(out / "environment.hdr", envmap.numpy()),
             "environment_npy": write_envmap(out / "environment.npy", envmap.numpy().astype(np.float32)),
             "config": out / "config.yaml"}
    if (out / "model_radiance.ply").is_file():
        paths["model_radiance"] = out / "model_radiance.ply"
    if cfg.export_glb:
        paths["model_glb"] = export_glb(scene, out / "model.glb", cfg.glb_resolution, cfg.glb_texture_size)
    if cfg.turntable_frames:
        paths["turntable"] = relit_turntable(scene, envmap.to(scene.device), out / "turntable", cfg.turntable_frames,
                                             cfg.turntable_size, cfg.turntable_elevation, cfg.turntable_radius,
                                             cfg.turntable_fov, cfg.renderer.gaussian.background)
    return paths
