"""NeRF-synthetic / Blender datasets: `transforms_*.json` + RGBA images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.cameras import Cameras, load_nerf_synthetic
from core.errors import MissingFileError, UserError


@dataclass
class ImageDataset:
    """Posed images. images [N,H,W,3] in [0,1], composited over `background`;
    alphas [N,H,W,1] in [0,1] (ones when the files have no alpha)."""

    cameras: Cameras
    images: Tensor
    alphas: Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.cameras)


def _read_image(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    candidates = [path] if path.suffix else [path.with_suffix(s) for s in (".png", ".jpg", ".jpeg")]
    for p in candidates:
        if p.is_file():
            try:
                return iio.imread(p)
            except Exception as e:  # imageio raises many types for a non-image file
                raise UserError(f"{p} is not a readable image: {e}") from None
    raise MissingFileError(f"image not found: {candidates[0]} (from the transforms file's file_path)")


def load_dataset(
    root: str | Path, split: str = "train", width: int | None = None, height: int | None = None,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> ImageDataset:
    """Load `root/transforms_{split}.json` (or `root/transforms.json`) and its images,
    resized to width x height when given."""
    root = Path(root)
    tf = root / f"transforms_{split}.json"
    if not tf.is_file():
        tf = root / "transforms.json"
    if not tf.is_file():
        raise MissingFileError(f"no transforms_{split}.json or transforms.json in {root}")
    cams, names = load_nerf_synthetic(tf)
    images, alphas = [], []
    for name in names:
        arr = _read_image(root / name).astype(np.float32) / 255.0
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        img = torch.from_numpy(arr[..., :3])
        alpha = torch.from_numpy(arr[..., 3:4]) if arr.shape[-1] == 4 else torch.ones_like(img[..., :1])
        images.append(img)
        alphas.append(alpha)
    H, W = images[0].shape[:2]
    if any(im.shape[:2] != (H, W) for im in images):
        raise UserError(f"images in {root} have different sizes")
    if (W, H) != (cams.width, cams.height):
        cams = cams.resized(W, H)
    imgs = torch.stack(images)
    alps = torch.stack(alphas)
    bg = torch.tensor(background).view(1, 1, 1, 3)
    imgs = imgs * alps + bg * (1 - alps)
    if width and height and (width, height) != (W, H):
        import torch.nn.functional as F

        imgs = F.interpolate(imgs.permute(0, 3, 1, 2), (height, width), mode="area").permute(0, 2, 3, 1)
        alps = F.interpolate(alps.permute(0, 3, 1, 2), (height, width), mode="area").permute(0, 2, 3, 1)
        cams = cams.resized(width, height)
    return ImageDataset(cams, imgs.contiguous(), alps.contiguous(), names)
