"""The one Gaussian rasterisation function of scorelift.

`rasterize` keeps gsplat 1.5.3's `rasterization()` signature and meaning (unbatched,
pinhole, classic mode, unpacked) so that gsplat (CUDA) and the tiled torch rasteriser
(any device, the CPU path) are interchangeable backends. The torch path is
projection (EWA splatting, Zwicker et al. 2002, as gsplat does it) -> colours (SH) ->
render-mode channels -> tiled front-to-back compositing (`renderers.gaussian.tiles`).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

from renderers.gaussian.tiles import ALPHA_THRESHOLD, EPS2D, TILE_SIZE, composite_tiles

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "gsplat", "torch")


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,
    render_mode: RenderMode = "RGB",
    backend: Literal["auto", "gsplat", "torch"] = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Render N 3D Gaussians into C pinhole cameras (gsplat's `rasterization`, unbatched).

    Args:
        means: [N,3] world-space centres.
        quats: [N,4] rotations as wxyz quaternions (need not be normalised).
        scales: [N,3] standard deviations along the rotated axes (> 0, not log).
        opacities: [N] in [0,1].
        colors: [N,D] or [C,N,D] colours/features; with `sh_degree` set, SH coefficients
            [N,K,3] or [C,N,K,3] with K >= (sh_degree+1)^2, and then the colour is
            clamp_min(SH(view dir) + 0.5, 0), view dir = mean - camera centre.
        viewmats: [C,4,4] OpenCV world-to-camera (`Cameras.viewmats()`).
        Ks: [C,3,3] intrinsics in pixels, pixel centres at +0.5.
        width, height: image size in pixels.
        near_plane, far_plane: Gaussians whose centre depth is outside are culled.
        backgrounds: [C,D] colour behind the Gaussians (ignored for depth channels).
        render_mode: "RGB" (D channels), "D" accumulated depth sum_i w_i z_i, "ED" expected
            depth D / alpha, "RGB+D" / "RGB+ED" (D+1 channels, depth last).
        backend: "gsplat" (CUDA tensors only), "torch" (any device) or "auto" (gsplat when
            `means.is_cuda`, else torch).

    Returns:
        render_colors [C,H,W,X], render_alphas [C,H,W,1] in [0,1], and meta, a dict with
        gsplat's unpacked keys: "radii" [C,N,2] int32 (0: culled), "means2d" [C,N,2] (a
        non-leaf tensor whose .grad densification reads), "depths" [C,N], "conics"
        [C,N,3], "opacities" [C,N], "gaussian_ids" None, "tiles_per_gauss" [C,N],
        "flatten_ids", "isect_offsets", "width", "height", "tile_size", "tile_width",
        "tile_height", "n_cameras", "n_batches".
    """
    C, N = _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                         sh_degree, backgrounds, render_mode)
    backend = resolve_backend(backend, means)
    if backend == "gsplat":
        from gsplat import rasterization

        return rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree, packed=False,
            tile_size=TILE_SIZE, backgrounds=backgrounds, render_mode=render_mode,
        )
    return render_with(composite_tiles, means, quats, scales, opacities, colors, viewmats, Ks, width,
                       height, near_plane, far_plane, sh_degree, backgrounds, render_mode)


