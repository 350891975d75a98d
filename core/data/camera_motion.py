"""Per-frame camera poses of a monocular video from feature matches on its static background.

DreamScene4D (Chu et al. 2024, Sec. 3.2) estimates the camera of each frame before lifting
the background and the objects; this is its first, feature-based part (the photometric
refinement on the background scene comes with that scene).

Method, for frames 0..T-1 with instance masks (0 = background):
1. SIFT keypoints on background pixels only (the object masks dilated by `mask_margin`
   pixels are excluded: a descriptor that straddles a moving object does not belong to the
   static scene), matched with Lowe's ratio test (nearest / second nearest < `ratio`).
2. Each frame t is matched against a reference frame r (frame 0 at first). The essential
   matrix of the pair (five-point RANSAC, cv2.findEssentialMat) gives R and a unit t with
   x_t = R x_r + t in OpenCV camera coordinates (cv2.recoverPose's cheirality check picks
   the one of four decompositions with points in front of both cameras).
   A pure rotation is fitted as well (RANSAC over two-match samples, each solved in closed
   form by Kabsch on the bearing vectors, residual |q - pi(K R K^-1 p)| in pixels). Model
   selection: when the rotation has at least `rotation_support` (0.9) times the essential
   matrix's inliers, the translation is below what the matches measure and the pair is a
   pure rotation (t = 0). (Torr's GRIC was tried and picked the rotation even more often on
   the synthetic dolly clips: their parallax is a few tenths of a pixel over the noise.)
   Otherwise R, t are refined from cv2.recoverPose's choice by
   robust least squares on the Sampson error (scipy): the five-point solution RANSAC keeps
   fits five points exactly, not the inliers.
3. Scale. Monocular video fixes translation only up to scale; the convention here: the
   median depth of the background points triangulated in the first pair that shows parallax
   is 1, in that pair's reference camera (frame 0 unless the camera only turned before);
   step 5, when it runs, resets it to the median depth in frame 0 of the points it
   triangulates. Later pairs are scaled so that the depths they triangulate for the reference frame's
   keypoints agree (median ratio) with the depths already known for those keypoints.
4. When fewer than `min_inliers` matches survive against the reference, the previous frame
   becomes the reference (its keypoints' depths triangulated from its own pair), so the
   chain follows a camera that pans away from frame 0.
5. Resection: where some pair measured a translation, the frame whose pair gave the longest
   one (the anchor) and frame 0 triangulate the background keypoints of frame 0 (kept when
   in front of both cameras and reprojecting within the RANSAC threshold), and every frame
   that sees enough of them is posed again by PnP (cv2.solvePnPRansac with SQPnP, then
   Levenberg-Marquardt on the inliers): 2D-3D resection uses the depth spread of the scene,
   which the two-view essential matrix of a short baseline confuses with a rotation.
   Then a bundle adjustment refines those poses and the points together (scipy
   least_squares, Huber on the reprojection error, sparse Jacobian; frame 0 fixed, the
   scale put back). (Frames that see too few of frame 0's points keep their step 2-4 pose;
   growing the map beyond frame 0's view is left to the photometric refinement.)
6. Poses are w2c in OpenCV axes with world = camera 0; `opencv_to_opengl_c2w` turns them
   into the project's OpenGL c2w with frame 0 = identity (world = the first camera's OpenGL
   axes: x right, y up, the camera looking down -z).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from core.data.two_view import relative_pose, triangulate_depths
from core.errors import UserError

# OpenCV camera axes (x right, y down, z forward) <-> OpenGL (x right, y up, z backward).
_FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])


class CameraMotionError(UserError):
    """The video's background cannot give the camera motion; the message says why."""


@dataclass
class CameraMotionConfig:
    """ratio: Lowe's ratio test; ransac_threshold_px: RANSAC inlier distance; rotation_support:
    inlier fraction (of the essential matrix's) at which a pure rotation wins; min_inliers: matches a pair needs;
    mask_margin: pixels around object masks left out of matching; max_features per frame;
    bundle_adjust: refine the resected poses and points jointly (step 5)."""

    ratio: float = 0.8
    ransac_threshold_px: float = 1.0
    rotation_support: float = 0.9
    min_inliers: int = 20
    mask_margin: int = 2
    max_features: int = 4000
    bundle_adjust: bool = True


