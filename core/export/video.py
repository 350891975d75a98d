"""Frames and turntable videos: PNGs and H.264 .mp4, each written atomically.

A frame is [H,W,3] (or [H,W,4]) uint8, or float in [0,1], tensor or array. Videos are
libx264 / yuv420p, which most players need; yuv420p needs even sizes, so odd frames are
padded by one edge pixel rather than resized (no resampling blur).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import imageio.v2 as imageio
import numpy as np
import torch

from core.cameras import Cameras
from core.io import atomic_path, to_uint8, write_png


def write_frames(frames: Iterable, out_dir: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """Write frames as PNGs in `out_dir` named `names` (default frame_0000.png ...); returns the paths."""
    out_dir = Path(out_dir)
    paths = []
    for i, frame in enumerate(frames):
        name = names[i] if names is not None else f"frame_{i:04d}.png"
        paths.append(write_png(out_dir / name, frame))
    return paths


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """[H,W,C] -> [H',W',C] with H', W' even, repeating the last row/column."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: str | Path, frames: Iterable, fps: float = 24.0, quality: int = 8) -> Path:
    """Encode frames (all one size) as an H.264 yuv420p .mp4, atomically; returns the path.

    quality: imageio-ffmpeg's 0..10 scale (10 best).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        # macro_block_size=2: only pad to even sizes, never rescale to multiples of 16.
        writer = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", quality=quality, macro_block_size=2)
        count, size = 0, None
        try:
            for frame in frames:
                arr = pad_to_even(to_uint8(frame)[..., :3])
                if size is None:
                    size = arr.shape
                elif arr.shape != size:
                    raise ValueError(f"all video frames must have one size: {list(size)} then {list(arr.shape)}")
                writer.append_data(arr)
                count += 1
        finally:
            writer.close()
        if count == 0:
            raise ValueError("a video needs at least one frame")
    return path


@dataclass
class TurntableResult:
    frames: list[Path] = field(default_factory=list)
    video: Path | None = None


@torch.no_grad()
def render_frames(scene, cameras: Cameras, background=None, chunk: int = 4) -> Iterable[np.ndarray]:
    """Yield [H,W,3] uint8 renders of any Scene, `chunk` cameras per render call (bounded memory)."""
    for start in range(0, len(cameras), chunk):
        out = scene.render(cameras[start:start + chunk], background)
        for rgb in out.rgb:
            yield to_uint8(rgb)


def turntable(scene, cameras: Cameras, out_dir: str | Path, names: Sequence[str] | None = None,
              background=None, chunk: int = 4, video_name: str | None = "turntable.mp4", fps: float = 24.0,
              progress: bool = True) -> TurntableResult:
    """Render `scene` from every camera into `out_dir` as PNGs (and a video unless video_name is None).

    names: PNG file names per camera (default frame_0000.png ...); background as in Scene.render.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if names is not None and len(names) != len(cameras):
        raise ValueError(f"{len(names)} names for {len(cameras)} cameras")
    names = list(names) if names is not None else [f"frame_{i:04d}.png" for i in range(len(cameras))]
    frames = tqdm(render_frames(scene, cameras, background, chunk), total=len(cameras), desc="render",
                  disable=not progress, leave=False)
    result = TurntableResult()
    kept = []
    for name, frame in zip(names, frames):
        result.frames.append(write_png(out_dir / name, frame))
        if video_name is not None:
            kept.append(frame)
    if video_name is not None:
        result.video = write_video(out_dir / video_name, kept, fps=fps)
    return result
