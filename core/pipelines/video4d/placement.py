"""Placing lifted objects in the world of a video (DreamScene4D, Chu et al. 2024, Sec. 3.3).

Notation: frame t has the OpenGL camera-to-world c2w_t = [Q_t | C_t] (Q_t [3,3] rotation,
C_t the centre), OpenCV intrinsics K (fx, fy, cx, cy; centre of the top-left pixel at (0, 0)),
a z-depth map z_t (metric-aligned, camera z-depth, larger is farther) and the object's mask M_t.
Canonical object space is image-to-3D's: the object centred at the origin, its reference camera
c2w_ref = [Q_ref | p_ref] = look_at(spherical(el_ref, 0, r_ref)) with vertical fov_ref, square
S x S, the object's longer image extent filling `fill` of S (core/pipelines/video4d/objects.py).
Object-to-world at frame t: x_w = s_t R x + T_t, s_t = exp(log_scale[t]).

Depth alignment (monocular depth is affine-invariant; DreamScene4D aligns it to the scene):
    min_{a,b} sum_valid (a r_i + b - z_i)^2  =>  a = cov(r, z) / var(r), b = mean(z) - a mean(r)
(the normal equations of the 2-parameter least squares, solved in float64).

Ray through the mask: m_t = mean pixel (x, y) of M_t (OpenCV). Its camera-space direction is
d_cv = ((x - cx)/fx, (y - cy)/fy, 1) in OpenCV axes, (d_x, -d_y, -1) in OpenGL axes, and the
world unit ray u_t = Q_t d_gl / |d_gl|; cos(theta_t) = 1 / |d_cv| is its angle to the optical axis.

Scale, through the object's bounding sphere. In the reference view the object spans fill S
pixels at focal f_ref = (S/2) / tan(fov_ref/2), i.e. an angular radius alpha_ref with
tan(alpha_ref) = fill tan(fov_ref/2), seen from r_ref: its bounding sphere has radius
    rho = r_ref sin(alpha_ref)                                   (canonical units).
In frame t take the camera turned to look along u_t (V_t below): the mask's pixel rays, in its
tangent plane (x/z, y/z), span a box whose half side (plus half a pixel each side, as the crop's
box) is tan(alpha_t), the object's angular radius seen along the ray. A sphere of radius s rho
at distance D from the camera has angular radius asin(s rho / D), so
    s_t = D_t sin(alpha_t) / rho.
Measuring alpha_t in the turned camera rather than in pixels of the real one removes the
stretch (up to 1/cos^2 theta) of an off-centre ray. s_t / D_t depends on the mask only: an error
in depth moves the object along the ray without changing how large it looks.
Depth of the centre. The median of z_t over M_t, divided by cos(theta), is the distance D_s of
the visible surface along the ray; the centre sits behind it by the object's half-depth, taken
as its bounding radius s_t rho = D_t sin(alpha_t):
    D_t = D_s + D_t sin(alpha_t)  =>  D_t = D_s / (1 - sin(alpha_t)),
    T_t = C_t + D_t u_t,     log_scale[t] = log(D_t sin(alpha_t) / rho).
(The denominator is kept >= 1/2, i.e. alpha_t <= 30 deg is assumed.) For a sphere the median
visible surface is about rho / sqrt(2) in front of the centre, so D_t is then ~0.3 s rho too far.

Rotation. At the first visible frame t0 let V = V_t0 = turn(f, u) Q_t0, where f = -Q_t0[:, 2] is the
camera's optical axis and turn(f, u) the smallest rotation taking f onto u (Rodrigues about
f x u): V is the real camera turned to look along u, its image "up" as close to the real one as
possible. Choose R = V Q_ref^T. Then for a canonical point x, the virtual camera [V | C] sees
    V^T (s R x + T - C) = s Q_ref^T x + V^T (D u) = s Q_ref^T x - (0, 0, D)     (D = |T - C|)
while the reference camera sees Q_ref^T (x - p_ref) = Q_ref^T x - (0, 0, r_ref) (p_ref lies on
the reference camera's +Z axis at distance r_ref). So the virtual view is the reference view
with every point scaled by s and shifted along the axis by s r_ref - D: the same picture (a
pinhole image is invariant to scaling) up to the dolly-zoom difference between the two
distances (s r_ref = D exactly when the object looks as large along the ray as in the
reference view, alpha_t = alpha_ref), and the real camera's image is the virtual one through the homography
K Q_t0^T V K^-1 of a pure rotation (the perspective of an off-centre ray): the reference render
re-sampled into the crop's box is the object as the frame shows it, up to that perspective.

Frames where the object is invisible (an empty mask, or no valid depth on it): T and log_scale
are interpolated linearly in t between the nearest visible frames before and after, held from
the nearest one at the ends, and visible[t] = False.

Occlusion order: where two placed objects both cover a pixel, the instance mask says which is in
front; the one in front must be nearer there (`occlusion_disagreements`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from core.cameras import spherical_cameras
from core.errors import UserError
from core.pipelines.video4d.scene4d import axis_to_direction

_CV_TO_GL = torch.tensor([1.0, -1.0, -1.0])


def align_depth(relative: Tensor, target: Tensor, valid: Tensor) -> tuple[float, float]:
    """Least-squares (scale, shift) with scale * relative + shift ~ target over `valid` pixels
    (module docstring). relative, target [...] float; valid [...] bool, same shape. Raises
    UserError with fewer than 2 valid pixels; a constant `relative` gives scale 0 and the mean
    of the target as shift (the minimum-norm solution in scale)."""
    valid = valid.bool() & torch.isfinite(relative) & torch.isfinite(target)
    r, z = relative[valid].double(), target[valid].double()
    if r.numel() < 2:
        raise UserError("cannot align depth: fewer than 2 valid pixels")
    r_mean, z_mean = r.mean(), z.mean()
    var = ((r - r_mean) ** 2).sum()
    if float(var) <= 1e-24 * max(1.0, float((r ** 2).sum())):
        return 0.0, float(z_mean)
    scale = ((r - r_mean) * (z - z_mean)).sum() / var
    return float(scale), float(z_mean - scale * r_mean)


@dataclass
class ObjectToWorldInit:
    """R [3,3] canonical -> world rotation (fixed); T [T,3] world position of the canonical origin
    per frame; log_scale [T] natural log of the canonical -> world scale; visible [T] bool (False:
    T and log_scale interpolated or held from visible frames)."""

    R: Tensor
    T: Tensor
    log_scale: Tensor
    visible: Tensor


def canonical_radius(fill: float, r_ref: float, fov_ref_deg: float) -> float:
    """rho = r_ref sin(atan(fill tan(fov_ref/2))): the radius of the sphere that fills `fill` of
    the reference view, in canonical units."""
    return r_ref * math.sin(math.atan(fill * math.tan(math.radians(fov_ref_deg) / 2)))


def reference_rotation(r_ref: float, el_ref_deg: float) -> Tensor:
    """Q_ref [3,3]: the OpenGL camera-to-world rotation of Zero123's reference camera."""
    cams = spherical_cameras(torch.tensor([float(el_ref_deg)]), torch.tensor([0.0]), torch.tensor([float(r_ref)]),
                             torch.tensor([45.0]), 8, 8)
    return cams.c2w[0, :3, :3].double()


