"""The initial points of the background Gaussians: keyframe pixels lifted to 3D.

`initial_points`: a few keyframes (evenly spread over the clip, frame 0
first) are unprojected: pixel (u, v) of keyframe k at depth z goes to
    X = c2w_k [ z (u - cx) / fx,  -z (v - cy) / fy,  -z,  1 ]^T    (OpenGL camera, OpenCV K)
with every `pixel_stride`-th pixel and its inpainted colour. A pixel of a later keyframe is
skipped when an earlier keyframe already saw its point (it projects inside that keyframe,
outside its holes), so the Gaussians cover what the pan reveals, once.
The depth z comes from monocular relative depth r (`load_depth_estimator(cfg.depth)`,
affine-invariant: z = a r + b for unknown a > 0, b), mapped per keyframe to the scale of
the camera-motion world:
- when the cameras carry translation (some camera centre more than 1e-6 from the
  keyframe's), a and b are fitted by robust least squares to the depths of background
  points triangulated (SIFT matches on background pixels, cv2.triangulatePoints with the given
  poses, kept when in front of both cameras and reprojecting within 1 px) between the
  keyframe and the frame farthest from it and the one halfway there; when that fit has
  a <= 0 (a weak depth network: the built-in one correlates with the true depth at 0.3-0.4
  on the 128 px synthetic clips), z = s (r + 0.5) with s the median ratio of the triangulated
  depths to r + 0.5, so every keyframe still has the cameras' scale; with fewer than
  `min_points` points the fallback is the camera-motion convention: z = (r + 0.5) / median(r + 0.5), median depth 1;
- with a pure rotation nothing fixes depth (every depth renders the same pixels), so the
  same fallback is used: any positive depth consistent with the ordering of r works.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def triangulated_background(frames: Tensor, holes: Tensor, c2w: Tensor, K: Tensor, a: int, b: int,
                            max_error_px: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Background points of frame a triangulated with frame b at the given poses.

    frames [T,H,W,3] in [0,1]; holes [T,H,W] bool (excluded); c2w [T,4,4] OpenGL; K [3,3]
    OpenCV. Returns pixels [M,2] (x, y, OpenCV convention) in frame a and their depths [M]
    in camera a, for SIFT matches (Lowe ratio 0.8) in front of both cameras that reproject
    within `max_error_px` in both."""
    import cv2

    sift = cv2.SIFT_create(nfeatures=4000)
    found = []
    for t in (a, b):
        gray = (frames[t].numpy() @ np.array([0.299, 0.587, 0.114]) * 255).round().clip(0, 255).astype(np.uint8)
        keep = ((~holes[t]).numpy() * 255).astype(np.uint8)
        keypoints, descriptors = sift.detectAndCompute(gray, keep)
        found.append((np.array([k.pt for k in keypoints], np.float64).reshape(-1, 2), descriptors))
    (pa, da), (pb, db) = found
    if da is None or db is None or len(da) < 2 or len(db) < 2:
        return np.zeros((0, 2)), np.zeros(0)
    pairs = [(m.queryIdx, m.trainIdx) for m, n in (p for p in cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
                                                   if len(p) == 2) if m.distance < 0.8 * n.distance]
    if not pairs:
        return np.zeros((0, 2)), np.zeros(0)
    pairs = np.array(pairs)
    p, q = pa[pairs[:, 0]], pb[pairs[:, 1]]
    w2c = torch.linalg.inv(c2w.detach().double().cpu() @ _GL_TO_CV.double()).numpy()
    Kn = K.detach().double().cpu().numpy()
    X = cv2.triangulatePoints(Kn @ w2c[a][:3], Kn @ w2c[b][:3], p.T, q.T)
    X = (X[:3] / X[3]).T
    good = np.ones(len(X), bool)
    depth_a = None
    for pose, pts in ((w2c[a], p), (w2c[b], q)):
        cam = X @ pose[:3, :3].T + pose[:3, 3]
        pix = cam @ Kn.T
        good &= (cam[:, 2] > 0) & (np.linalg.norm(pix[:, :2] / pix[:, 2:] - pts, axis=1) < max_error_px)
        depth_a = cam[:, 2] if depth_a is None else depth_a
    return p[good], depth_a[good]


def fit_affine_depth(relative: np.ndarray, target: np.ndarray, iterations: int = 3) -> tuple[float, float] | None:
    """Least-squares a, b with target ~ a relative + b, refitted without the points whose
    residual exceeds 3 median absolute residuals; None when a <= 0 or too few points."""
    keep = np.ones(len(relative), bool)
    a = b = None
    for _ in range(iterations):
        if keep.sum() < 3:
            return None
        A = np.stack([relative[keep], np.ones(keep.sum())], 1)
        a, b = np.linalg.lstsq(A, target[keep], rcond=None)[0]
        residual = np.abs(a * relative + b - target)
        keep = residual <= 3 * max(np.median(residual[keep]), 1e-9)
    return (float(a), float(b)) if a is not None and a > 0 else None


