"""The README's pictures, regenerated from scratch: a few text-to-3D assets made with the
default preset (configs/text_to_3d/gaussian_sds.yaml, full steps) on the built-in prior,
each shown as a strip of turntable frames over a dark and a light background.

    OMP_NUM_THREADS=1 python bench/readme_figures.py            # -> docs/figures/turntables.png

The jobs run one after the other into --runs (default runs/readme_figures/<slug>/); a job
whose model.ply exists is skipped and an interrupted one resumes from its checkpoint, so
the script can be stopped and started again. Only the .ply is exported (no mesh bake, no
video): the picture needs the splats alone. Measured: 208.1 s of CPU time for the four default
assets on one thread (`/usr/bin/time -v`, 2026-12-07, the retrained prior; 5.2 min wall beside
two other processes).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/readme_figures.py` from a checkout
    sys.path.insert(0, str(ROOT))

# Colours and shapes the built-in prior knows (docs/builtin_prior.md).
PROMPTS = ["a red cube", "a blue torus", "a yellow cone", "a green sphere"]
DARK = (0.08, 0.08, 0.10)
LIGHT = (1.0, 1.0, 1.0)


def slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")


def make_asset(prompt: str, folder: Path, seed: int) -> Path:
    """Run the default preset on `prompt` into `folder` (resuming, or skipping a finished run);
    returns its model.ply."""
    from core.config import load_config, resolve_preset
    from core.pipelines.text_to_3d import TextTo3DConfig, generate

    model = folder / "model.ply"
    if model.is_file():
        print(f"[{prompt}] done before: {model}")
        return model
    cfg = load_config(TextTo3DConfig, resolve_preset("text_to_3d/gaussian_sds"),
                      [f"seed={seed}", "export=[ply]", "turntable_frames=0"])
    cfg.prompt = prompt
    tic = time.perf_counter()
    generate(cfg, folder)
    print(f"[{prompt}] {time.perf_counter() - tic:.0f} s -> {model}")
    return model


def turntable_strip(model: Path, frames: int, size: int, background) -> np.ndarray:
    """[size, frames*size, 3] uint8: the asset from `frames` azimuths at 15 degrees elevation."""
    from core.cameras import orbit_cameras
    from core.export.assets import load_scene
    from core.export.video import render_frames

    scene = load_scene(model).eval()
    cameras = orbit_cameras(frames, 15.0, 2.5, 45.0, size, size)
    return np.concatenate(list(render_frames(scene, cameras, torch.tensor(background))), axis=1)


def compose(rows: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> Path:
    """One PNG: per asset a caption, its strip over the dark and over the light background."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=15)
    caption_h, gap = 22, 6
    width = max(max(d.shape[1], l.shape[1]) for _, d, l in rows)
    height = sum(caption_h + d.shape[0] + l.shape[0] + gap for _, d, l in rows)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for prompt, dark, light in rows:
        draw.text((4, y + 3), f"{prompt}  (over a dark, then a light background)", fill=(0, 0, 0), font=font)
        y += caption_h
        for strip in (dark, light):
            canvas.paste(Image.fromarray(strip), (0, y))
            y += strip.shape[0]
        y += gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", action="append", default=None,
                        help=f"prompt (repeatable; default {', '.join(PROMPTS)})")
    parser.add_argument("--runs", type=Path, default=Path("runs/readme_figures"), help="where the runs go")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "turntables.png")
    parser.add_argument("--frames", type=int, default=6, help="turntable frames per strip (default 6)")
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--assets-only", action="store_true", help="make the runs, skip the picture")
    args = parser.parse_args(argv)

    prompts = args.prompt or PROMPTS
    models = [make_asset(p, args.runs / slug(p), args.seed) for p in prompts]
    if args.assets_only:
        return 0
    rows = [(p, turntable_strip(m, args.frames, args.size, DARK), turntable_strip(m, args.frames, args.size, LIGHT))
            for p, m in zip(prompts, models)]
    print(f"wrote {compose(rows, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