def mask_ray(mask: Tensor, K: Tensor, c2w: Tensor, centre: Literal["centroid", "box"] = "centroid"):
    """The world ray through the mask's centre and the mask's angular size seen along it.

    mask [H,W] bool (non-empty), K [3,3] OpenCV, c2w [4,4] OpenGL. Returns (u [3] world unit ray,
    cos_theta its angle to the optical axis, V [3,3] the camera turned onto u (module docstring),
    tan_alpha the half-extent of the mask's box in the turned camera's tangent plane: the mask
    pixels' rays in V's axes, x / z and y / z, over their range plus one pixel (1 / f), halved).
    """
    ys, xs = torch.nonzero(mask, as_tuple=True)
    K = K.double()
    if centre == "centroid":
        x, y = xs.double().mean(), ys.double().mean()
    else:
        x, y = (xs.min() + xs.max()).double() / 2, (ys.min() + ys.max()).double() / 2
    Q = c2w[:3, :3].double()
    d_cv = torch.stack([(x - K[0, 2]) / K[0, 0], (y - K[1, 2]) / K[1, 1], torch.ones((), dtype=K.dtype)])
    u = Q @ (d_cv * _CV_TO_GL.double())
    u = u / u.norm()
    V = Q @ axis_to_direction(Q.T @ u)      # the smallest turn of the optical axis onto u, in world: Q L Q^T
    rays_cv = torch.stack([(xs.double() - K[0, 2]) / K[0, 0], (ys.double() - K[1, 2]) / K[1, 1],
                           torch.ones(len(xs), dtype=K.dtype)], -1)
    rays = (V.T @ Q @ (rays_cv * _CV_TO_GL.double()).T).T          # in V's OpenGL axes, z < 0
    tx, ty = rays[:, 0] / -rays[:, 2], rays[:, 1] / -rays[:, 2]
    extent = max(float(tx.max() - tx.min()) + 1 / float(K[0, 0]), float(ty.max() - ty.min()) + 1 / float(K[1, 1]))
    return u, float(1.0 / d_cv.norm()), V, extent / 2