def metric_depth(relative: Tensor, frames: Tensor, holes: Tensor, c2w: Tensor, K: Tensor, t: int,
                 min_points: int = 20) -> tuple[Tensor, str]:
    """Depth [H,W] of frame t in the camera-motion world from relative depth [H,W] (module
    docstring); returns it and how it was scaled ("triangulated", "triangulated-scale" or "median")."""
    T = c2w.shape[0]
    centres = c2w[:, :3, 3]
    distance = (centres - centres[t]).norm(dim=-1)
    if T > 1 and distance.max() > 1e-6:
        # the frame farthest away (longest baseline) and the one halfway there: more matches
        partners = {int(distance.argmax()), int((distance - distance.max() / 2).abs().argmin())} - {t}
        found = [triangulated_background(frames, holes, c2w, K, t, s) for s in sorted(partners)]
        pixels, depth = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
        if len(depth) >= min_points:
            H, W = relative.shape
            col = np.clip(np.round(pixels[:, 0]).astype(int), 0, W - 1)
            row = np.clip(np.round(pixels[:, 1]).astype(int), 0, H - 1)
            at_points = relative.numpy()[row, col].astype(np.float64)
            fit = fit_affine_depth(at_points, depth)
            if fit is not None:
                z = fit[0] * relative + fit[1]
                floor = 0.05 * float(np.median(depth))  # an extrapolated negative depth is kept in front
                return z.clamp_min(floor), "triangulated"
            # r does not rise with the triangulated depth: keep its ordering, take the scale alone
            shifted = relative + 0.5
            base = shifted / shifted.median()
            scale = float(np.median(depth / (at_points + 0.5) * float(shifted.median())))
            return base * scale, "triangulated-scale"
    shifted = relative + 0.5
    return shifted / shifted.median(), "median"


def keyframe_indices(T: int, count: int) -> list[int]:
    """`count` frames evenly spread over 0..T-1, frame 0 first (sorted, unique)."""
    return sorted({round(i * (T - 1) / max(1, count - 1)) for i in range(max(1, min(count, T)))})


def initial_points(frames_inpainted: Tensor, holes: Tensor, c2w: Tensor, K: Tensor, depths: dict[int, Tensor],
                   pixel_stride: int) -> tuple[Tensor, Tensor, Tensor]:
    """World points [N,3], colours [N,3] and pixel spacings [N] (the world distance between
    neighbouring samples, z pixel_stride / fx) unprojected from the keyframes in `depths`
    ({t: depth [H,W]}), each pixel_stride-th pixel, skipping points an earlier keyframe saw
    (module docstring). c2w [T,4,4] OpenGL; K [3,3] OpenCV."""
    T, H, W, _ = frames_inpainted.shape
    ys, xs = torch.meshgrid(torch.arange(0, H, pixel_stride), torch.arange(0, W, pixel_stride), indexing="ij")
    xs, ys = xs.reshape(-1).float(), ys.reshape(-1).float()
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    w2c_cv = torch.linalg.inv(c2w.detach().float() @ _GL_TO_CV)
    points, colours, spacings, seen = [], [], [], []
    for t in sorted(depths):
        z = depths[t][ys.long(), xs.long()]
        cam = torch.stack([z * (xs - cx) / fx, -z * (ys - cy) / fy, -z, torch.ones_like(z)], -1)  # OpenGL camera
        world = (cam @ c2w[t].detach().float().T)[:, :3]
        keep = torch.ones(len(world), dtype=torch.bool)
        for s in seen:
            cam_s = world @ w2c_cv[s, :3, :3].T + w2c_cv[s, :3, 3]
            u = fx * cam_s[:, 0] / cam_s[:, 2].clamp_min(1e-9) + cx
            v = fy * cam_s[:, 1] / cam_s[:, 2].clamp_min(1e-9) + cy
            inside = (cam_s[:, 2] > 0) & (u > -0.5) & (u < W - 0.5) & (v > -0.5) & (v < H - 0.5)
            col, row = u.round().long().clamp(0, W - 1), v.round().long().clamp(0, H - 1)
            keep &= ~(inside & ~holes[s][row, col])
        points.append(world[keep])
        colours.append(frames_inpainted[t][ys.long(), xs.long()][keep])
        spacings.append(z[keep] * pixel_stride / fx)
        seen.append(t)
    return torch.cat(points), torch.cat(colours), torch.cat(spacings)
