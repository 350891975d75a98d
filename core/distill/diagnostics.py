"""What a distillation step records: gradient norms per objective term on x0, the image
gradient before and after PGC, t and the guidance scale, as flat floats for one
metrics.jsonl line; and per-pixel gradient-magnitude maps for previews.

The image-gradient entries (`image_grad_norm_before`, `image_grad_norm_after`,
`image_pixel_grad_max`, `image_pgc_clipped_fraction`) are written into the step's stats
dict by the PGC hook during backward (core.distill.pgc), so they are present once
`loss.backward()` has run, which is when the runner logs.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor


def mean_norm(x: Tensor) -> float:
    """Mean over the batch of each sample's L2 norm; x [B,...]."""
    return float(x.detach().float().flatten(1).norm(dim=1).mean())


def step_stats(t: Tensor, num_train_timesteps: int, weight: Tensor, guidance_scale: float,
               terms: Mapping[str, Tensor], grad: Tensor, **scalars: float) -> dict[str, float]:
    """The objective's record for one step.

    t [B] integer timesteps; weight [B] w(t); terms: name -> weighted term [B,C,h,w] of the
    gradient on x0; grad [B,C,h,w] the final gradient on x0 (after nan_to_num and clamp).
    Keys: t (mean timestep), t_fraction (t / (T-1)), w_t, guidance_scale, grad_norm,
    grad_norm_<term> for each term, plus `scalars` as given.
    """
    stats = {
        "t": float(t.float().mean()),
        "t_fraction": float(t.float().mean()) / max(1, num_train_timesteps - 1),
        "w_t": float(weight.float().mean()),
        "guidance_scale": float(guidance_scale),
        "grad_norm": mean_norm(grad),
    }
    stats.update({f"grad_norm_{name}": mean_norm(term) for name, term in terms.items()})
    stats.update({k: float(v) for k, v in scalars.items()})
    return stats


def flatten(stats: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested dicts of numbers / 0-d tensors -> one flat dict of floats ("a/b" keys);
    entries that are not numbers (tensors with several elements, strings, None) are dropped."""
    out: dict[str, float] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}/"))
        elif isinstance(value, Tensor) and value.numel() == 1:
            out[name] = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def gradient_magnitude_map(grad: Tensor, norm: str = "l2") -> Tensor:
    """Per-pixel gradient magnitude for previews.

    grad [B,C,H,W] (an image gradient; C = 1 is taken as magnitudes already) ->
    [B,1,H,W] in [0,1], each image divided by its own maximum (all-zero stays zero).
    """
    g = grad.detach().float()
    if g.shape[1] == 1:
        mag = g.abs()
    elif norm == "linf":
        mag = g.abs().amax(dim=1, keepdim=True)
    else:
        mag = g.norm(dim=1, keepdim=True)
    peak = mag.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny).view(-1, 1, 1, 1)
    return mag / peak
