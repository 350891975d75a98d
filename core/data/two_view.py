"""Two-view geometry of matched pixels: pure rotation (Kabsch) versus general motion (essential
matrix), robust refinement on the Sampson error, triangulation. Pixels are in the OpenCV
convention (centre of the top-left pixel at (0, 0)), K [3,3] OpenCV intrinsics, camera
coordinates OpenCV (x right, y down, z forward); a pose (R, t) maps camera p's coordinates
to camera q's, x_q = R x_p + t. `core/data/camera_motion.py` chains these over a video.
"""

from __future__ import annotations

import numpy as np


def nearest_rotation(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    return R if np.linalg.det(R) > 0 else U @ np.diag([1.0, 1.0, -1.0]) @ Vt


def bearings(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Unit viewing directions [M,3] (OpenCV camera axes) of pixels [M,2]."""
    rays = np.c_[points, np.ones(len(points))] @ np.linalg.inv(K).T
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def rotation_fit(p: np.ndarray, q: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The rotation R [3,3] taking bearings of pixels p [M,2] to those of q [M,2] in least
    squares (Kabsch: the orthogonal Procrustes solution R = U V^T of sum_i b_q,i b_p,i^T = U S V^T)."""
    return nearest_rotation(bearings(q, K).T @ bearings(p, K))


def refine_pose(R: np.ndarray, t: np.ndarray, p: np.ndarray, q: np.ndarray, K: np.ndarray):
    """R, unit t minimising the robust (Huber, 1 px) Sampson error of x_q^T [t]x R x_p = 0 over
    the inliers, from the RANSAC estimate; the five-point minimal solution RANSAC keeps is
    exact only on its five samples."""
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    xp = np.c_[p, np.ones(len(p))] @ np.linalg.inv(K).T
    xq = np.c_[q, np.ones(len(q))] @ np.linalg.inv(K).T
    focal = 0.5 * (K[0, 0] + K[1, 1])

    def unpack(params):
        direction = params[3:] / np.linalg.norm(params[3:])
        return Rotation.from_rotvec(params[:3]).as_matrix(), direction

    def residual(params):
        R_, t_ = unpack(params)
        tx = np.array([[0, -t_[2], t_[1]], [t_[2], 0, -t_[0]], [-t_[1], t_[0], 0]])
        return sampson_px(tx @ R_, xp, xq, focal)

    start = np.r_[Rotation.from_matrix(R).as_rotvec(), t / np.linalg.norm(t)]
    solution = least_squares(residual, start, loss="huber", f_scale=1.0)
    return unpack(solution.x)


def sampson_px(E: np.ndarray, xp: np.ndarray, xq: np.ndarray, focal: float) -> np.ndarray:
    """Signed Sampson distances [M] in pixels of normalised homogeneous matches xp, xq [M,3]
    to the epipolar constraint xq^T E xp = 0 (E for normalised coordinates)."""
    Exp, Etxq = xp @ E.T, xq @ E
    num = np.einsum("ij,ij->i", xq, Exp)
    den = np.sqrt(Exp[:, 0] ** 2 + Exp[:, 1] ** 2 + Etxq[:, 0] ** 2 + Etxq[:, 1] ** 2) + 1e-12
    return focal * num / den


def rotation_ransac(p: np.ndarray, q: np.ndarray, K: np.ndarray, threshold: float, iterations: int = 200):
    """The pure rotation most matches agree with (two-match samples, Kabsch on each), refitted
    on its inliers. Returns R [3,3] and the inlier mask [M]."""
    rng = np.random.default_rng(0)  # fixed: the same video gives the same cameras
    best = np.zeros(len(p), bool)
    for _ in range(iterations):
        sample = rng.choice(len(p), 2, replace=False)
        inliers = rotation_residual(rotation_fit(p[sample], q[sample], K), p, q, K) < threshold
        if inliers.sum() > best.sum():
            best = inliers
    if best.sum() < 2:
        return np.eye(3), best
    for _ in range(3):  # refit on the inliers, re-select
        R = rotation_fit(p[best], q[best], K)
        best = rotation_residual(R, p, q, K) < threshold
    return R, best


def rotation_residual(R: np.ndarray, p: np.ndarray, q: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel distances [M] between q and p moved by the pure rotation R: |q - pi(K R K^-1 p)|."""
    warped = (bearings(p, K) @ R.T) @ K.T
    return np.linalg.norm(warped[:, :2] / warped[:, 2:] - q, axis=1)


def relative_pose(p: np.ndarray, q: np.ndarray, K: np.ndarray, threshold_px: float, rotation_support: float,
                  min_inliers: int):
    """Relative pose of two views from matched pixels p, q [M,2] (OpenCV convention), K [3,3]:
    R [3,3], unit t [3] (zeros for a rotation), inlier mask [M], rotation_only, for
    x_q = R x_p + t in camera coordinates; None with fewer than `min_inliers` inliers.
    A rotation wins when it has at least `rotation_support` times the essential matrix's inliers."""
    import cv2

    R_rot, rot_inl = rotation_ransac(p, q, K, threshold_px)
    try:
        E, inl = cv2.findEssentialMat(p, q, K, method=cv2.RANSAC, prob=0.999, threshold=threshold_px)
    except cv2.error:  # the five-point solver's polynomial degenerates on exact pure rotations
        E, inl = None, None
    inl = np.zeros(len(p), bool) if E is None or E.shape != (3, 3) else inl.ravel() > 0
    if max(inl.sum(), rot_inl.sum()) < min_inliers:
        return None
    if rot_inl.sum() >= rotation_support * inl.sum():
        # a pure rotation explains (nearly) as many matches as a general motion: the
        # translation is below what these matches can measure
        return R_rot, np.zeros(3), rot_inl, True
    # recoverPose picks the decomposition with most points in front of both cameras (its own
    # mask also drops far points, which a short baseline makes all of them: not used)
    _, R, t, _ = cv2.recoverPose(E, p[inl], q[inl], K)
    R, t = refine_pose(R, t.ravel(), p[inl], q[inl], K)
    return R, t, inl, False


def triangulate_depths(p, q, K, w2c_p, w2c_q) -> np.ndarray:
    """Depths [M] in camera p of the matches p <-> q [M,2], given 3x4 world-to-camera poses."""
    import cv2

    X = cv2.triangulatePoints(K @ w2c_p[:3], K @ w2c_q[:3], p.T, q.T)
    X = (X[:3] / X[3]).T
    return (X @ w2c_p[:3, :3].T + w2c_p[:3, 3])[:, 2]
