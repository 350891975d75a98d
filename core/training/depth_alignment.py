"""Scale-and-shift alignment of relative depth: the training loss of the built-in depth
network and the alignment its evaluation measures after.

A monocular depth network cannot know the scene's scale (a room twice as large, seen
from twice as far, gives the same image), and Marigold-style estimators also leave the
offset free; so prediction p and true depth d are compared after the affine map that
best fits one to the other (MiDaS, Ranftl et al. TPAMI 2022, the scale-and-shift-invariant
MSE; Marigold, Ke et al. CVPR 2024, evaluates after the same least-squares fit).

Per image, over its N valid pixels i:

    E(s, t) = 1/N sum_i (s p_i + t - d_i)^2

dE/dt = 0 gives t = mean(d) - s mean(p); putting it back,

    E(s) = var(d) - 2 s cov(p, d) + s^2 var(p)

(population moments over the valid pixels), a convex parabola in s with its minimum at
s* = cov(p, d) / var(p). The estimators' convention is "larger is farther", so the scale
is constrained to s >= 0: the minimiser over s >= 0 of a convex parabola is max(s*, 0),
and the loss is

    E_min = var(d) - max(cov, 0)^2 / var(p)     (= var(d) when p and d are anti-correlated)

Without the constraint a network trained from scratch may settle on "larger is nearer"
(the unconstrained loss is blind to the sign); with it, a wrong sign costs var(d), the
loss of a constant prediction. The gradient of E_min with respect to p equals that of
E at fixed (s, t) = (s*, t*) (envelope theorem), so the fit is not detached.

Targets are per-image normalised to [0, 1] over valid pixels before training (each image
weighs the same whatever its room's size); evaluation aligns to metric depth.
"""

from __future__ import annotations

import torch
from torch import Tensor


def fit_scale_shift(pred: Tensor, target: Tensor, valid: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Per-image least-squares (scale >= 0, shift) with scale * pred + shift ~ target over
    valid pixels. pred, target [B,1,H,W]; valid [B,1,H,W] bool -> scale [B], shift [B]."""
    w = valid.to(pred.dtype)
    n = w.sum((1, 2, 3)).clamp_min(1.0)
    mean_p = (w * pred).sum((1, 2, 3)) / n
    mean_d = (w * target).sum((1, 2, 3)) / n
    dp = (pred - mean_p.view(-1, 1, 1, 1)) * w
    dd = (target - mean_d.view(-1, 1, 1, 1)) * w
    var_p = (dp * dp).sum((1, 2, 3)) / n
    cov = (dp * dd).sum((1, 2, 3)) / n
    scale = cov.clamp_min(0.0) / (var_p + eps)
    return scale, mean_d - scale * mean_p


def align(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """pred [B,1,H,W] mapped by its `fit_scale_shift` onto target's scale and offset."""
    scale, shift = fit_scale_shift(pred, target, valid)
    return scale.view(-1, 1, 1, 1) * pred + shift.view(-1, 1, 1, 1)


def scale_shift_invariant_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean over images of E_min: the mean squared error over valid pixels after the
    per-image fit. pred, target [B,1,H,W]; valid [B,1,H,W] bool -> scalar."""
    w = valid.to(pred.dtype)
    residual = (align(pred, target, valid) - target) * w
    return ((residual ** 2).sum((1, 2, 3)) / w.sum((1, 2, 3)).clamp_min(1.0)).mean()


def normalise_depth(depth: Tensor, valid: Tensor) -> Tensor:
    """depth [B,1,H,W] mapped per image to [0,1] over its valid pixels (min -> 0, max -> 1);
    invalid pixels -> 0."""
    big = torch.finfo(depth.dtype).max
    lo = torch.where(valid, depth, torch.full_like(depth, big)).amin((1, 2, 3), keepdim=True)
    hi = torch.where(valid, depth, torch.full_like(depth, -big)).amax((1, 2, 3), keepdim=True)
    return torch.where(valid, (depth - lo) / (hi - lo).clamp_min(1e-6), torch.zeros_like(depth))
