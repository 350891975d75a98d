"""Pixel-wise gradient clipping (PGC): Pan et al., "Enhancing High-Resolution 3D Generation
through Pixel-wise Gradient Clipping", ICLR 2024.

Latent-space score distillation sends its gradient back through the VAE encoder, whose
Jacobian turns a bounded latent gradient into a few pixels with huge gradients; those
pixels dominate the update of a high-resolution 3D representation. PGC bounds each pixel's
gradient vector g_p after the encoder, on the rendered image, keeping its direction:
    g_p <- g_p * min(1, c / ||g_p||)
The hook also records what it saw (norms before and after, fraction of pixels clipped),
and can be attached with clipping switched off to record only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

PixelNorm = Literal["linf", "l2"]


@dataclass
class PGCConfig:
    """enabled: clip (False: only record). threshold: c, per-pixel bound on the gradient of
    the rendered image in [0,1] units (the authors use 0.1). norm: "linf" = max over channels
    (as the authors' code), "l2" = Euclidean norm over channels."""

    enabled: bool = False
    threshold: float = 0.1
    norm: PixelNorm = "linf"

    def __post_init__(self) -> None:
        if self.threshold <= 0:
            raise ValueError(f"pgc.threshold must be positive, got {self.threshold}")


def pixel_norms(grad: Tensor, norm: PixelNorm = "linf") -> Tensor:
    """grad [B,C,H,W] -> per-pixel norm over channels [B,1,H,W], >= 0."""
    if norm == "linf":
        return grad.abs().amax(dim=1, keepdim=True)
    if norm == "l2":
        return grad.norm(dim=1, keepdim=True)
    raise ValueError(f"unknown pixel norm '{norm}'; expected 'linf' or 'l2'")


def clip_pixel_gradients(grad: Tensor, c: float = 0.1, norm: PixelNorm = "linf") -> Tensor:
    """Scale each pixel's gradient vector g_p [C] by min(1, c / ||g_p||) (Pan et al. 2024, PGC).

    grad [B,C,H,W] (any float dtype) -> same shape. Pixels with ||g_p|| <= c are returned
    bit-for-bit unchanged; the others keep their direction and get norm c.
    """
    n = pixel_norms(grad, norm)
    over = n > c
    scale = torch.where(over, c / torch.where(over, n, torch.ones_like(n)), torch.ones_like(n))
    return grad * scale


class PixelGradientClipper:
    """Backward hooks that apply PGC to rendered images (or rendered normals).

    Attach to the image tensor *before* `prior.encode`, so the hook sees the gradient after
    it has come back through the VAE encoder. Under AMP the incoming gradient is multiplied
    by the loss scale, so the threshold is too: pass `grad_scale` (e.g. `scaler.get_scale`).

    Each backward writes into the `record` dict given to `attach` (floats, gradient norms in
    unscaled units): `{name}_grad_norm_before`, `{name}_grad_norm_after` (L2 over the whole
    batch), `{name}_pixel_grad_max` (largest per-pixel norm before clipping) and
    `{name}_pgc_clipped_fraction`. `pixel_norms[name]` keeps the last per-pixel norms
    [B,1,H,W] before clipping, for gradient-magnitude previews.
    """

    def __init__(self, cfg: PGCConfig | None = None, grad_scale: Callable[[], float] | None = None) -> None:
        self.cfg = cfg or PGCConfig()
        self.grad_scale = grad_scale
        self.pixel_norms: dict[str, Tensor] = {}
        self._handles: dict[str, object] = {}

    def attach(self, tensor: Tensor, record: dict | None = None, name: str = "image"):
        """Register the hook on `tensor` [B,C,H,W] (must require grad); returns the hook handle.

        One hook per `name` lives at a time: attaching again removes the previous one, so a
        leaf image optimised directly does not pile up hooks step after step."""
        if not tensor.requires_grad:
            raise ValueError(f"cannot clip gradients of '{name}': the tensor does not require grad")
        previous = self._handles.pop(name, None)
        if previous is not None:
            previous.remove()

        def hook(grad: Tensor) -> Tensor:
            scale = float(self.grad_scale()) if self.grad_scale is not None else 1.0
            c = self.cfg.threshold * scale
            before = pixel_norms(grad, self.cfg.norm)
            self.pixel_norms[name] = before.detach() / scale
            out = clip_pixel_gradients(grad, c, self.cfg.norm) if self.cfg.enabled else grad
            if record is not None:
                record[f"{name}_grad_norm_before"] = float(grad.float().norm()) / scale
                record[f"{name}_grad_norm_after"] = float(out.float().norm()) / scale
                record[f"{name}_pixel_grad_max"] = float(before.max()) / scale if before.numel() else 0.0
                clipped = (before > c).float().mean() if self.cfg.enabled else before.new_zeros(())
                record[f"{name}_pgc_clipped_fraction"] = float(clipped)
            return out

        handle = tensor.register_hook(hook)
        self._handles[name] = handle
        return handle
