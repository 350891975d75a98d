"""The reference image of image-to-3D: read, separated from its background, recentred.

A given alpha channel is the mask, unless it is opaque everywhere (what an upload widget or
an editor gives for an ordinary photo: it says nothing about the object); without one, a
plain background is matted out: its
colour is the median of the border pixels and a pixel belongs to the object when it
differs from it by more than a threshold (DreamGaussian asks for a background-removed
image; this covers product shots on plain backgrounds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.errors import UserError


class ReferenceImageError(UserError):
    """The reference image cannot be used; the message says what to do."""


def read_image(path: str | Path) -> np.ndarray:
    """[H,W,3|4] float32 in [0,1] from an image file."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise ReferenceImageError(f"image not found: {path}")
    try:
        arr = iio.imread(path)
    except Exception as e:  # imageio raises many types for files it cannot decode
        raise ReferenceImageError(f"{path} is not a readable image ({type(e).__name__}); give a PNG or JPEG") from None
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ReferenceImageError(f"{path}: expected an RGB or RGBA image, got shape {arr.shape}")
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0
    return arr.astype(np.float32) / scale


def matte(rgb: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """[H,W] mask in {0,1} of pixels that differ from the median border colour by > threshold."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    return (np.abs(rgb - background).max(-1) > threshold).astype(np.float32)


def load_reference(path: str | Path, size: int = 64, fill: float = 0.8, threshold: float = 0.1,
                   background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[Tensor, Tensor]:
    """The object of the image at `path`, centred so its bounding box spans `fill` of a square
    `size` x `size` frame, composited over `background`.

    Returns rgb [1,3,size,size] and mask [1,1,size,size], both in [0,1].
    """
    image = read_image(path)
    rgb = image[..., :3]
    has_mask = image.shape[-1] == 4 and image[..., 3].min() < 1.0
    mask = image[..., 3] if has_mask else matte(rgb, threshold)
    covered = mask > 0.5
    if covered.mean() < 1e-3 or covered.mean() > 0.98:
        raise ReferenceImageError(f"{path}: could not separate the object from the background; give an RGBA image "
                                  "whose alpha is the object's mask, or a photo on a plain background")
    ys, xs = np.nonzero(covered)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = int(np.ceil(max(y1 - y0, x1 - x0) / fill))
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    canvas_rgb = np.empty((side, side, 3), np.float32)
    canvas_rgb[:] = background
    canvas_mask = np.zeros((side, side), np.float32)
    top, left = side // 2 - cy, side // 2 - cx
    sy0, sy1 = max(0, -top), min(rgb.shape[0], side - top)
    sx0, sx1 = max(0, -left), min(rgb.shape[1], side - left)
    alpha = mask[sy0:sy1, sx0:sx1, None]
    canvas_rgb[sy0 + top:sy1 + top, sx0 + left:sx1 + left] = rgb[sy0:sy1, sx0:sx1] * alpha + \
        np.asarray(background, np.float32) * (1 - alpha)
    canvas_mask[sy0 + top:sy1 + top, sx0 + left:sx1 + left] = mask[sy0:sy1, sx0:sx1]
    rgb_t = torch.from_numpy(canvas_rgb).permute(2, 0, 1)[None]
    mask_t = torch.from_numpy(canvas_mask)[None, None]
    rgb_t = F.interpolate(rgb_t, (size, size), mode="area").clamp(0, 1)
    mask_t = F.interpolate(mask_t, (size, size), mode="area").clamp(0, 1)
    return rgb_t, mask_t
