"""A monocular video with instance masks, read and checked: the input of video-to-4D.

Input: an .mp4 (or another container ffmpeg reads, through imageio-ffmpeg) or a folder of
frames (PNG/JPEG, sorted by name), and a folder of per-frame instance masks (PNG; pixel
value = object id, 0 = background). A mask pairs with the frame of the same name (stem),
or, when no name matches, with the frame at the same place in sorted order (then the
counts must agree). Masks must be lossless single-channel images: grayscale, 16-bit or
palette PNGs (the DAVIS layout) whose values are the ids.

Everything a user can get wrong is checked before any frame is decoded where possible
(pairing, empty folders, file kinds) and as frames are decoded otherwise (sizes, images
that do not decode), each as a one-line `UserError` that says what to do.

Conventions of the result:
- frames [T,H,W,3] float32 in [0,1]; masks [T,H,W] int64 object ids (0 = background).
- K [3,3]: pinhole intrinsics in the OpenCV pixel convention, the centre of the top-left
  pixel at (0, 0): cx = (W - 1) / 2, cy = (H - 1) / 2, fx = fy = (W / 2) / tan(fov_x / 2).
  `core.cameras.Cameras` puts pixel centres at +0.5 instead; `VideoClip.cameras` converts.
- The horizontal field of view is unknown in a phone video; DEFAULT_FOV_X_DEG = 60 is a
  typical phone main camera in landscape (about 26 mm equivalent gives 65-70 degrees;
  cropped video modes give less). Give `fov_x_deg` when it is known.
- Stride keeps frames 0, s, 2s, ...; max_resolution bounds the longer side, frames resized
  with area filtering (an average over each output pixel's footprint) and masks with
  centre-aligned nearest neighbour (ids must not blend). Objects and their first visible
  frames are counted after both, on what the pipeline will see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.errors import MissingFileError, UserError

DEFAULT_FOV_X_DEG = 60.0
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png",)
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")


class VideoInputError(UserError):
    """The video, its frames or its masks cannot be used; the message says what to do."""


@dataclass
class VideoClip:
    """A checked video with instance masks.

    frames [T,H,W,3] float32 in [0,1]; masks [T,H,W] int64 (0 = background);
    object_ids: sorted ids > 0 present in some mask; first_visible: id -> index of the first
    frame (in this clip, after the stride) where the object has a pixel; K [3,3] float32,
    OpenCV pixel convention (module docstring); fov_x_deg: the horizontal field of view K
    was built from; names: one per frame (frame file stems, or 00000.. for a video file);
    source_indices: index of each frame in the input before the stride.
    """

    frames: Tensor
    masks: Tensor
    object_ids: list[int]
    first_visible: dict[int, int]
    K: Tensor
    fov_x_deg: float
    names: list[str]
    source_indices: list[int]

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    def cameras(self, c2w: Tensor):
        """`core.cameras.Cameras` for OpenGL c2w [T,4,4] with this clip's intrinsics, moved
        to the Cameras pixel convention (centres at +0.5: cx_cameras = cx_opencv + 0.5)."""
        from core.cameras import Cameras

        K = self.K.clone()
        K[0, 2] += 0.5
        K[1, 2] += 0.5
        return Cameras(c2w, K.expand(len(c2w), 3, 3).clone(), self.width, self.height)


def intrinsics_opencv(width: int, height: int, fov_x_deg: float) -> Tensor:
    """[3,3] K with square pixels, the principal point at the image centre, OpenCV pixel
    convention (centre of the top-left pixel at (0, 0)), from the horizontal fov in degrees."""
    if not 0.0 < fov_x_deg < 180.0:
        raise VideoInputError(f"fov must be between 0 and 180 degrees, got {fov_x_deg}")
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return torch.tensor([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def _listed(folder: Path, suffixes: tuple[str, ...], what: str, kinds: str) -> list[Path]:
    if not folder.exists():
        raise MissingFileError(f"{what} not found: {folder}")
    if not folder.is_dir():
        raise VideoInputError(f"{what} must be a folder of {kinds} files: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        others = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        hint = f" (found {', '.join(others[:3])}{' ...' if len(others) > 3 else ''})" if others else ""
        raise VideoInputError(f"{what} {folder} holds no {kinds} files{hint}")
    return files


def pair_masks(frame_names: list[str], mask_files: list[Path], by_name: bool) -> list[Path]:
    """The mask file of each frame: same stem when `by_name` (a frame folder) and the stems
    match, else the same place in sorted order. Raises VideoInputError naming the first
    mismatched names."""
    mask_stems = [p.stem for p in mask_files]
    if by_name and set(frame_names) == set(mask_stems):
        lookup = dict(zip(mask_stems, mask_files))
        return [lookup[n] for n in frame_names]
    overlap = by_name and bool(set(frame_names) & set(mask_stems))
    if len(frame_names) == len(mask_files) and not overlap:
        return list(mask_files)
    if by_name and overlap:
        missing = [n for n in frame_names if n not in set(mask_stems)]
        extra = [n for n in mask_stems if n not in set(frame_names)]
        parts = []
        if missing:
            parts.append(f"{len(missing)} frame(s) without a mask (first: {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} mask(s) without a frame (first: {extra[0]}.png)")
        raise VideoInputError("frames and masks do not match: " + "; ".join(parts) +
                              "; give one mask PNG per frame, named like the frame")
    first = (f"first unpaired: frame {frame_names[len(mask_files)]}" if len(frame_names) > len(mask_files)
             else f"first unpaired: mask {mask_files[len(frame_names)].name}")
    raise VideoInputError(f"{len(frame_names)} frames but {len(mask_files)} masks ({first}); "
                          "give one mask PNG per frame")


def read_frame(path: Path) -> np.ndarray:
    """[H,W,3] uint8 from an image file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise VideoInputError(f"frame {path} is not a readable image ({type(e).__name__}); give PNG or JPEG frames") \
            from None


