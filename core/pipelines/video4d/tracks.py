"""TAP-Vid-style point tracks from a recomposed 4D scene (`scorelift track`).

A query (t, x, y) (OpenCV pixels: the centre of the top-left pixel at (0, 0)) is lifted onto
the surface visible at frame t: X = c_t + z * R_cam,t ((x - cx)/fx, -(y - cy)/fy, -1), with z
the rendered expected depth sampled bilinearly at (x, y). Its owner is the one with the
largest share of the pixel's weight (background or an object). A background point is
static. An object point rides on its k nearest Gaussians of that object at frame t: each
carries the offset into its own frame, X_i(t') = mu_i(t') + (s(t') / s(t)) G_i(t') G_i(t)^T
(X - mu_i(t)), with G_i the Gaussian's world rotation (object-to-world rotation times its
deformed orientation) and s the object's scale; the track is the inverse-distance-weighted
mean of the X_i. Every X(t') is projected with frame t''s camera:

    u = fx * p_x / (-p_z) + cx,   v = -fy * p_y / (-p_z) + cy,   p = R_cam^T (X - c)   (OpenGL axes)

Occluded at t': behind the camera or outside the picture, or the rendered depth at its
nearest pixel (where the render covers it, alpha > 0.5) is nearer than its own depth by more
than `occlusion_tolerance` of it (the synthetic clips' ground truth uses the same 5%).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from gsplat.utils import normalized_quat_to_rotmat
from torch import Tensor

from core.errors import UserError
from core.pipelines.video4d.scene4d import BACKGROUND_OWNER, Scene4D


class QueryError(UserError):
    """A query file that cannot be tracked (wrong keys, shape, frame or pixel range)."""


def project(points: Tensor, c2w: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """World points [N,3] through one camera (c2w [4,4] OpenGL, K [3,3] OpenCV) -> pixels [N,2]
    (OpenCV) and depth along the optical axis [N] (positive in front)."""
    p = (points - c2w[:3, 3]) @ c2w[:3, :3]
    z = -p[:, 2]
    zs = z.clamp_min(1e-9)
    u = K[0, 0] * p[:, 0] / zs + K[0, 2]
    v = -K[1, 1] * p[:, 1] / zs + K[1, 2]
    return torch.stack([u, v], -1), z


def unproject(pixels: Tensor, depth: Tensor, c2w: Tensor, K: Tensor) -> Tensor:
    """Pixels [N,2] (OpenCV) at depths [N] along the optical axis -> world points [N,3]."""
    x = (pixels[:, 0] - K[0, 2]) / K[0, 0] * depth
    y = -(pixels[:, 1] - K[1, 2]) / K[1, 1] * depth
    p = torch.stack([x, y, -depth], -1)
    return p @ c2w[:3, :3].T + c2w[:3, 3]


def sample_bilinear(image: Tensor, pixels: Tensor) -> Tensor:
    """image [H,W,C] sampled at OpenCV pixels [N,2] -> [N,C] (border clamped)."""
    H, W = image.shape[:2]
    grid = torch.stack([(pixels[:, 0] + 0.5) / W * 2 - 1, (pixels[:, 1] + 0.5) / H * 2 - 1], -1)
    out = F.grid_sample(image.permute(2, 0, 1)[None], grid[None, None].to(image), mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out[0, :, 0].T


def check_queries(queries: np.ndarray, n_frames: int, width: int, height: int) -> Tensor:
    """query_points [N,3] as (t, x, y): finite, t an existing frame, (x, y) inside the picture."""
    q = np.asarray(queries, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 3 or len(q) == 0:
        raise QueryError(f"query_points must be [N,3] (t, x, y) with N >= 1, got shape {list(q.shape)}")
    if not np.isfinite(q).all():
        raise QueryError("query_points hold NaN or infinite values")
    t = q[:, 0]
    if (np.abs(t - np.round(t)) > 1e-6).any() or t.min() < 0 or t.max() > n_frames - 1:
        raise QueryError(f"query times must be whole frame indices in 0..{n_frames - 1}")
    x, y = q[:, 1], q[:, 2]
    if x.min() < -0.5 or x.max() > width - 0.5 or y.min() < -0.5 or y.max() > height - 0.5:
        raise QueryError(f"query pixels must lie inside the {width}x{height} video "
                         "(OpenCV convention: the top-left pixel's centre is (0, 0))")
    return torch.from_numpy(q).float()


def _gaussian_rotations(quats: Tensor) -> Tensor:
    return normalized_quat_to_rotmat(F.normalize(quats, dim=-1))


@torch.no_grad()
def track_points(scene: Scene4D, queries: Tensor, neighbours: int = 4, occlusion_tolerance: float = 0.05,
                 static: bool = False) -> tuple[Tensor, Tensor]:
    """Queries [N,3] (t, x, y) -> tracks [N,T,2] (OpenCV pixels) and occluded [N,T] bool.
    static=True treats every point as background (the "camera motion only" baseline)."""
    T, W, H = scene.n_frames, scene.width, scene.height
    N = len(queries)
    frames = queries[:, 0].round().long()
    renders = [scene.render(t, owners=True) for t in range(T)]
    world = torch.zeros(N, T, 3)
    ids = scene.owner_ids()
    per_object = {o.object_id: [o.gaussians(t, scene.tau(t), scene.c2w[t]) for t in range(T)] for o in scene.objects}
    absent = torch.zeros(N, T, dtype=torch.bool)
    for t in frames.unique().tolist():
        sel = (frames == t).nonzero()[:, 0]
        pix = queries[sel, 1:]
        r = renders[t]
        depth = sample_bilinear(r["depth"][0], pix)[:, 0]
        X = unproject(pix, depth, scene.c2w[t], scene.K)
        near = pix.round().long()
        near[:, 0].clamp_(0, W - 1)
        near[:, 1].clamp_(0, H - 1)
        owner = torch.tensor(ids)[r["owner"][0][near[:, 1], near[:, 0]].argmax(-1)]
        world[sel] = X[:, None].expand(-1, T, -1)  # background: static
        for obj in [] if static else scene.objects:
            mine = owner == obj.object_id
            if not mine.any():
                continue
            g = per_object[obj.object_id]
            mu_t = g[t].means
            d = torch.cdist(X[mine], mu_t)
            k = min(neighbours, mu_t.shape[0])
            dist, idx = d.topk(k, largest=False)
            w = 1.0 / dist.clamp_min(1e-6)
            w = w / w.sum(-1, keepdim=True)                                  # [n,k]
            G_t = _gaussian_rotations(g[t].quats[idx])                       # [n,k,3,3]
            local = torch.einsum("nkji,nkj->nki", G_t, X[mine][:, None] - mu_t[idx])   # G^T (X - mu)
            s_t = torch.exp(obj.log_scale[t])
            for t2 in range(T):
                mu = g[t2].means[idx]
                G = _gaussian_rotations(g[t2].quats[idx])
                scale = torch.exp(obj.log_scale[t2]) / s_t
                Xk = mu + scale * torch.einsum("nkij,nkj->nki", G, local)
                world[sel[mine], t2] = (w[..., None] * Xk).sum(1)
            absent[sel[mine], :obj.first_frame] = True   # the object does not exist yet
    tracks = torch.zeros(N, T, 2)
    occluded = torch.zeros(N, T, dtype=torch.bool)
    for t2 in range(T):
        uv, z = project(world[:, t2], scene.c2w[t2], scene.K)
        tracks[:, t2] = uv
        outside = (z <= 0) | (uv[:, 0] < -0.5) | (uv[:, 0] > W - 0.5) | (uv[:, 1] < -0.5) | (uv[:, 1] > H - 0.5)
        px = uv.round().long()
        px[:, 0].clamp_(0, W - 1)
        px[:, 1].clamp_(0, H - 1)
        rendered = renders[t2]["depth"][0][px[:, 1], px[:, 0], 0]
        covered = renders[t2]["alpha"][0][px[:, 1], px[:, 0], 0] > 0.5
        hidden = covered & (rendered < z * (1 - occlusion_tolerance))
        occluded[:, t2] = outside | hidden | absent[:, t2]
    return tracks, occluded


__all__ = ["BACKGROUND_OWNER", "QueryError", "check_queries", "project", "sample_bilinear",
           "track_points", "unproject"]
