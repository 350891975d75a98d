"""Atomic file output: a killed run never leaves a half-written file that looks complete.
The ground floor every part may use (renderers included) to write text, images and checkpoints."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator



@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it is renamed onto `path`.

    The temporary name keeps the suffix so writers that choose a format by extension
    (imageio, trimesh, plyfile) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    # mkstemp makes 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def to_uint8(frame):
    """[H,W,C] uint8 array from a uint8 or float-in-[0,1] image [H,W,3|4] (tensor or array)."""
    import numpy as np

    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"a frame must be [H,W,3] or [H,W,4], got {list(arr.shape)}")
    return arr


def write_png(path: str | Path, frame) -> Path:
    """Write one image [H,W,3|4] (uint8, or float in [0,1]) as PNG atomically; returns the path."""
    import imageio.v2 as imageio

    path = Path(path)
    with atomic_path(path) as tmp:
        imageio.imwrite(tmp, to_uint8(frame), format="png")
    return path


def save_torch(path: str | Path, obj) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def append_jsonl(path: str | Path, record: dict) -> None:
    """One JSON line, flushed; a crash loses at most the line being written."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
