"""Deferred PBR shading of splatted buffers, a learnable HDR environment, display encoding
and the progressive blend of Ye et al. 2024 ("Progressive Radiance Distillation for
Inverse Rendering with Gaussian Splatting").

Deferred shading. The rasteriser composites per-Gaussian attributes front to back,
B(p) = sum_i w_i(p) b_i with w_i = T_i alpha_i and coverage A(p) = sum_i w_i. Dividing by A
gives the pixel's mean attribute (albedo, roughness, metallic, progress) and the
normalised sum of the Gaussians' normals gives its normal n. Each pixel is then shaded
once, as a surface point, under distant light L(l) from an environment (Karis 2013,
"Real Shading in Unreal Engine 4"), metallic-roughness workflow:

    L_o = (1 - m) c / pi * E(n)  +  L_spec(r, rough) * (F0 * A_lut + B_lut),
    E(n) = int L(l) max(0, n.l) dl           (9-term SH irradiance, R&H 2001 eq. 7)
    L_spec = pre-filtered environment along r = reflect(-v, n)   (split sum, Karis eq. 7)
    F0 = 0.04 (1 - m) + c m, (A_lut, B_lut) = the GGX BRDF table at (n.v, rough)  (Karis eq. 8)

with c the albedo, m metallic, v the direction to the eye (minus the pixel's camera ray).
`renderers.shading.pbr.shade_components` evaluates exactly this; the split sum replaces
the hemisphere integral int f(l, v) L(l) n.l dl by (mean of L over the lobe) x (integral
of f n.l), exact for a constant environment and close for smooth ones.

Display. The PBR image is linear radiance; it is recorded as a camera with a linear
response would: I_pbr = srgb(clip(L_o, 0, 1)) (exposure 1), composited over the
background with coverage A. The radiance-field image I_rad is the SH colour splat of
3DGS, already display-encoded (it is fitted to sRGB photos).

Progressive blend (Ye et al. 2024, eq. 1 of the method section): with the splatted
distillation progress a(p) in [0,1],

    I = a * I_pbr + (1 - a) * I_rad.

At a = 0 the picture is the radiance field alone, at a = 1 the physical model alone; a
pixel whose light the physical model cannot explain keeps a < 1, so its residual stays in
the radiance field instead of leaking into light and materials.

Learnable environment. An equirect map [H,2H,3] of log-radiance (exp keeps it > 0 and
makes steps relative); each render re-filters it (GGX levels + SH projection), so
gradients reach every texel through both terms. The white-light prior (nvdiffrec's
light regulariser, Munkberg et al. 2022) is mean_texels sum_c |L_c - mean_c' L_c'|:
it resolves the albedo/light colour ambiguity toward white light.

Depth-normal consistency (as in 2DGS, Huang et al. 2024, eq. 14): the rendered expected
depth back-projects to points P(p) = o + d(p) z(p) / (d(p) . f) (f the camera's forward
axis, z the z-depth); n_d = normalize(dP/dx x dP/dy) by central differences, turned toward
the camera; the loss is the coverage-weighted mean of 1 - n_d . n over pixels whose
neighbours are covered too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.cameras import Cameras
from renderers.shading.environment import EnvironmentLight
from renderers.shading.pbr import shade_components
from renderers.shading.tonemap import tonemap


def display_encode(linear: Tensor) -> Tensor:
    """Linear radiance [...,3] -> display sRGB [...,3]: clip to [0,1] (exposure 1), then the sRGB curve."""
    return tonemap(linear, exposure=0.0, method="clamp")


def progressive_blend(progress: Tensor | float, pbr: Tensor, radiance: Tensor) -> Tensor:
    """I = a I_pbr + (1 - a) I_rad (Ye et al. 2024); progress [...,1] or scalar in [0,1], images [...,3]."""
    return progress * pbr + (1 - progress) * radiance


class LearnableEnvironment(nn.Module):
    """A learnable HDR equirect environment: `log_radiance` [H,2H,3] (Blender mapping, +Z up).

    levels/samples: GGX pre-filter levels and samples per texel (renderers.shading.prefilter).
    """

    def __init__(self, height: int = 16, init: float = 1.0, levels: int = 5, samples: int = 64):
        super().__init__()
        if height < 4 or height % 2:
            raise ValueError(f"environment height must be even and >= 4, got {height}")
        self.levels, self.samples = levels, samples
        self.log_radiance = nn.Parameter(torch.full((height, 2 * height, 3), math.log(init)))

    def envmap(self) -> Tensor:
        """[H,2H,3] linear radiance > 0."""
        return torch.exp(self.log_radiance)

    def light(self) -> EnvironmentLight:
        """The environment as an `EnvironmentLight` (re-filtered on each call while it requires grad)."""
        return EnvironmentLight(self.envmap(), levels=self.levels, samples=self.samples)

    @torch.no_grad()
    def set_envmap(self, envmap: Tensor) -> None:
        """Replace the map by `envmap` [h,w,3] linear radiance (resampled to this size)."""
        H, W = self.log_radiance.shape[:2]
        env = envmap.to(self.log_radiance).permute(2, 0, 1)[None]
        env = F.interpolate(env, size=(H, W), mode="area" if envmap.shape[0] > H else "bilinear")
        self.log_radiance.copy_(env[0].permute(1, 2, 0).clamp_min(1e-6).log())

    def white_light_prior(self) -> Tensor:
        """mean over texels of sum_c |L_c - mean_c L|: zero for a grey (white-light) environment."""
        env = self.envmap()
        return (env - env.mean(-1, keepdim=True)).abs().sum(-1).mean()


def deferred_shade(albedo: Tensor, roughness: Tensor, metallic: Tensor, normal: Tensor, cameras: Cameras,
                   light: EnvironmentLight) -> Tensor:
    """Linear outgoing radiance [B,H,W,3] of per-pixel buffers seen by `cameras`.

    albedo [B,H,W,3] linear in [0,1], roughness/metallic [B,H,W,1] in [0,1], normal [B,H,W,3]
    world unit vectors; the view direction is minus each pixel's camera ray.
    """
    _, directions = cameras.rays()
    return shade_components(normal, -directions.to(normal), albedo, roughness, metallic, light).rgb


def depth_to_points(depth: Tensor, cameras: Cameras) -> Tensor:
    """World points [B,H,W,3] of z-depth [B,H,W,1] (distance along the camera's forward axis)."""
    origins, directions = cameras.rays()
    forward = -cameras.c2w[:, :3, 2].to(depth)  # OpenGL: the camera looks down -Z
    cosine = (directions * forward[:, None, None, :]).sum(-1, keepdim=True)
    return origins + directions * depth / cosine.clamp_min(1e-6)


def depth_normals(depth: Tensor, cameras: Cameras) -> Tensor:
    """Unit normals [B,H,W,3] of the surface the depth map [B,H,W,1] describes, facing the camera.

    Central differences inside the image, one-sided on its border.
    """
    points = depth_to_points(depth, cameras)
    padded = F.pad(points.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)
    d_dx = padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]
    d_dy = padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]
    normal = F.normalize(torch.cross(d_dx, d_dy, dim=-1), dim=-1)
    _, directions = cameras.rays()
    facing = torch.where((normal * directions).sum(-1, keepdim=True) > 0, -1.0, 1.0)
    return normal * facing


