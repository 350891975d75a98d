"""Camera motion from background features (core/data/camera_motion.py) against the synthetic
videos' known cameras (core/data/video_synth.py), and the OpenCV -> OpenGL conversion against
the ground floor's own conversion (core.cameras.c2w_to_viewmats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.cameras import c2w_to_viewmats
from core.data.camera_motion import CameraMotionError, estimate_camera_motion, opencv_to_opengl_c2w
from core.data.video_synth import SyntheticVideoConfig, camera_path, render_video
from core.errors import UserError


def _relative_gt(c2w: torch.Tensor) -> torch.Tensor:
    """GT poses with the first camera as the world: inv(c2w_0) c2w_t."""
    c2w = c2w.double()
    return torch.linalg.inv(c2w[0]) @ c2w


def _rotation_errors_deg(estimated: torch.Tensor, truth: torch.Tensor) -> list[float]:
    out = []
    for R_e, R_g in zip(estimated[:, :3, :3].double(), truth[:, :3, :3].double()):
        cos = (float(torch.trace(R_e.T @ R_g)) - 1) / 2
        out.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    return out


def test_opencv_to_opengl_matches_the_ground_floor_conversion():
    c2w = camera_path(SyntheticVideoConfig(frames=5, pan_deg=30, dolly=1.0))
    viewmats = c2w_to_viewmats(c2w).double().numpy()           # OpenCV w2c, world = scene
    w2c_first_camera = viewmats @ np.linalg.inv(viewmats[0])    # OpenCV w2c, world = camera 0
    got = opencv_to_opengl_c2w(w2c_first_camera)
    assert np.allclose(got[0], np.eye(4), atol=1e-6)
    assert np.allclose(got, _relative_gt(c2w).numpy(), atol=1e-5)


def test_pure_pan_rotations_within_half_a_degree():
    # 8 frames at 64 px turning 12 degrees: a tiny clip, still ~25-50 background matches a pair
    video = render_video(SyntheticVideoConfig(frames=8, width=64, height=64, pan_deg=12.0, dolly=0.0, seed=0))
    motion = estimate_camera_motion(video.frames, video.masks, video.K)
    truth = _relative_gt(video.c2w)
    errors = _rotation_errors_deg(motion.c2w, truth)
    assert torch.allclose(motion.c2w[0], torch.eye(4))
    assert max(errors) < 0.5, errors  # measured max 0.15 degrees
    assert motion.method[1:] == ["rotation"] * 7
    assert torch.allclose(motion.c2w[:, :3, 3], torch.zeros(8, 3))
    # the estimate is a rotation, not a reflection or a scaled matrix
    R = motion.c2w[:, :3, :3].double()
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(8, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(8, dtype=torch.float64), atol=1e-5)


def test_a_pan_past_the_first_view_is_chained_through_keyframes():
    # 60 degrees over 8 frames of a 60-degree field of view: the last frames share nothing
    # with frame 0, so they are measured against later reference frames
    video = render_video(SyntheticVideoConfig(frames=8, width=64, height=64, pan_deg=60.0, dolly=0.0, seed=0))
    motion = estimate_camera_motion(video.frames, video.masks, video.K)
    assert motion.reference[-1] > 0
    errors = _rotation_errors_deg(motion.c2w, _relative_gt(video.c2w))
    assert max(errors) < 0.5, errors  # measured max 0.14 degrees


def test_panning_and_dollying_camera_rotation_direction_and_scale():
    # 128 px: at 64 px a 0.4-unit dolly before a far wall is read as a pan (docs/video4d.md)
    video = render_video(SyntheticVideoConfig(frames=8, width=128, height=128, pan_deg=12.0, dolly=0.4, seed=0))
    motion = estimate_camera_motion(video.frames, video.masks, video.K)
    truth = _relative_gt(video.c2w)
    errors = _rotation_errors_deg(motion.c2w, truth)
    assert max(errors) < 1.0, errors  # measured max 0.61 degrees
    directions = []
    for t in range(1, 8):
        t_est, t_gt = motion.c2w[t, :3, 3].double(), truth[t, :3, 3]
        cos = float(t_est @ t_gt / (t_est.norm() * t_gt.norm()))
        directions.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    assert max(directions) < 15.0, directions  # measured max 5.1 degrees (frame 3)
    # one scale for the whole clip (monocular: the value itself is a convention)
    ratios = [float(motion.c2w[t, :3, 3].norm() / truth[t, :3, 3].norm()) for t in range(3, 8)]
    assert max(ratios) / min(ratios) < 1.15, ratios  # measured 1.04
    # the convention: background points' median depth in frame 0 is 1, so the ratio is about
    # 1 / (median true depth of the background in frame 0); keypoints are not every pixel
    expected = 1.0 / float(video.depth[0][video.masks[0] == 0].median())
    assert 1 / 1.3 < np.median(ratios) / expected < 1.3, (ratios, expected)  # measured 1.13


def test_textureless_video_is_a_user_error():
    frames = np.full((3, 48, 48, 3), 0.5)
    with pytest.raises(UserError, match="cannot match the background of frame 1"):
        estimate_camera_motion(frames, None, np.array([[40.0, 0, 23.5], [0, 40.0, 23.5], [0, 0, 1]]))
    assert issubclass(CameraMotionError, UserError)


def _project_cv(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    cam = points @ R.T + t
    return (cam[:, :2] / cam[:, 2:]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]


def test_two_view_geometry_on_exact_correspondences():
    from scipy.spatial.transform import Rotation

    from core.data.two_view import relative_pose, rotation_fit, triangulate_depths

    rng = np.random.default_rng(3)
    K = np.array([[110.0, 0, 63.5], [0, 110.0, 63.5], [0, 0, 1]])
    points = np.c_[rng.uniform(-2, 2, (200, 2)), rng.uniform(3, 8, 200)]  # in front of camera p
    R = Rotation.from_euler("xyz", [2.0, -5.0, 1.0], degrees=True).as_matrix()
    p = _project_cv(points, np.eye(3), np.zeros(3), K)
    # a pure rotation: Kabsch recovers it, and the pair is classified as one
    q_rot = _project_cv(points, R, np.zeros(3), K)
    assert np.allclose(rotation_fit(p, q_rot, K), R, atol=1e-9)
    _, t_rot, _, rotation_only = relative_pose(p, q_rot, K, 1.0, 0.9, 20)
    assert rotation_only and np.allclose(t_rot, 0)
    # a general motion: R and the direction of t, then depths by triangulation
    t = np.array([0.6, 0.1, 0.2])
    q = _project_cv(points, R, t, K)
    R_est, t_est, inliers, rotation_only = relative_pose(p, q, K, 1.0, 0.9, 20)
    assert not rotation_only and inliers.all()
    assert np.allclose(R_est, R, atol=1e-6) and np.allclose(t_est, t / np.linalg.norm(t), atol=1e-6)
    pose_q = np.eye(4)
    pose_q[:3, :3], pose_q[:3, 3] = R, t
    assert np.allclose(triangulate_depths(p, q, K, np.eye(4), pose_q), points[:, 2], rtol=1e-6)
