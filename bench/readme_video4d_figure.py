"""The README's video-to-4D figure: input frames, their re-renders from the 4D scene, and the
orbiting novel view at the same times, from a `bench/video4d.py` output folder.

    python bench/readme_video4d_figure.py --bench runs/v4d --out docs/figures/video4d.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bench", type=Path, required=True, help="a bench/video4d.py --out folder (clip/ and run/)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--times", type=int, nargs="+", default=[0, 8, 16, 23])
    args = p.parse_args()
    frames = sorted((args.bench / "clip" / "frames").glob("*.png"))
    video = iio.imread(args.bench / "run" / "novel_view.mp4")
    per_frame = len(video) // len(frames)
    rows = [[np.asarray(Image.open(frames[t]).convert("RGB")) for t in args.times],
            [np.asarray(Image.open(args.bench / "run" / "reconstruction" / f"frame_{t:04d}.png").convert("RGB"))
             for t in args.times],
            [video[min(len(video) - 1, t * per_frame + per_frame // 2)] for t in args.times]]
    grid = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.out)
    print(f"{args.out}: rows input / re-rendered / novel view, frames {args.times}")


if __name__ == "__main__":
    main()
