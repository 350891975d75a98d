"""Render passes of a relight run: DIR/<pass>/<name>.png from any cameras, under any environment.

Passes (RGBA PNGs, alpha = coverage, colours straight, not premultiplied):
  rgb        the model's render (I = a I_pbr + (1 - a) I_rad) under the given environment,
             PBR part display-encoded as linear clipped to [0,1] then sRGB (exposure 1)
  albedo     base colour, sRGB-encoded
  roughness, metallic, progress   grey (the value in all three channels)
  normal     world-space (n + 1) / 2
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.cameras import Cameras
from core.errors import UserError
from renderers.shading.environment import EnvironmentLight
from renderers.shading.tonemap import srgb_encode

PASSES = ("rgb", "albedo", "roughness", "metallic", "normal", "progress")


def parse_passes(text: str) -> list[str]:
    """'rgb,albedo' -> ['rgb', 'albedo']; UserError naming an unknown pass."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PASSES]
    if unknown or not names:
        raise UserError(f"unknown pass {', '.join(unknown) or repr(text)}; choose from {','.join(PASSES)}")
    return list(dict.fromkeys(names))


def environment_light(envmap: np.ndarray | torch.Tensor, height: int = 64, levels: int = 5,
                      samples: int = 64, device=None) -> EnvironmentLight:
    """An EnvironmentLight from a linear equirect map [H,W,3], resampled to [height, 2 height]."""
    env = torch.as_tensor(np.asarray(envmap, dtype=np.float32)).permute(2, 0, 1)[None]
    mode = "area" if env.shape[-2] > height else "bilinear"
    env = F.interpolate(env, size=(height, 2 * height), mode=mode)[0].permute(1, 2, 0).contiguous()
    return EnvironmentLight(env.to(device) if device is not None else env, levels=levels, samples=samples)


def load_relight_run(run: str | Path):
    """(PBRGaussianScene, learned environment [H,W,3] numpy) of a relight run folder (UserError if it is not one)."""
    from renderers.gaussian.pbr_ply import load_pbr_scene
    from renderers.gaussian.ply import SplatFormatError
    from renderers.shading.envmap_files import read_envmap

    run = Path(run)
    if not (run / "model_pbr.ply").is_file():
        raise UserError(f"{run} is not a relight run (no model_pbr.ply); run `scorelift relight` first")
    try:
        scene = load_pbr_scene(run / "model_pbr.ply")
    except SplatFormatError as e:
        raise UserError(str(e)) from None
    env_file = run / "environment.npy" if (run / "environment.npy").is_file() else run / "environment.hdr"
    return scene, read_envmap(env_file)


def pass_images(out, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """{pass: [B,H,W,4] RGBA in [0,1]} from a PBRGaussianScene render over a black background."""
    alpha = out.alpha
    images = {}
    for name in names:
        if name == "rgb":
            colour = (out.rgb / alpha.clamp_min(1e-6)).clamp(0, 1) * (alpha > 0)  # un-premultiply
        elif name == "albedo":
            colour = srgb_encode(out.extras["albedo"])
        elif name == "normal":
            colour = (out.normal + 1) / 2
        else:
            colour = out.extras[name].expand(*alpha.shape[:-1], 3)
        images[name] = torch.cat([colour.clamp(0, 1), alpha], dim=-1)
    return images


@torch.no_grad()
def render_passes(scene, cameras: Cameras, names: Sequence[str], out_dir: str | Path, passes: Sequence[str] | None,
                  light: EnvironmentLight, background=(1.0, 1.0, 1.0), chunk: int = 4) -> int:
    """Write DIR/<pass>/<name> for every camera and pass (passes None: composited rgb PNGs in DIR itself).

    Returns the number of files written.
    """
    from core.export.video import write_png

    out_dir = Path(out_dir)
    written = 0
    for start in range(0, len(cameras), chunk):
        views = cameras[start:start + chunk]
        if passes is None:
            rgb = scene.render(views, torch.tensor(background, dtype=torch.float32), light=light).rgb
            for i, image in enumerate(rgb):
                write_png(out_dir / names[start + i], image)
                written += 1
            continue
        out = scene.render(views, torch.zeros(3), light=light)
        for name, images in pass_images(out, passes).items():
            for i, image in enumerate(images):
                write_png(out_dir / name / names[start + i], image)
                written += 1
    return written