def resolve_backend(backend: str, means: Tensor) -> str:
    """"auto" -> "gsplat" for CUDA tensors, else "torch"; checks that gsplat gets CUDA tensors."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "gsplat" if means.is_cuda else "torch"
    if backend == "gsplat" and not means.is_cuda:
        raise ValueError("backend='gsplat' needs CUDA tensors; use backend='torch' (or 'auto') on CPU")
    return backend


Compositor = Callable[..., tuple[Tensor, Tensor, dict]]


def render_with(
    composite: Compositor,
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int, near_plane: float = 0.01,
    far_plane: float = 1e10, sh_degree: int | None = None, backgrounds: Tensor | None = None,
    render_mode: RenderMode = "RGB",
) -> tuple[Tensor, Tensor, dict]:
    """The torch pipeline of `rasterize` with a pluggable compositor (tiled or dense reference).

    `composite(means2d, conics, opacities, colors, radii, depths, width, height, backgrounds)`
    takes per-camera [C,N,...] tensors and returns colours [C,H,W,X], alphas [C,H,W,1] and
    extra meta entries.
    """
    C, N = viewmats.shape[0], means.shape[0]
    radii, means2d, depths, conics = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane)
    opacities_c = opacities[None].expand(C, N)

    if sh_degree is None:
        colors_c = colors if colors.dim() == 3 else colors[None].expand(C, N, colors.shape[-1])
    else:
        colors_c = colors_from_sh(sh_degree, colors, means, viewmats)

    # Depth channels composite like colours; backgrounds never tint depth (gsplat does the same).
    if render_mode in ("RGB+D", "RGB+ED"):
        colors_c = torch.cat([colors_c, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        colors_c = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(C, 1)

    render_colors, render_alphas, extra = composite(
        means2d, conics, opacities_c, colors_c, radii, depths, width, height, backgrounds)

    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1)

    meta = {
        "batch_ids": None, "camera_ids": None, "gaussian_ids": None,
        "radii": radii, "means2d": means2d, "depths": depths, "conics": conics,
        "opacities": opacities_c, "width": width, "height": height, "tile_size": TILE_SIZE,
        "n_cameras": C, "n_batches": 1,
    }
    meta.update(extra)
    return render_colors, render_alphas, meta


def project_gaussians(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor, Ks: Tensor,
    width: int, height: int, near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = EPS2D,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of 3D Gaussians into C pinhole cameras, as gsplat's fused CUDA kernel.

    Matches `gsplat.cuda._torch_impl._fully_fused_projection` (eps2d low-pass, clamped
    Jacobian, culling outside [near, far] and off-screen) with the opacity-aware radius of
    gsplat's CUDA kernel, which `rasterization` enables: extent min(3.33, sqrt(2 ln(o / (1/255))))
    sigma per axis, and o < 1/255 culled. Outside that box alpha < 1/255, so images are the
    same either way; the radii (densification's visibility) then match gsplat on CUDA.

    Returns radii [C,N,2] int32 (0,0 for culled), means2d [C,N,2] pixels, depths [C,N]
    camera z, conics [C,N,3] upper triangle (a, b, c) of the inverse 2D covariance.
    """
    from gsplat.cuda._torch_impl import _persp_proj, _quat_scale_to_covar_preci, _world_to_cam

    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    means_c, covars_c = _world_to_cam(means, covars, viewmats)
    depths = means_c[..., 2]
    in_range = (depths >= near_plane) & (depths <= far_plane)
    # Culled Gaussians at z ~ 0 would give inf Jacobians and NaN gradients (0 * inf); they
    # never render, so project them from a harmless depth instead.
    safe_z = torch.where(in_range, depths, torch.ones_like(depths))
    means_c = torch.cat([means_c[..., :2], safe_z[..., None]], dim=-1)
    means2d, covars2d = _persp_proj(means_c, covars_c, Ks, width, height)

    covars2d = covars2d + eps2d * torch.eye(2, dtype=covars2d.dtype, device=covars2d.device)
    det = covars2d[..., 0, 0] * covars2d[..., 1, 1] - covars2d[..., 0, 1] * covars2d[..., 1, 0]
    det_safe = det.clamp(min=1e-10)
    conics = torch.stack(
        [covars2d[..., 1, 1] / det_safe,
         -(covars2d[..., 0, 1] + covars2d[..., 1, 0]) / 2.0 / det_safe,
         covars2d[..., 0, 0] / det_safe], dim=-1)

    with torch.no_grad():
        opac = opacities.detach()[None].expand_as(depths)
        extend = torch.sqrt(2.0 * torch.log((opac / ALPHA_THRESHOLD).clamp(min=1.0))).clamp(max=3.33)
        var = torch.stack([covars2d[..., 0, 0], covars2d[..., 1, 1]], dim=-1).clamp(min=0.0)
        radius = torch.ceil(extend[..., None] * torch.sqrt(var))
        m = means2d.detach()
        inside = ((m[..., 0] + radius[..., 0] > 0) & (m[..., 0] - radius[..., 0] < width)
                  & (m[..., 1] + radius[..., 1] > 0) & (m[..., 1] - radius[..., 1] < height))
        visible = (in_range & (det > 0) & (opac >= ALPHA_THRESHOLD) & inside
                   & (radius > 0).any(dim=-1))
        radii = torch.where(visible[..., None], radius, torch.zeros_like(radius)).int()
    return radii, means2d, depths, conics


def colors_from_sh(sh_degree: int, coeffs: Tensor, means: Tensor, viewmats: Tensor) -> Tensor:
    """[C,N,3] colours clamp_min(SH_{sh_degree}(dir) + 0.5, 0) from coeffs [N,K,3] or [C,N,K,3].

    dir = mean - camera centre, as gsplat (and the Inria 3DGS CUDA code) evaluate SH.
    """
    from gsplat.cuda._torch_impl import _spherical_harmonics

    C, N = viewmats.shape[0], means.shape[0]
    campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C,3]
    dirs = means[None, :, :] - campos[:, None, :]  # [C,N,3]
    if coeffs.dim() == 3:
        coeffs = coeffs[None].expand(C, N, *coeffs.shape[1:])
    return torch.clamp_min(_spherical_harmonics(sh_degree, dirs, coeffs) + 0.5, 0.0)


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                  sh_degree, backgrounds, render_mode) -> tuple[int, int]:
    """Shape checks at the door, with messages that say what was expected."""
    if means.dim() != 2 or means.shape[-1] != 3:
        raise ValueError(f"means must be [N,3], got {tuple(means.shape)}")
    N = means.shape[0]
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must be [C,4,4], got {tuple(viewmats.shape)}")
    C = viewmats.shape[0]
    expected = {"quats": (quats, (N, 4)), "scales": (scales, (N, 3)), "opacities": (opacities, (N,)),
                "Ks": (Ks, (C, 3, 3))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)} for N={N}, C={C}; got {list(t.shape)}")
    if sh_degree is None:
        if not (colors.dim() == 2 and colors.shape[0] == N) and not (colors.dim() == 3 and colors.shape[:2] == (C, N)):
            raise ValueError(f"colors must be [N,D] or [C,N,D] (N={N}, C={C}), got {list(colors.shape)}")
    else:
        ok = (colors.dim() == 3 and colors.shape[0] == N) or (colors.dim() == 4 and colors.shape[:2] == (C, N))
        if not ok or colors.shape[-1] != 3 or colors.shape[-2] < (sh_degree + 1) ** 2:
            raise ValueError(f"with sh_degree={sh_degree}, colors must be SH coefficients [N,K,3] or "
                             f"[C,N,K,3] with K >= {(sh_degree + 1) ** 2}; got {list(colors.shape)}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    D = 3 if sh_degree is not None else colors.shape[-1]
    if backgrounds is not None and tuple(backgrounds.shape) != (C, D):
        raise ValueError(f"backgrounds must be [C,D] = [{C},{D}], got {list(backgrounds.shape)}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    return C, N
