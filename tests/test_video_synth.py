"""The synthetic test videos (core/data/video_synth.py) tell the truth: background tracks are
the closed-form projection of a ray-plane intersection, masks span the projected extent of
each object's vertices, and occlusion flags agree with what the instance masks show."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.data.video import load_video_clip
from core.data.video_synth import FLOOR_Z, WALL_Y, SyntheticVideoConfig, main, render_video

# no pillars: the background is then the wall and the floor, whose ray intersections and
# occlusions have closed forms
CFG = SyntheticVideoConfig(frames=8, width=64, height=64, pan_deg=12.0, dolly=0.4, crates=0, seed=0)


@pytest.fixture(scope="module")
def video():
    return render_video(CFG)


def _project(points, c2w, K):
    """World points [N,3] -> OpenCV pixels [N,2] and z-depth [N], written from the OpenGL
    camera definition (camera looks down -Z, +Y up) rather than through a w2c helper."""
    R, eye = c2w[:3, :3].double(), c2w[:3, 3].double()
    p = (points.double() - eye) @ R                      # camera-frame coordinates (R orthonormal)
    depth = -p[:, 2]
    x = K[0, 2] + K[0, 0] * p[:, 0] / depth
    y = K[1, 2] - K[1, 1] * p[:, 1] / depth
    return torch.stack([x, y], -1), depth


def _interior(mask):
    """[T,H,W] True where the 3x3 neighbourhood holds a single id (away from mask edges)."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), mode="edge")
    same = np.ones(mask.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= padded[:, dy:dy + mask.shape[1], dx:dx + mask.shape[2]] == mask
    return same


def test_camera_pans_by_the_configured_angle(video):
    forward = -video.c2w[:, :3, 2]
    angle = math.degrees(math.acos(float(forward[0] @ forward[-1])))
    assert angle == pytest.approx(CFG.pan_deg, abs=1e-3)
    assert float((video.c2w[-1, :3, 3] - video.c2w[0, :3, 3]).norm()) == pytest.approx(CFG.dolly, abs=1e-5)


def test_background_tracks_follow_the_closed_form_projection(video):
    K = video.K.double()
    background = video.track_owner == 0
    q = video.query_points[background].double()
    # ray through each query pixel of frame 0 (OpenGL camera: x right, y up, looking down -z)
    R0, eye0 = video.c2w[0, :3, :3].double(), video.c2w[0, :3, 3].double()
    d_cam = torch.stack([(q[:, 1] - K[0, 2]) / K[0, 0], -(q[:, 2] - K[1, 2]) / K[1, 1], -torch.ones(len(q))], -1)
    d = d_cam @ R0.T
    hit_wall = (WALL_Y - eye0[1]) / d[:, 1]
    hit_floor = torch.where(d[:, 2] < 0, (FLOOR_Z - eye0[2]) / d[:, 2], torch.full_like(d[:, 2], math.inf))
    points = eye0 + torch.minimum(hit_wall, hit_floor)[:, None] * d
    assert background.sum() > 100
    for t in range(CFG.frames):
        expected, _ = _project(points, video.c2w[t], K)
        got = video.tracks[background, t].double()
        assert torch.allclose(got, expected, atol=2e-3), (t, (got - expected).abs().max())
    assert torch.allclose(video.tracks[:, 0], video.query_points[:, 1:], atol=1e-3)


def test_masks_span_the_projected_extent_of_each_object(video):
    K = video.K.double()
    checked = 0
    for t in range(CFG.frames):
        boxes = []
        for k, verts in enumerate(video.object_vertices):
            pose = video.object_poses[k, t].double()
            world = verts.double() @ pose[:3, :3].T + pose[:3, 3]
            uv, _ = _project(world, video.c2w[t], K)
            boxes.append((uv.min(0).values, uv.max(0).values))
        for k, (lo, hi) in enumerate(boxes):
            inside = bool((lo > 0).all() and (hi[0] < CFG.width - 1) and (hi[1] < CFG.height - 1))
            overlaps = any(bool((lo <= o_hi).all() and (o_lo <= hi).all())
                           for j, (o_lo, o_hi) in enumerate(boxes) if j != k)
            ys, xs = torch.nonzero(video.masks[t] == k + 1, as_tuple=True)
            # mask pixels (centres) always lie inside the projected extent
            assert xs.min() >= lo[0] - 1e-6 and xs.max() <= hi[0] + 1e-6
            assert ys.min() >= lo[1] - 1e-6 and ys.max() <= hi[1] + 1e-6
            if inside and not overlaps:  # then the whole silhouette shows: its box is the extent's
                assert abs(float(xs.min() - lo[0])) <= 1 and abs(float(xs.max() - hi[0])) <= 1
                assert abs(float(ys.min() - lo[1])) <= 1 and abs(float(ys.max() - hi[1])) <= 1
                checked += 1
    assert checked >= 4


def test_occlusion_flags_agree_with_the_masks(video):
    masks = video.masks.numpy()
    interior = _interior(masks)
    T, H, W = masks.shape
    uv = video.tracks.numpy()
    col, row = np.rint(uv[..., 0]).astype(int), np.rint(uv[..., 1]).astype(int)
    in_frame = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    t_index = np.broadcast_to(np.arange(T), col.shape)
    c, r = col.clip(0, W - 1), row.clip(0, H - 1)
    seen_id, clean = masks[t_index, r, c], interior[t_index, r, c] & in_frame
    owner = video.track_owner.numpy()[:, None].repeat(T, 1)
    occluded = video.occluded.numpy()
    assert occluded[~in_frame].all()  # out of frame is occluded
    # the background is hidden only by an object in front of it: flag <=> an object's mask there
    bg = clean & (owner == 0)
    assert (occluded[bg] == (seen_id[bg] != 0)).all()
    assert (occluded[bg]).sum() >= 10, "the clip should hide some background points"
    # a visible object point shows its own object
    obj_visible = clean & (owner > 0) & ~occluded
    assert obj_visible.sum() > 20 and (seen_id[obj_visible] == owner[obj_visible]).all()
    # an object point seen by another object's mask is flagged
    obj_covered = clean & (owner > 0) & (seen_id != owner)
    assert occluded[obj_covered].all()


def test_command_line_writes_a_clip_the_video_reader_accepts(tmp_path):
    main(["--out", str(tmp_path), "--frames", "3", "--size", "32"])
    clip = load_video_clip(tmp_path / "frames", tmp_path / "masks")
    gt = np.load(tmp_path / "gt.npz")
    assert clip.frames.shape == (3, 32, 32, 3) and clip.object_ids == [1, 2]
    assert np.allclose(gt["K"], clip.K.numpy())  # same default fov, same convention
    assert gt["tracks"].shape[1:] == (3, 2) and gt["query_points"].shape[1] == 3
    assert gt["c2w"].shape == (3, 4, 4) and gt["depth"].shape == (3, 32, 32)
