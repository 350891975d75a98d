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


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, read from its header (PIL opens lazily)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def check_blender_folder(root: str | Path, splits: tuple[str, ...] = ("train", "test")) -> list[str]:
    """Check a Blender / NeRF-synthetic folder before any work; returns the splits it has.

    transforms_train.json (or transforms.json) is required, transforms_test.json optional.
    Every split must list frames with a transform_matrix, `camera_angle_x` or `fl_x`, and
    images that exist (file_path with or without extension) at the size the file states
    (w/h) or, when it states none, one size for all. Raises core.errors.UserError naming
    the file and what to fix.
    """
    import json

    from core.errors import UserError

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder not found: {root}")
    found = []
    for split in splits:
        tf = root / f"transforms_{split}.json"
        if not tf.is_file() and split == "train" and (root / "transforms.json").is_file():
            tf = root / "transforms.json"
        if not tf.is_file():
            if split == "train":
                raise UserError(f"{root} has no transforms_train.json (or transforms.json): not a Blender/NeRF-synthetic "
                                "folder")
            continue
        try:
            meta = json.loads(tf.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{tf} is not valid JSON: {e}") from None
        frames = meta.get("frames") if isinstance(meta, dict) else None
        if not frames:
            raise UserError(f"{tf} lists no frames: the {split} split is empty")
        if "camera_angle_x" not in meta and "fl_x" not in meta:
            raise UserError(f"{tf} has neither camera_angle_x nor fl_x: the cameras' focal length is unknown")
        stated = (int(meta["w"]), int(meta["h"])) if "w" in meta and "h" in meta else None
        first = None
        for i, frame in enumerate(frames):
            if not isinstance(frame, dict) or "transform_matrix" not in frame:
                raise UserError(f"{tf}: frame {i} has no transform_matrix")
            name = str(frame.get("file_path", ""))
            path = root / name
            candidates = [path] if path.suffix else [path.with_suffix(s) for s in (".png", ".jpg", ".jpeg")]
            image = next((p for p in candidates if p.is_file()), None)
            if image is None:
                raise UserError(f"{tf}: frame {i} image not found: {candidates[0]}")
            try:
                size = _image_size(image)
            except Exception as e:  # PIL raises several types for a non-image
                raise UserError(f"{image} is not a readable image: {e}") from None
            expected = stated or first
            if expected is not None and size != expected:
                where = f"{tf} states {expected[0]}x{expected[1]}" if stated else f"frame 0 is {expected[0]}x{expected[1]}"
                raise UserError(f"{image} is {size[0]}x{size[1]} but {where}: all images must have the stated size")
            first = first or size
        found.append(split)
    return found