def read_mask(path: Path) -> np.ndarray:
    """[H,W] int64 object ids from a grayscale, 16-bit or palette PNG (palette indices are the ids)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise VideoInputError(f"mask {path} is not a readable PNG ({type(e).__name__})") from None
    if arr.ndim == 3:
        if mode in ("LA", "RGBA") or not (arr[..., :3] == arr[..., :1]).all():
            raise VideoInputError(f"mask {path} is a colour image ({mode}); save masks as grayscale or palette PNGs "
                                  "whose pixel values are object ids (0 = background)")
        arr = arr[..., 0]
    return arr.astype(np.int64)


def _video_frames(path: Path, stride: int) -> tuple[list[np.ndarray], int]:
    """Every `stride`-th frame of a video file as [H,W,3] uint8, and the total frame count."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        kept, count = [], 0
        for buffer in reader:
            if count % stride == 0:
                kept.append(np.frombuffer(buffer, np.uint8).reshape(height, width, 3))
            count += 1
    except (RuntimeError, OSError, StopIteration, KeyError) as e:
        raise VideoInputError(f"{path} is not a readable video ({type(e).__name__}); give an .mp4 or a folder of "
                              "PNG/JPEG frames") from None
    if count == 0:
        raise VideoInputError(f"{path} holds no frames; give an .mp4 or a folder of PNG/JPEG frames")
    return kept, count


def _resize(frames: Tensor, masks: Tensor, max_resolution: int | None) -> tuple[Tensor, Tensor]:
    T, H, W, _ = frames.shape
    if not max_resolution or max(H, W) <= max_resolution:
        return frames, masks
    scale = max_resolution / max(H, W)
    size = (max(1, round(H * scale)), max(1, round(W * scale)))
    frames = F.interpolate(frames.permute(0, 3, 1, 2), size=size, mode="area").permute(0, 2, 3, 1)
    # nearest-exact samples the source pixel under each output pixel's centre (plain nearest is off by half a pixel)
    masks = F.interpolate(masks[:, None].double(), size=size, mode="nearest-exact")[:, 0].long()
    return frames.clamp(0, 1), masks


