"""Geometry regularisers for score distillation, each a scalar from one render, with
weights that are numbers or schedules over training progress."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from core.cameras import Cameras
from core.distill.schedules import ScalarSchedule, as_schedule
from renderers.base import RenderOutput

Weight = float | ScalarSchedule


@dataclass
class RegulariserConfig:
    """Weights (0 disables a term).

    opacity:       mean alpha, a sparsity pressure against floaters (threestudio's lambda_sparsity).
    gaussian_opacity: mean opacity of the scene's Gaussians (the opacity L1 of 3DGS-MCMC, Kheradmand
                   et al. 2024, eq. 11, as a mean). Alpha sparsity cannot reach a Gaussian behind
                   others: accumulated alpha 1 - prod(1 - a_j) has d/da_i = prod_{j!=i}(1 - a_j) ~ 0
                   under an opaque stack, so a thick background-coloured plug survives it; this term
                   pushes every Gaussian, and the prior's gradient keeps the visible object.
    entropy:       binary entropy of alpha, pushing pixels to be empty or opaque (lambda_opaque).
    orientation:   Ref-NeRF / DreamFusion orientation loss: alpha * max(0, n . d)^2 for rendered
                   normals n facing away from the viewing ray d.
    normal_smooth: total variation of the rendered normal map where alpha > 0.
    laplacian:     uniform-Laplacian smoothness of mesh vertices (mesh and DMTet scenes).
    sdf:           nvdiffrec's SDF sign regulariser (DMTet scenes).
    """

    opacity: Weight = 0.0
    gaussian_opacity: Weight = 0.0
    entropy: Weight = 0.0
    orientation: Weight = 0.0
    normal_smooth: Weight = 0.0
    laplacian: Weight = 0.0
    sdf: Weight = 0.0


def binary_entropy(alpha: Tensor, eps: float = 1e-5) -> Tensor:
    a = alpha.clamp(eps, 1 - eps)
    return -(a * a.log() + (1 - a) * (1 - a).log()).mean()


def orientation_loss(out: RenderOutput, cameras: Cameras) -> Tensor:
    """DreamFusion (Poole et al. 2023, appendix) / Ref-NeRF eq. 10 on rendered normals [B,H,W,3]."""
    _, dirs = cameras.rays()
    facing_away = (out.normal * dirs.to(out.normal)).sum(-1, keepdim=True).clamp_min(0)
    return (out.alpha.detach() * facing_away**2).mean()


def normal_total_variation(out: RenderOutput) -> Tensor:
    n, a = out.normal, out.alpha.detach()
    dx = (n[:, :, 1:] - n[:, :, :-1]).abs().sum(-1, keepdim=True) * a[:, :, 1:] * a[:, :, :-1]
    dy = (n[:, 1:] - n[:, :-1]).abs().sum(-1, keepdim=True) * a[:, 1:] * a[:, :-1]
    return dx.mean() + dy.mean()


def regularise(cfg: RegulariserConfig, scene, out: RenderOutput, cameras: Cameras,
               progress: float) -> tuple[Tensor, dict[str, float]]:
    """Sum of the enabled terms and each term's unweighted value for logging."""
    total = out.rgb.new_zeros(())
    stats: dict[str, float] = {}

    def add(name: str, fn) -> None:
        nonlocal total
        w = float(as_schedule(getattr(cfg, name))(progress))
        if w:
            value = fn()
            stats[f"reg_{name}"] = float(value.detach())
            total = total + w * value

    add("opacity", lambda: out.alpha.mean())
    add("entropy", lambda: binary_entropy(out.alpha))
    params = getattr(scene, "params", None)
    if params is not None and "opacities" in params:
        add("gaussian_opacity", lambda: params["opacities"].sigmoid().mean())
    if out.normal is not None:
        add("orientation", lambda: orientation_loss(out, cameras))
        add("normal_smooth", lambda: normal_total_variation(out))
    mesh = out.extras.get("mesh")
    if mesh is not None:
        from renderers.mesh import laplacian_smoothness

        add("laplacian", lambda: laplacian_smoothness(mesh.vertices, mesh.faces))
    if hasattr(scene, "sdf_regularizer"):
        add("sdf", scene.sdf_regularizer)
    for name, value in getattr(scene, "regularisers", lambda: {})().items():
        stats[f"reg_{name}"] = float(value.detach())
        total = total + value
    return total, stats
