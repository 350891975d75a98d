"""DreamPolish's surface polish signal: rendered normals pulled toward the normals a
monocular estimator predicts from the rendered colour (Cheng et al. 2024, Sec. 3.2).

The estimator sees the render, not the geometry, so its prediction carries the prior's
idea of the surface; varied fields of view (the camera sampler's fov_range) give it
different framings of the same surface."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core.cameras import Cameras, world_to_camera_normals
from renderers.base import RenderOutput


def normal_guidance_loss(out: RenderOutput, cameras: Cameras, estimator, min_alpha: float = 0.5) -> Tensor:
    """Mean (1 - cos) between rendered camera-space normals and the estimator's normals for
    the rendered colour (detached), over pixels with alpha > min_alpha. Scalar."""
    if out.normal is None:
        raise ValueError("normal guidance needs rendered normals (enable them in the renderer's config)")
    with torch.no_grad():
        target = estimator.predict(out.chw().detach().clamp(0, 1))            # [B,3,H,W]
        target = F.normalize(target.permute(0, 2, 3, 1).to(out.normal), dim=-1)
    rendered = F.normalize(world_to_camera_normals(out.normal, cameras), dim=-1)
    mask = (out.alpha.detach() > min_alpha).to(out.normal)
    cos = (rendered * target).sum(-1, keepdim=True)
    return ((1 - cos) * mask).sum() / mask.sum().clamp_min(1.0)
