"""An independent float64 reference for the Gaussian rasteriser, written from the papers.

Nothing here calls gsplat or `renderers.gaussian`: numpy only, one Gaussian and one camera
at a time where that reads clearer.

Projection (Zwicker et al. 2001, "EWA Volume Splatting", Sec. 4; Kerbl et al. 2023, "3D
Gaussian Splatting", Eq. 5-6):
  Sigma  = R S S^T R^T                    R from the unit quaternion (w, x, y, z), S = diag(scales)
  t      = W mu + w_t                     camera-space mean (W, w_t: world-to-camera rotation, shift)
  J      = [[fx/t_z, 0, -fx t_x / t_z^2], the Jacobian of (fx x/z + cx, fy y/z + cy) at t
            [0, fy/t_z, -fy t_y / t_z^2]]
  Sigma' = J W Sigma W^T J^T + 0.3 I      (the 0.3 px^2 low-pass of the 3DGS code)
  mean2d = (fx t_x / t_z + cx, fy t_y / t_z + cy)
The Inria CUDA code (computeCov2D) evaluates J with t_x/t_z, t_y/t_z clamped to
+-1.3 tan(fov/2), so Gaussians far off to the side keep a bounded footprint; done here too.

Radius (gsplat's opacity-aware extent): alpha = o exp(-d^T Sigma'^-1 d / 2) falls below
1/255 outside |d_x| <= k sqrt(Sigma'_xx), k = min(3.33, sqrt(2 ln(255 o))), so the radius per
axis is ceil(k sqrt(Sigma'_ii)); culled (radius 0) when t_z is outside [near, far], o < 1/255,
or the box lies outside the image.

Compositing (Kerbl et al. Eq. 3, with the CUDA kernel's rules): nearest first, alpha_i =
min(0.999, o_i exp(-power)), skipped below 1/255, C = sum_i c_i alpha_i T_i, T_i = prod_{j<i}
(1 - alpha_j), and a pixel stops before the Gaussian that would bring T to <= 1e-4.
"""

from __future__ import annotations

import math

import numpy as np


def quat_to_rotation(q: np.ndarray) -> np.ndarray:
    """[N,4] wxyz (any norm) -> [N,3,3] rotation matrices."""
    w, x, y, z = (q / np.linalg.norm(q, axis=-1, keepdims=True)).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def ewa_project(means, quats, scales, opacities, viewmats, Ks, width, height, near=0.01, far=1e10,
                low_pass=0.3):
    """Float64 EWA projection of N Gaussians into C cameras.

    means [N,3], quats [N,4], scales [N,3], opacities [N], viewmats [C,4,4] OpenCV world-to-camera,
    Ks [C,3,3]. Returns dict of numpy arrays: means2d [C,N,2], depths [C,N], covars2d [C,N,2,2]
    (with the low-pass), conics [C,N,3] = (inv[0,0], inv[0,1], inv[1,1]), radii [C,N,2] int.
    """
    means, quats, scales, opacities, viewmats, Ks = (np.asarray(a, dtype=np.float64) for a in
                                                     (means, quats, scales, opacities, viewmats, Ks))
    R = quat_to_rotation(quats)
    S = R * scales[:, None, :]  # R S
    sigma = S @ S.transpose(0, 2, 1)
    C, N = len(viewmats), len(means)
    out = {"means2d": np.zeros((C, N, 2)), "depths": np.zeros((C, N)), "covars2d": np.zeros((C, N, 2, 2)),
           "conics": np.zeros((C, N, 3)), "radii": np.zeros((C, N, 2), dtype=np.int64)}
    for c in range(C):
        Wr, wt = viewmats[c, :3, :3], viewmats[c, :3, 3]
        fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
        lim_x, lim_y = 1.3 * 0.5 * width / fx, 1.3 * 0.5 * height / fy  # 1.3 tan(fov/2)
        for n in range(N):
            tx, ty, tz = Wr @ means[n] + wt
            out["depths"][c, n] = tz
            if not near <= tz <= far:
                continue
            out["means2d"][c, n] = fx * tx / tz + cx, fy * ty / tz + cy
            jx, jy = tz * np.clip(tx / tz, -lim_x, lim_x), tz * np.clip(ty / tz, -lim_y, lim_y)
            J = np.array([[fx / tz, 0.0, -fx * jx / tz ** 2], [0.0, fy / tz, -fy * jy / tz ** 2]])
            cov = J @ Wr @ sigma[n] @ Wr.T @ J.T + low_pass * np.eye(2)
            out["covars2d"][c, n] = cov
            inv = np.linalg.inv(cov)
            out["conics"][c, n] = inv[0, 0], inv[0, 1], inv[1, 1]
            o = opacities[n]
            if o < 1 / 255 or np.linalg.det(cov) <= 0:
                continue
            k = min(3.33, math.sqrt(2 * math.log(255 * o)))
            r = np.ceil(k * np.sqrt(np.diag(cov)))
            m = out["means2d"][c, n]
            if m[0] + r[0] > 0 and m[0] - r[0] < width and m[1] + r[1] > 0 and m[1] - r[1] < height:
                out["radii"][c, n] = r
    return out


def brute_force_render(proj, opacities, colors, width, height, backgrounds=None):
    """Composite every non-culled Gaussian at every pixel centre (x + 0.5, y + 0.5), nearest first.

    proj: `ewa_project`'s dict; opacities [N]; colors [N,D] or [C,N,D]; backgrounds [C,D] or None.
    Returns colours [C,H,W,D] and alphas [C,H,W,1] (numpy float64).
    """
    opacities, colors = np.asarray(opacities, np.float64), np.asarray(colors, np.float64)
    C, N = proj["depths"].shape
    if colors.ndim == 2:
        colors = np.broadcast_to(colors, (C, *colors.shape))
    ys, xs = np.mgrid[0:height, 0:width]
    px, py = (xs + 0.5).ravel(), (ys + 0.5).ravel()
    images, alphas = [], []
    for c in range(C):
        rgb = np.zeros((len(px), colors.shape[-1]))
        T = np.ones(len(px))
        done = np.zeros(len(px), dtype=bool)
        for n in sorted(range(N), key=lambda i: proj["depths"][c, i]):
            if not (proj["radii"][c, n] > 0).all():
                continue
            a, b, cc = proj["conics"][c, n]
            dx, dy = px - proj["means2d"][c, n, 0], py - proj["means2d"][c, n, 1]
            power = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = np.minimum(0.999, opacities[n] * np.exp(-power))
            use = ~done & (power >= 0) & (alpha >= 1 / 255)
            stop = use & (T * (1 - alpha) <= 1e-4)
            done |= stop
            use &= ~stop
            rgb[use] += (alpha * T)[use, None] * colors[c, n]
            T = np.where(use, T * (1 - alpha), T)
        if backgrounds is not None:
            rgb += T[:, None] * np.asarray(backgrounds, np.float64)[c]
        images.append(rgb.reshape(height, width, -1))
        alphas.append((1 - T).reshape(height, width, 1))
    return np.stack(images), np.stack(alphas)