def load_video_clip(
    video: str | Path,
    masks: str | Path,
    stride: int = 1,
    max_resolution: int | None = None,
    fov_x_deg: float | None = None,
) -> VideoClip:
    """Read and check a video (file or frame folder) and its instance-mask folder.

    stride >= 1 keeps every stride-th frame; max_resolution bounds the longer side in pixels
    (None: the input size); fov_x_deg: horizontal field of view (None: DEFAULT_FOV_X_DEG).
    Raises `UserError` (VideoInputError / MissingFileError) for every input mistake.
    """
    video, mask_dir = Path(video), Path(masks)
    if int(stride) != stride or stride < 1:
        raise VideoInputError(f"frame stride must be a whole number >= 1, got {stride}")
    if max_resolution is not None and max_resolution < 8:
        raise VideoInputError(f"max resolution must be at least 8 pixels, got {max_resolution}")
    fov = DEFAULT_FOV_X_DEG if fov_x_deg is None else float(fov_x_deg)
    intrinsics_opencv(1, 1, fov)  # checks the range before any decoding
    if not video.exists():
        raise MissingFileError(f"video not found: {video}")
    mask_files = _listed(mask_dir, MASK_SUFFIXES, "mask folder", "PNG")

    if video.is_dir():
        frame_files = _listed(video, FRAME_SUFFIXES, "frame folder", "PNG/JPEG")
        all_names = [p.stem for p in frame_files]
        if len(set(all_names)) != len(all_names):
            dup = next(n for n in all_names if all_names.count(n) > 1)
            raise VideoInputError(f"frame folder {video} has two frames named {dup} (e.g. .png and .jpg); keep one")
        paired = pair_masks(all_names, mask_files, by_name=True)
        keep = list(range(0, len(frame_files), stride))
        raw_frames = [read_frame(frame_files[i]) for i in keep]
        frame_labels = [f"frame {frame_files[i].name}" for i in keep]
    elif video.suffix.lower() in VIDEO_SUFFIXES:
        raw_frames, count = _video_frames(video, stride)
        all_names = [f"{i:05d}" for i in range(count)]
        paired = pair_masks(all_names, mask_files, by_name=False)
        keep = list(range(0, count, stride))
        frame_labels = [f"frame {i} of {video.name}" for i in keep]
    else:
        raise VideoInputError(f"{video} is not a video or a folder of frames; give an .mp4 (or "
                              f"{', '.join(VIDEO_SUFFIXES[1:])}) or a folder of PNG/JPEG frames")

    height, width = raw_frames[0].shape[:2]
    raw_masks = []
    for label, frame, i in zip(frame_labels, raw_frames, keep):
        if frame.shape[:2] != (height, width):
            raise VideoInputError(f"{label} is {frame.shape[1]}x{frame.shape[0]} but the first frame is "
                                  f"{width}x{height}; all frames must have one size")
        mask = read_mask(paired[i])
        if mask.shape != (height, width):
            raise VideoInputError(f"mask {paired[i].name} is {mask.shape[1]}x{mask.shape[0]} but {label} is "
                                  f"{width}x{height}; masks must have the frames' size")
        raw_masks.append(mask)

    frames = torch.from_numpy(np.stack(raw_frames)).float() / 255.0
    mask_tensor = torch.from_numpy(np.stack(raw_masks))
    frames, mask_tensor = _resize(frames, mask_tensor, max_resolution)
    ids = [int(i) for i in torch.unique(mask_tensor).tolist() if i != 0]
    if not ids:
        raise VideoInputError(f"no object in any mask of {mask_dir}: mark each object with its id (1, 2, ...) "
                              "and the background with 0")
    present = torch.stack([(mask_tensor == i).flatten(1).any(1) for i in ids])  # [n_objects, T]
    first_visible = {i: int(present[k].nonzero()[0]) for k, i in enumerate(ids)}
    names = [all_names[i] for i in keep]
    T, H, W = mask_tensor.shape
    return VideoClip(frames.contiguous(), mask_tensor.contiguous(), ids, first_visible,
                     intrinsics_opencv(W, H, fov), fov, names, keep)