def depth_normal_consistency(depth: Tensor, normal: Tensor, alpha: Tensor, cameras: Cameras,
                             min_alpha: float = 0.5) -> Tensor:
    """Coverage-weighted mean of 1 - n_depth . n over pixels whose 3x3 neighbourhood has alpha >= min_alpha.

    depth [B,H,W,1] z-depth, normal [B,H,W,3] splatted unit normals, alpha [B,H,W,1].
    """
    covered = (alpha >= min_alpha).float().permute(0, 3, 1, 2)
    inside = -F.max_pool2d(-covered, 3, stride=1, padding=1)  # erosion: every neighbour covered
    weight = (inside.permute(0, 2, 3, 1) * alpha).detach()
    cosine = (depth_normals(depth, cameras) * normal).sum(-1, keepdim=True)
    return ((1 - cosine) * weight).sum() / weight.sum().clamp_min(1.0)


def edge_aware_smoothness(buffer: Tensor, image: Tensor, alpha: Tensor, sharpness: float = 10.0) -> Tensor:
    """Material smoothness: mean |grad buffer| exp(-sharpness |grad image|) over covered neighbours.

    buffer [B,H,W,C] (albedo, roughness, ...), image [B,H,W,3] the target photo, alpha [B,H,W,1].
    Piecewise-constant materials cost nothing; edges of the photo may carry material edges.
    """
    def grads(x):
        return x[:, :, 1:] - x[:, :, :-1], x[:, 1:] - x[:, :-1]

    bx, by = grads(buffer)
    ix, iy = grads(image)
    ax = (alpha[:, :, 1:] * alpha[:, :, :-1]).detach()
    ay = (alpha[:, 1:] * alpha[:, :-1]).detach()
    wx = torch.exp(-sharpness * ix.abs().mean(-1, keepdim=True)) * ax
    wy = torch.exp(-sharpness * iy.abs().mean(-1, keepdim=True)) * ay
    total = (bx.abs().mean(-1, keepdim=True) * wx).sum() + (by.abs().mean(-1, keepdim=True) * wy).sum()
    return total / (ax.sum() + ay.sum()).clamp_min(1.0)