def init_object_to_world(mask: Tensor, K: Tensor, c2w: Tensor, depth: Tensor, fill: float = 0.75,
                         r_ref: float = 2.5, fov_ref_deg: float = 45.0, el_ref_deg: float = 0.0,
                         centre: Literal["centroid", "box"] = "centroid") -> ObjectToWorldInit:
    """Object-to-world per frame from the object's masks and metric depth (module docstring).

    mask [T,H,W] bool; K [3,3] OpenCV intrinsics; c2w [T,4,4] OpenGL camera-to-world; depth
    [T,H,W] camera z-depth aligned to the scene's units (pixels <= 0 or non-finite are invalid);
    fill, r_ref, fov_ref_deg, el_ref_deg: the crop and reference camera of the lift. centre:
    the ray through the mask's "centroid" (mean pixel) or its "box" centre (where the crop is
    centred). Raises UserError when the object is visible (with valid depth) in no frame.
    """
    mask, K, c2w, depth = mask.cpu(), K.cpu(), c2w.cpu(), depth.cpu()   # a few numbers per frame: on the CPU
    n = mask.shape[0]
    rho = canonical_radius(fill, r_ref, fov_ref_deg)
    T = torch.zeros(n, 3, dtype=torch.float64)
    log_scale = torch.zeros(n, dtype=torch.float64)
    visible = torch.zeros(n, dtype=torch.bool)
    R = None
    for t in range(n):
        m = mask[t].bool()
        z = depth[t].double()
        on = m & torch.isfinite(z) & (z > 0)
        if not bool(on.any()):
            continue
        u, cos_theta, V, tan_alpha = mask_ray(m, K, c2w[t], centre)
        sin_alpha = tan_alpha / math.sqrt(1 + tan_alpha ** 2)
        surface = float(z[on].median()) / cos_theta                 # distance along the ray
        distance = surface / max(0.5, 1.0 - sin_alpha)
        T[t] = c2w[t, :3, 3].double() + distance * u
        log_scale[t] = math.log(distance * sin_alpha / rho)
        visible[t] = True
        if R is None:
            R = V @ reference_rotation(r_ref, el_ref_deg).T
    if R is None:
        raise UserError("the object is visible (with valid depth) in no frame: check its masks")
    idx = torch.nonzero(visible)[:, 0]
    for t in range(n):
        if visible[t]:
            continue
        before, after = idx[idx < t], idx[idx > t]
        if len(before) and len(after):
            t0, t1 = int(before[-1]), int(after[0])
            w = (t - t0) / (t1 - t0)
            T[t] = (1 - w) * T[t0] + w * T[t1]
            log_scale[t] = (1 - w) * log_scale[t0] + w * log_scale[t1]
        else:
            near = int(before[-1]) if len(before) else int(after[0])
            T[t], log_scale[t] = T[near], log_scale[near]
    return ObjectToWorldInit(R.float(), T.float(), log_scale.float(), visible)


@dataclass
class OcclusionDisagreement:
    """In frame t, `front` is in front of `behind` according to the mask on `pixels` pixels where
    both objects cover, but the placed `behind` is nearer there on `wrong` of them."""

    t: int
    front: int
    behind: int
    pixels: int
    wrong: int


def occlusion_disagreements(masks: Tensor, coverage: dict[int, Tensor], depth: dict[int, Tensor],
                            min_fraction: float = 0.5) -> list[OcclusionDisagreement]:
    """Check the placed objects' depth order against the instance masks.

    masks [T,H,W] integer ids (0 = background); coverage {id: [T,H,W] bool} where each placed
    object alone covers a pixel (e.g. its rendered alpha > 0.5); depth {id: [T,H,W]} its rendered
    z-depth there. For every frame and pair (i, j) the pixels both cover and the mask gives to i
    say i is in front: a pixel disagrees when depth[i] > depth[j] there. Returns one record per
    (t, front, behind) whose disagreeing pixels are at least `min_fraction` of its pixels
    (a majority by default: a few pixels at silhouettes do not make an order), in t order.
    """
    ids = sorted(coverage)
    out = []
    for t in range(masks.shape[0]):
        for i in ids:
            for j in ids:
                if i == j:
                    continue
                both = coverage[i][t].bool() & coverage[j][t].bool() & (masks[t] == i)
                pixels = int(both.sum())
                if pixels == 0:
                    continue
                wrong = int((both & (depth[i][t] > depth[j][t])).sum())
                if wrong >= min_fraction * pixels:
                    out.append(OcclusionDisagreement(t, i, j, pixels, wrong))
    return out
