"""Video + instance-mask input (core/data/video.py): every bad case is a UserError with a
message that names the problem, an .mp4 and the same frames as PNGs read the same, and
stride / max resolution / fov do what the docstring says (checked against numpy block
averages and a closed-form K)."""

from __future__ import annotations

import math

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from core.data.video import DEFAULT_FOV_X_DEG, load_video_clip
from core.errors import UserError

T, H, W = 6, 24, 32


def _frames(rng=None):
    rng = rng or np.random.default_rng(0)
    return [(rng.random((H, W, 3)) * 255).astype(np.uint8) for _ in range(T)]


def _masks():
    """Object 1 in every frame; object 2 appears from frame 2."""
    out = []
    for t in range(T):
        m = np.zeros((H, W), np.uint8)
        m[4:10, 2 + t:8 + t] = 1
        if t >= 2:
            m[14:20, 20:26] = 2
        out.append(m)
    return out


def _write(folder, frames=None, masks=None, frame_names=None, mask_names=None, frame_ext=".png"):
    frames = _frames() if frames is None else frames
    masks = _masks() if masks is None else masks
    fdir, mdir = folder / "frames", folder / "masks"
    fdir.mkdir(exist_ok=True)
    mdir.mkdir(exist_ok=True)
    frame_names = frame_names or [f"{i:04d}" for i in range(len(frames))]
    mask_names = mask_names or [f"{i:04d}" for i in range(len(masks))]
    for name, f in zip(frame_names, frames):
        Image.fromarray(f).save(fdir / f"{name}{frame_ext}")
    for name, m in zip(mask_names, masks):
        Image.fromarray(m).save(mdir / f"{name}.png")
    return fdir, mdir


def _write_mp4(path, frames):
    # libx264rgb at qp 0 is lossless in RGB (no YUV conversion), so the decoded frames must
    # equal the PNG ones exactly; a lossy codec would need a tolerance of many grey levels
    # on this noise texture.
    writer = imageio_ffmpeg.write_frames(str(path), (W, H), codec="libx264rgb", pix_fmt_out="rgb24",
                                         output_params=["-qp", "0"], macro_block_size=1)
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()


def test_frame_folder_reads_frames_masks_ids_and_first_frames(tmp_path):
    frames = _frames()
    fdir, mdir = _write(tmp_path, frames)
    clip = load_video_clip(fdir, mdir)
    assert clip.frames.shape == (T, H, W, 3) and clip.frames.dtype == torch.float32
    assert torch.equal(clip.frames, torch.from_numpy(np.stack(frames)).float() / 255)
    assert clip.masks.dtype == torch.int64 and torch.equal(clip.masks, torch.from_numpy(np.stack(_masks())).long())
    assert clip.object_ids == [1, 2]
    assert clip.first_visible == {1: 0, 2: 2}  # object 2 is absent from frame 0: fine, starts at 2
    assert clip.names == [f"{i:04d}" for i in range(T)]
    # default fov, OpenCV pixel centres: fx = (W/2)/tan(30 deg), principal point at the middle pixel
    f = (W / 2) / math.tan(math.radians(DEFAULT_FOV_X_DEG / 2))
    assert torch.allclose(clip.K, torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]]))


def test_mp4_and_png_folder_read_the_same_frames(tmp_path):
    frames = _frames()
    fdir, mdir = _write(tmp_path, frames)
    _write_mp4(tmp_path / "clip.mp4", frames)
    from_png = load_video_clip(fdir, mdir)
    from_mp4 = load_video_clip(tmp_path / "clip.mp4", mdir)
    assert from_mp4.frames.shape == from_png.frames.shape
    assert torch.equal(from_mp4.frames, from_png.frames)
    assert torch.equal(from_mp4.masks, from_png.masks)
    strided = load_video_clip(tmp_path / "clip.mp4", mdir, stride=2)
    assert torch.equal(strided.frames, from_png.frames[::2]) and strided.source_indices == [0, 2, 4]


def test_masks_pair_by_sorted_order_when_names_differ(tmp_path):
    fdir, mdir = _write(tmp_path, mask_names=[f"mask_{i:03d}" for i in range(T)])
    clip = load_video_clip(fdir, mdir)
    assert torch.equal(clip.masks, torch.from_numpy(np.stack(_masks())).long())


