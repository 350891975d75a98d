"""Image-to-3D, DreamGaussian-style: the reference view is fitted directly (RGB + mask
losses) while a view-conditioned prior (Zero123) distils the unseen sides, then the
Gaussians are meshed and their colour refined. The stage engine is distillation.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from core.cameras import spherical_cameras
from core.config import ConfigError
from core.data.reference import load_reference
from core.distill.schedules import ScalarSchedule, as_schedule
from core.pipelines.distillation import DistillationConfig, check_memory, run_distillation
from core.priors import PriorConfig, load
from core.runner import Callbacks


@dataclass
class ImageTo3DConfig(DistillationConfig):
    """image: the reference picture (RGBA, or RGB on a plain background). Its pose is
    prior.reference_elevation_deg / reference_azimuth_deg at `reference_radius` with
    `reference_fov`; it is recentred to fill `object_fill` of a `reference_size` frame.
    rgb_weight, mask_weight: DreamGaussian's reference-view MSE weights (10000, 1000)."""

    image: str = ""
    reference_size: int = 64
    reference_radius: float = 2.5
    reference_fov: float = 45.0
    object_fill: float = 0.75
    matting_threshold: float = 0.1
    rgb_weight: float | ScalarSchedule = 10000.0
    mask_weight: float | ScalarSchedule = 1000.0
    prior: PriorConfig = field(default_factory=lambda: PriorConfig(kind="zero123", model="builtin:zero123"))


def reference_loss(cfg: ImageTo3DConfig, rgb: torch.Tensor, mask: torch.Tensor):
    """Extra loss: render the reference camera and compare with the reference image and mask."""
    el = torch.tensor([cfg.prior.reference_elevation_deg])
    az = torch.tensor([cfg.prior.reference_azimuth_deg])
    camera = spherical_cameras(el, az, torch.tensor([cfg.reference_radius]), torch.tensor([cfg.reference_fov]),
                               cfg.reference_size, cfg.reference_size)
    w_rgb, w_mask = as_schedule(cfg.rgb_weight), as_schedule(cfg.mask_weight)
    target_rgb = rgb.permute(0, 2, 3, 1)
    target_mask = mask.permute(0, 2, 3, 1)

    def loss(scene, out, batch, progress):
        ref = scene.render(camera.to(out.rgb.device), torch.ones(3, device=out.rgb.device))
        rgb_mse = F.mse_loss(ref.rgb, target_rgb.to(ref.rgb))
        mask_mse = F.mse_loss(ref.alpha, target_mask.to(ref.alpha))
        value = float(w_rgb(progress)) * rgb_mse + float(w_mask(progress)) * mask_mse
        return value, {"ref_rgb_mse": float(rgb_mse.detach()), "ref_mask_mse": float(mask_mse.detach())}

    return loss


def image_to_3d(cfg: ImageTo3DConfig, out_dir: str | Path, callbacks: Callbacks | None = None,
                prior=None) -> dict[str, Path]:
    """Lift `cfg.image` into `out_dir` (see run_distillation); returns the written paths."""
    if not cfg.image:
        raise ConfigError("image-to-3D needs image=<path to a picture>")
    check_memory(cfg)
    rgb, mask = load_reference(cfg.image, cfg.reference_size, cfg.object_fill, cfg.matting_threshold)
    prior = prior if prior is not None else load(cfg.prior)

    def condition(cameras):
        return prior.condition(rgb, "", cameras)

    from core.io import write_png

    out = Path(out_dir)
    write_png(out / "reference.png", torch.cat([rgb, mask], dim=1)[0].permute(1, 2, 0))
    return run_distillation(cfg, out, prior, condition, callbacks, reference_loss(cfg, rgb, mask))