@dataclass
class CameraMotion:
    """c2w [T,4,4] OpenGL camera-to-world, c2w[0] = identity; translation in the scale of
    step 3 of the module docstring. reference [T] the frame each pose was measured against;
    inliers [T] RANSAC inliers of that estimate (0 for frame 0); method [T] how: "identity"
    (frame 0), "pnp" (step 5), "essential" or "rotation" (step 2, the pair had too little
    parallax for a translation)."""

    c2w: Tensor
    reference: list[int]
    inliers: list[int]
    method: list[str]


def opencv_to_opengl_c2w(w2c_cv: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera [...,4,4], world = the first OpenCV camera -> OpenGL c2w [...,4,4],
    world = the first OpenGL camera. The axis flip F = diag(1,-1,-1,1) turns OpenCV camera
    axes into OpenGL ones (y down -> up, z forward -> backward); it applies on both sides
    because the world is itself a camera frame: c2w_gl = F inv(w2c_cv) F."""
    return _FLIP_YZ @ np.linalg.inv(w2c_cv) @ _FLIP_YZ


def _features(gray: np.ndarray, mask: np.ndarray | None, cfg: CameraMotionConfig):
    import cv2

    detect_mask = None
    if mask is not None:
        objects = (mask != 0).astype(np.uint8)
        if cfg.mask_margin > 0:
            size = 2 * cfg.mask_margin + 1
            objects = cv2.dilate(objects, np.ones((size, size), np.uint8))
        detect_mask = ((1 - objects) * 255).astype(np.uint8)
    sift = cv2.SIFT_create(nfeatures=cfg.max_features)
    keypoints, descriptors = sift.detectAndCompute(gray, detect_mask)
    points = np.array([k.pt for k in keypoints], np.float64).reshape(-1, 2)  # OpenCV pixel convention
    return points, descriptors


def _match(desc_a, desc_b, ratio: float) -> np.ndarray:
    """[M,2] index pairs (a, b) passing the ratio test."""
    import cv2

    if desc_a is None or desc_b is None or len(desc_a) < 2 or len(desc_b) < 2:
        return np.zeros((0, 2), int)
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc_a, desc_b, k=2)
    good = [(m.queryIdx, m.trainIdx) for m, n in (p for p in pairs if len(p) == 2) if m.distance < ratio * n.distance]
    return np.array(good, int).reshape(-1, 2)


def estimate_camera_motion(frames, masks, K, cfg: CameraMotionConfig | None = None) -> CameraMotion:
    """Camera of every frame from background feature matches (module docstring).

    frames [T,H,W,3] float in [0,1] (torch or numpy); masks [T,H,W] int object ids, 0 =
    background (None: every pixel is background); K [3,3] OpenCV intrinsics (pixel centres at
    integer coordinates). Raises CameraMotionError when a frame cannot be matched.
    """
    cfg = cfg or CameraMotionConfig()
    frames = np.asarray(frames.cpu() if isinstance(frames, Tensor) else frames, np.float64)
    masks = None if masks is None else np.asarray(masks.cpu() if isinstance(masks, Tensor) else masks)
    K = np.asarray(K.cpu() if isinstance(K, Tensor) else K, np.float64)
    T = frames.shape[0]
    gray = (frames @ np.array([0.299, 0.587, 0.114]) * 255).round().clip(0, 255).astype(np.uint8)
    feats = [_features(gray[t], None if masks is None else masks[t], cfg) for t in range(T)]

    w2c = [np.eye(4)]
    reference, inliers, rotation_only = [0], [0], [False]
    ref = 0
    ref_depth = np.full(len(feats[0][0]), np.nan)  # depth of the reference's keypoints, global scale
    scale = None  # last pair scale, for pairs with no known depths to compare
    last = None   # (frame, matches, inlier mask) of the previous pair, to re-reference on
    for t in range(1, T):
        result = _pair(feats, ref, t, K, cfg)
        if result is None and ref != t - 1:
            ref, ref_depth = t - 1, _reference_depths(feats, last, w2c, K)
            result = _pair(feats, ref, t, K, cfg)
        if result is None:
            raise CameraMotionError(f"cannot match the background of frame {t} to frame {ref}: fewer than "
                                    f"{cfg.min_inliers} consistent matches; the background needs texture and overlap "
                                    "between frames (try a smaller frame stride)")
        R, t_unit, inl, rot, matches = result
        relative = np.eye(4)
        relative[:3, :3] = R
        if not rot:
            p, q = feats[ref][0][matches[inl, 0]], feats[t][0][matches[inl, 1]]
            unit = np.eye(4)
            unit[:3, :3], unit[:3, 3] = R, t_unit
            d_unit = triangulate_depths(p, q, K, np.eye(4), unit)
            known = ref_depth[matches[inl, 0]]
            ok = np.isfinite(known) & (d_unit > 0)
            if ok.sum() >= 8:
                scale = float(np.median(known[ok] / d_unit[ok]))
            elif scale is None:  # the first pair with parallax sets the scale: median depth 1
                scale = 1.0 / float(np.median(d_unit[d_unit > 0]))
            relative[:3, 3] = scale * t_unit
            ref_depth = _update_depths(ref_depth, matches[inl, 0], scale * d_unit)
        w2c.append(relative @ w2c[ref])
        reference.append(ref)
        inliers.append(int(inl.sum()))
        rotation_only.append(bool(rot))
        last = (ref, t, matches[inl])
    method = ["rotation" if rot else "essential" for rot in rotation_only]
    method[0] = "identity"
    _resection(feats, w2c, reference, rotation_only, method, inliers, K, cfg)
    c2w = opencv_to_opengl_c2w(np.stack(w2c))
    return CameraMotion(torch.from_numpy(c2w).float(), reference, inliers, method)


def _resection(feats, w2c, reference, rotation_only, method, inliers, K, cfg: CameraMotionConfig) -> None:
    """Step 5: re-pose frames by PnP against points triangulated from frame 0 and the anchor
    (in place). Leaves everything as is when no pair measured a translation."""
    import cv2

    candidates = [t for t in range(1, len(w2c)) if reference[t] == 0 and not rotation_only[t]]
    if not candidates:
        return
    anchor = max(candidates, key=lambda t: np.linalg.norm(w2c[t][:3, 3]))
    matches = _match(feats[0][1], feats[anchor][1], cfg.ratio)
    p, q = feats[0][0][matches[:, 0]], feats[anchor][0][matches[:, 1]]
    X = cv2.triangulatePoints(K @ w2c[0][:3], K @ w2c[anchor][:3], p.T, q.T)
    X = (X[:3] / X[3]).T
    # keep points in front of both cameras that reproject within the RANSAC threshold in both
    good = np.ones(len(X), bool)
    for pose, pts in ((w2c[0], p), (w2c[anchor], q)):
        cam = X @ pose[:3, :3].T + pose[:3, 3]
        pix = cam @ K.T
        good &= (cam[:, 2] > 0) & (np.linalg.norm(pix[:, :2] / pix[:, 2:] - pts, axis=1) < cfg.ransac_threshold_px)
    if good.sum() < cfg.min_inliers:
        return
    # the scale convention: these points' median depth in camera 0 (= world) is 1
    factor = 1.0 / float(np.median(X[good, 2]))
    X = X * factor
    for pose in w2c:
        pose[:3, 3] *= factor
    points = {int(i): X[k] for k, i in enumerate(matches[:, 0]) if good[k]}  # frame-0 keypoint -> 3D
    observations = [(0, i, feats[0][0][i]) for i in points]  # (frame, frame-0 keypoint, pixel)
    for t in range(1, len(w2c)):
        pairs = _match(feats[0][1], feats[t][1], cfg.ratio)
        pairs = pairs[[int(i) in points for i in pairs[:, 0]]] if len(pairs) else pairs
        if len(pairs) < cfg.min_inliers:
            continue
        object_points = np.stack([points[int(i)] for i in pairs[:, 0]])
        image_points = feats[t][0][pairs[:, 1]]
        ok, rvec, tvec, inl = cv2.solvePnPRansac(object_points, image_points, K, None, flags=cv2.SOLVEPNP_SQPNP,
                                                 reprojectionError=cfg.ransac_threshold_px, confidence=0.999,
                                                 iterationsCount=500)
        if not ok or inl is None or len(inl) < cfg.min_inliers:
            continue
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(object_points[inl], image_points[inl], K, None, rvec, tvec)
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = cv2.Rodrigues(rvec)[0], tvec.ravel()
        w2c[t], reference[t], inliers[t], method[t] = pose, 0, len(inl), "pnp"
        observations += [(t, int(pairs[k, 0]), image_points[k]) for k in inl]
    if cfg.bundle_adjust:
        _bundle_adjust(w2c, [t for t in range(len(w2c)) if method[t] == "pnp"], observations, points, K)


def _bundle_adjust(w2c, posed: list[int], observations, points: dict, K: np.ndarray) -> None:
    """Jointly refine the PnP-posed frames and the triangulated points (in place), minimising
    the robust (Huber, 1 px) reprojection error of every observation; frame 0 stays the
    identity and the scale is reset afterwards to the median depth of the points in frame 0
    at its value before (the scale is the one free direction of the problem)."""
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix
    from scipy.spatial.transform import Rotation

    if not posed:
        return
    point_ids = sorted(points)
    point_index = {i: k for k, i in enumerate(point_ids)}
    frame_index = {t: k for k, t in enumerate(posed)}
    obs = [(t, point_index[i], xy) for t, i, xy in observations if t == 0 or t in frame_index]
    obs_frame = np.array([t for t, _, _ in obs])
    obs_point = np.array([k for _, k, _ in obs])
    obs_xy = np.stack([xy for _, _, xy in obs])
    n_pose = 6 * len(posed)
    start_points = np.stack([points[i] for i in point_ids])
    depth_before = np.median(start_points[:, 2])
    x0 = np.concatenate([np.concatenate([np.r_[Rotation.from_matrix(w2c[t][:3, :3]).as_rotvec(), w2c[t][:3, 3]]
                                         for t in posed]), start_points.ravel()])

    def residual(x):
        poses = x[:n_pose].reshape(-1, 6)
        X = x[n_pose:].reshape(-1, 3)
        R = np.tile(np.eye(3), (len(obs), 1, 1))
        t = np.zeros((len(obs), 3))
        moving = obs_frame != 0
        rows = np.array([frame_index[f] for f in obs_frame[moving]], int)
        R[moving] = Rotation.from_rotvec(poses[rows, :3]).as_matrix()
        t[moving] = poses[rows, 3:]
        cam = np.einsum("nij,nj->ni", R, X[obs_point]) + t
        pix = cam @ K.T
        return (pix[:, :2] / pix[:, 2:] - obs_xy).ravel()

    sparsity = lil_matrix((2 * len(obs), len(x0)), dtype=int)
    for row, (f, k) in enumerate(zip(obs_frame, obs_point)):
        if f != 0:
            sparsity[2 * row:2 * row + 2, 6 * frame_index[f]:6 * frame_index[f] + 6] = 1
        sparsity[2 * row:2 * row + 2, n_pose + 3 * k:n_pose + 3 * k + 3] = 1
    solution = least_squares(residual, x0, jac_sparsity=sparsity, loss="huber", f_scale=1.0, x_scale="jac")
    poses = solution.x[:n_pose].reshape(-1, 6)
    X = solution.x[n_pose:].reshape(-1, 3)
    rescale = depth_before / np.median(X[:, 2])
    for t, pose in zip(posed, poses):
        w2c[t] = np.eye(4)
        w2c[t][:3, :3] = Rotation.from_rotvec(pose[:3]).as_matrix()
        w2c[t][:3, 3] = pose[3:] * rescale


def _pair(feats, ref: int, t: int, K, cfg: CameraMotionConfig):
    matches = _match(feats[ref][1], feats[t][1], cfg.ratio)
    if len(matches) < max(cfg.min_inliers, 8):
        return None
    result = relative_pose(feats[ref][0][matches[:, 0]], feats[t][0][matches[:, 1]], K, cfg.ransac_threshold_px,
                           cfg.rotation_support, cfg.min_inliers)
    if result is None:
        return None
    return (*result, matches)


def _update_depths(depths: np.ndarray, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Fill unknown depths of the reference keypoints; known ones keep their value."""
    depths = depths.copy()
    fresh = ~np.isfinite(depths[index]) & (values > 0)
    depths[index[fresh]] = values[fresh]
    return depths


def _reference_depths(feats, last, w2c, K) -> np.ndarray:
    """Depths of the keypoints of the previous pair's frame (the new reference), triangulated
    from that pair with both global poses; NaN where unknown or for a rotation-only pair."""
    old_ref, frame, matches = last
    depths = np.full(len(feats[frame][0]), np.nan)
    if np.linalg.norm(w2c[frame][:3, 3] - w2c[frame][:3, :3] @ w2c[old_ref][:3, :3].T @ w2c[old_ref][:3, 3]) < 1e-9:
        return depths
    p, q = feats[old_ref][0][matches[:, 0]], feats[frame][0][matches[:, 1]]
    d = triangulate_depths(q, p, K, w2c[frame], w2c[old_ref])
    depths[matches[:, 1]] = np.where(d > 0, d, np.nan)
    return depths
