"""Environment map files: Radiance .hdr (RGBE) and OpenEXR through OpenCV, and .npy.

All hold an equirect map [H,W,3] of linear float radiance in Blender's world mapping
(renderers.shading.envmap: +Z up, +X at the image centre, row 0 the zenith).
OpenCV stores images BGR; the channels are swapped here. imageio is not used for .hdr:
without the FreeImage plugin it silently writes a TIFF under an .hdr name. OpenEXR is
available only where the installed OpenCV build has the codec (`exr_supported`);
OPENCV_IO_ENABLE_OPENEXR is set before cv2 is imported, as OpenCV requires.

Problems a user causes (missing or unreadable file, wrong shape, negative or non-finite
values, unknown suffix) raise `core.errors.UserError` with the path in the message.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.errors import UserError

ENVMAP_SUFFIXES = (".hdr", ".exr", ".npy")


def _cv2():
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    import cv2

    return cv2


def exr_supported() -> bool:
    """Whether this OpenCV build reads and writes OpenEXR."""
    cv2 = _cv2()
    return bool(cv2.haveImageWriter(".exr")) and bool(cv2.haveImageReader(".exr") if hasattr(cv2, "haveImageReader")
                                                       else True)


def check_envmap(image: np.ndarray, source: str) -> np.ndarray:
    """float32 [H,W,3] from an array that should be one; UserError naming `source` otherwise."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] < 2 or image.shape[1] < 2:
        raise UserError(f"{source}: an environment map must be an equirect image [H,W,3], got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating) and not np.issubdtype(image.dtype, np.integer):
        raise UserError(f"{source}: environment map values must be numbers, got {image.dtype}")
    image = image.astype(np.float32)
    if not np.isfinite(image).all() or (image < 0).any():
        raise UserError(f"{source}: environment map values must be finite linear radiance >= 0")
    return image


def read_envmap(path: str | Path) -> np.ndarray:
    """float32 [H,W,3] linear RGB from .hdr, .exr or .npy (UserError if missing, unreadable or mis-shaped)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ENVMAP_SUFFIXES:
        raise UserError(f"{path}: unknown environment map type '{suffix}'; use {', '.join(ENVMAP_SUFFIXES)}")
    if not path.is_file():
        raise UserError(f"environment map not found: {path}")
    if suffix == ".npy":
        try:
            image = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{path} is not a readable .npy array: {e}") from None
        return check_envmap(image, str(path))
    if suffix == ".exr" and not exr_supported():
        raise UserError(f"{path}: this OpenCV build cannot read OpenEXR; convert the map to .hdr or .npy")
    cv2 = _cv2()
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise UserError(f"{path} is not a readable {suffix} image")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim == 3 and image.shape[-1] >= 3:
        image = image[..., [2, 1, 0]]  # BGR -> RGB
    return check_envmap(image, str(path))


def write_envmap(path: str | Path, image: np.ndarray) -> Path:
    """Write float [H,W,3] linear RGB as .hdr (RGBE), .exr (float) or .npy (float32); returns the path."""
    path = Path(path)
    image = check_envmap(image, str(path))
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, image)
        return path
    if suffix not in (".hdr", ".exr"):
        raise UserError(f"{path}: unknown environment map type '{suffix}'; use {', '.join(ENVMAP_SUFFIXES)}")
    if suffix == ".exr" and not exr_supported():
        raise UserError(f"{path}: this OpenCV build cannot write OpenEXR; use .hdr or .npy")
    cv2 = _cv2()
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., [2, 1, 0]])):
        raise OSError(f"OpenCV could not write {path}")
    return path
