"""The README's relighting picture: a relight run seen under environments it never saw.

For each scene of a `bench/relight.py` output folder, one row per test view group: the
ground truth under environment B, the progressive run relit under B, the same under C,
and the recovered albedo next to the true one, over a dark and a light background.

    OMP_NUM_THREADS=1 python bench/relight.py --size 64 --scenes shadowed_torus red_cube \
        --set batch_size=1 stages.1.steps=100 stages.2.steps=100 stages.3.steps=100
    OMP_NUM_THREADS=1 python bench/readme_relit_figure.py --bench runs/bench-relight   # -> docs/figures/relit.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DARK = (0.08, 0.08, 0.10)
LIGHT = (1.0, 1.0, 1.0)


def scene_rows(bench: Path, scene_name: str, views: int, size: int) -> list[tuple[str, np.ndarray]]:
    """[(caption, [size, 6*views*size... ] uint8)]: GT/relit under B and C, true/recovered albedo."""
    from core.data.nerf_synthetic import load_dataset
    from renderers.gaussian.pbr_ply import load_pbr_scene
    from renderers.shading.environment import EnvironmentLight
    from renderers.shading.tonemap import srgb_encode

    data, run = bench / scene_name / "data", bench / scene_name / "progressive"
    gt = np.load(data / "gt.npz")
    scene = load_pbr_scene(run / "model_pbr.ply")
    scene.environment.set_envmap(torch.from_numpy(np.load(run / "environment.npy")))
    rows = []
    for background, bg_name in ((DARK, "dark"), (LIGHT, "light")):
        bg = torch.tensor(background)
        tiles = []
        for key in ("B", "C"):
            test = load_dataset(data, f"test_{key}", size, size, background=background)
            light = EnvironmentLight(torch.from_numpy(np.load(data / f"env_{key}.npy")), levels=6, samples=128)
            with torch.no_grad():
                relit = scene.render(test.cameras[:views], bg, light=light).rgb
            tiles += [test.images[:views], relit]
        with torch.no_grad():
            out = scene.render(test.cameras[:views], bg)
        alpha = out.alpha
        true_albedo = torch.from_numpy(gt["albedo"][:views]).float()
        true_alpha = torch.from_numpy(gt["alpha"][:views]).float()
        if true_albedo.shape[1] != size:
            true_albedo = torch.nn.functional.interpolate(true_albedo.permute(0, 3, 1, 2), size=(size, size),
                                                          mode="area").permute(0, 2, 3, 1)
            true_alpha = torch.nn.functional.interpolate(true_alpha.permute(0, 3, 1, 2), size=(size, size),
                                                         mode="area").permute(0, 2, 3, 1)
        tiles.append(srgb_encode(true_albedo.clamp(0, 1)) * true_alpha + bg * (1 - true_alpha))
        tiles.append(srgb_encode(out.extras["albedo"].clamp(0, 1)) * alpha + bg * (1 - alpha))
        strip = torch.cat([torch.cat(list(t), dim=1) for t in tiles], dim=1)
        rows.append((f"{scene_name} over {bg_name}: true B | relit B | true C | relit C | true albedo | recovered albedo",
                     (strip.clamp(0, 1).numpy() * 255).round().astype(np.uint8)))
    return rows


def compose(rows: list[tuple[str, np.ndarray]], path: Path) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=14)
    caption_h = 20
    width = max(strip.shape[1] for _, strip in rows)
    canvas = Image.new("RGB", (width, sum(caption_h + s.shape[0] for _, s in rows)), (255, 255, 255))
    draw, y = ImageDraw.Draw(canvas), 0
    for caption, strip in rows:
        draw.text((4, y + 3), caption, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(strip), (0, y + caption_h))
        y += caption_h + strip.shape[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench-relight"), help="bench/relight.py's --out")
    parser.add_argument("--scenes", nargs="+", default=["shadowed_torus", "red_cube"])
    parser.add_argument("--views", type=int, default=2, help="test views per group (default 2)")
    parser.add_argument("--size", type=int, default=96, help="tile side in pixels (default 96)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "relit.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for name in args.scenes for row in scene_rows(args.bench, name, args.views, args.size)]
    print(f"wrote {compose(rows, args.out)}")


if __name__ == "__main__":
    main()