def test_stride_and_max_resolution(tmp_path):
    frames = _frames()
    fdir, mdir = _write(tmp_path, frames)
    clip = load_video_clip(fdir, mdir, stride=2, max_resolution=16, fov_x_deg=50)
    assert clip.names == ["0000", "0002", "0004"] and clip.source_indices == [0, 2, 4]
    assert clip.frames.shape == (3, H // 2, W // 2, 3)  # longer side 32 -> 16
    # area filter at a factor of 2 is the mean of each 2x2 block
    ref = np.stack(frames)[::2].astype(np.float64) / 255
    ref = ref.reshape(3, H // 2, 2, W // 2, 2, 3).mean(axis=(2, 4))
    assert np.allclose(clip.frames.numpy(), ref, atol=1e-6)
    # masks: the source pixel under each output pixel's centre, never a blend of ids
    assert torch.equal(clip.masks, torch.from_numpy(np.stack(_masks())[::2, 1::2, 1::2]).long())
    f = (W / 4) / math.tan(math.radians(25))
    assert clip.K[0, 0].item() == pytest.approx(f) and clip.K[0, 2].item() == pytest.approx((W / 2 - 1) / 2)
    # a max resolution above the input size changes nothing
    assert load_video_clip(fdir, mdir, max_resolution=512).frames.shape == (T, H, W, 3)


def test_cameras_conversion_shifts_the_principal_point_by_half_a_pixel(tmp_path):
    clip = load_video_clip(*_write(tmp_path))
    cams = clip.cameras(torch.eye(4).repeat(T, 1, 1))
    assert cams.K[0, 0, 2].item() == pytest.approx(W / 2) and cams.K[0, 1, 2].item() == pytest.approx(H / 2)


@pytest.mark.parametrize("case, message", [
    ("missing_mask", "1 frame(s) without a mask (first: 0003)"),
    ("extra_mask", "1 mask(s) without a frame (first: 0099.png)"),
    ("count_mismatch", "6 frames but 5 masks"),
    ("mask_size", "mask 0000.png is 16x12 but frame 0000.png is 32x24"),
    ("not_an_image", "is not a readable image"),
    ("not_a_video", "is not a video or a folder of frames"),
    ("broken_video", "is not a readable video"),
    ("no_object", "no object in any mask"),
    ("empty_frames", "holds no PNG/JPEG files"),
    ("empty_masks", "holds no PNG files"),
    ("missing_video", "video not found"),
    ("colour_mask", "is a colour image"),
    ("frame_size", "all frames must have one size"),
    ("bad_stride", "frame stride must be a whole number"),
    ("bad_fov", "fov must be between 0 and 180"),
])
def test_bad_input_is_a_user_error_with_a_specific_message(tmp_path, case, message):
    kwargs = {}
    if case == "missing_mask":
        fdir, mdir = _write(tmp_path)
        (mdir / "0003.png").unlink()
    elif case == "extra_mask":
        fdir, mdir = _write(tmp_path)
        Image.fromarray(_masks()[0]).save(mdir / "0099.png")
    elif case == "count_mismatch":
        fdir, mdir = _write(tmp_path, mask_names=[f"m{i}" for i in range(T)], masks=_masks()[:5])
    elif case == "mask_size":
        fdir, mdir = _write(tmp_path, masks=[m[::2, ::2] for m in _masks()])
    elif case == "not_an_image":
        fdir, mdir = _write(tmp_path)
        (fdir / "0002.png").write_bytes(b"this is not a png")
    elif case == "not_a_video":
        _, mdir = _write(tmp_path)
        fdir = tmp_path / "notes.txt"
        fdir.write_text("hello")
    elif case == "broken_video":
        _, mdir = _write(tmp_path)
        fdir = tmp_path / "clip.mp4"
        fdir.write_bytes(b"\x00" * 64)
    elif case == "no_object":
        fdir, mdir = _write(tmp_path, masks=[np.zeros((H, W), np.uint8)] * T)
    elif case == "empty_frames":
        _, mdir = _write(tmp_path)
        fdir = tmp_path / "empty"
        fdir.mkdir()
    elif case == "empty_masks":
        fdir, _ = _write(tmp_path)
        mdir = tmp_path / "empty"
        mdir.mkdir()
    elif case == "missing_video":
        _, mdir = _write(tmp_path)
        fdir = tmp_path / "nowhere.mp4"
    elif case == "colour_mask":
        fdir, mdir = _write(tmp_path)
        colour = np.zeros((H, W, 3), np.uint8)
        colour[2:5, 2:5] = (255, 0, 0)
        Image.fromarray(colour).save(mdir / "0001.png")
    elif case == "frame_size":
        fdir, mdir = _write(tmp_path)
        Image.fromarray(_frames()[0][:20]).save(fdir / "0004.png")
    elif case == "bad_stride":
        fdir, mdir = _write(tmp_path)
        kwargs = {"stride": 0}
    elif case == "bad_fov":
        fdir, mdir = _write(tmp_path)
        kwargs = {"fov_x_deg": 190}
    with pytest.raises(UserError) as info:
        load_video_clip(fdir, mdir, **kwargs)
    text = str(info.value)
    assert message in text and "\n" not in text, text
