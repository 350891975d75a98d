"""Fit 3D Gaussians to posed images (a NeRF-synthetic folder): photometric reconstruction.

One stage for the runner: random views each step, L1 + D-SSIM on colour (3DGS's loss,
Kerbl et al. 2023 eq. 7) plus an alpha-mask term when the images have alpha, then the
Gaussians' own densification. Outputs: model.ply (splat), turntable frames and .mp4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from core.cameras import orbit_cameras
from core.config import ConfigError, save_config
from core.data.nerf_synthetic import ImageDataset, load_dataset
from core.runner import Batch, Callbacks, RunFolder, Stage, run_stage, seed_everything
from renderers.gaussian.densify import DensifyConfig
from renderers.gaussian.scene import GaussianConfig, GaussianScene


def reconstruction_gaussians() -> GaussianConfig:
    # Reconstruction gradients are photometric: 3DGS's threshold scale, refined early and often.
    return GaussianConfig(
        num_points=3000, init_radius=0.6, init_opacity=0.1, lr_means=2e-3, lr_sh0=2.5e-2,
        densify=DensifyConfig(grow_grad2d=2e-4, refine_start=50, refine_stop=250, refine_every=50,
                              max_gaussians=20_000),
    )


@dataclass
class ReconstructConfig:
    data: str = ""                       # folder with transforms_train.json (or transforms.json) + images
    steps: int = 300
    seed: int = 0
    device: str = "auto"
    batch_size: int = 2
    width: int = 0                       # 0: the images' own size
    height: int = 0
    l1_weight: float = 0.8
    ssim_weight: float = 0.2
    alpha_weight: float = 0.5
    preview_every: int = 100
    checkpoint_every: int = 100
    turntable_frames: int = 24
    turntable_size: int = 256
    turntable_elevation: float = 20.0
    turntable_radius: float = 2.6
    turntable_fov: float = 40.0
    renderer: GaussianConfig = field(default_factory=reconstruction_gaussians)


class ViewSampler:
    """Random view indices from a seeded generator (checkpointable)."""

    def __init__(self, dataset: ImageDataset, batch_size: int, seed: int):
        self.dataset, self.batch_size = dataset, min(batch_size, len(dataset))
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, step: int) -> Batch:
        idx = torch.randperm(len(self.dataset), generator=self.generator)[: self.batch_size]
        return Batch(self.dataset.cameras[idx], data={"rgb": self.dataset.images[idx], "alpha": self.dataset.alphas[idx]})

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def photometric_loss(cfg: ReconstructConfig, scene: GaussianScene):
    from kornia.losses import ssim_loss

    def loss(out, batch: Batch, step: int, progress: float):
        target = batch.data["rgb"].to(out.rgb)
        l1 = (out.rgb - target).abs().mean()
        dssim = ssim_loss(out.chw(), target.permute(0, 3, 1, 2), window_size=7)  # (1 - SSIM) / 2
        mask = F.l1_loss(out.alpha, batch.data["alpha"].to(out.alpha))
        total = cfg.l1_weight * l1 + cfg.ssim_weight * dssim + cfg.alpha_weight * mask
        for value in scene.regularisers().values():
            total = total + value
        return total, {"l1": l1.item(), "dssim": dssim.item(), "alpha_l1": mask.item(), "n_gaussians": len(scene)}

    return loss


def reconstruct(cfg: ReconstructConfig, out_dir: str | Path, callbacks: Callbacks | None = None,
                dataset: ImageDataset | None = None) -> dict[str, Path]:
    """Run the reconstruction into `out_dir` (resumes from its checkpoint if present).

    Returns the written paths: model (.ply), turntable (.mp4), frames folder, config.
    """
    if dataset is None:  # before the run folder: bad data leaves no half-written run behind
        if not cfg.data:
            raise ConfigError("reconstruct needs data=<folder with transforms_train.json and images>")
        dataset = load_dataset(cfg.data, "train", cfg.width or None, cfg.height or None,
                               background=cfg.renderer.background)
    folder = RunFolder(out_dir)
    save_config(cfg, folder.path / "config.yaml")
    seed_everything(cfg.seed)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    scene = GaussianScene(cfg.renderer).to(device)
    optimizer = torch.optim.Adam(scene.param_groups(), eps=1e-15)
    scene.attach_optimizer(optimizer)
    sampler = ViewSampler(dataset, cfg.batch_size, cfg.seed)
    stage = Stage("reconstruct", scene, cfg.steps, sampler, photometric_loss(cfg, scene), optimizer,
                  stateful={"views": sampler}, preview_every=cfg.preview_every,
                  checkpoint_every=cfg.checkpoint_every)
    run_stage(stage, folder, callbacks)
    return export_gaussians(scene, folder.path, cfg.turntable_frames, cfg.turntable_elevation,
                            cfg.turntable_radius, cfg.turntable_fov, cfg.turntable_size, cfg.turntable_size)


def export_gaussians(scene: GaussianScene, out: Path, frames: int, elevation: float, radius: float, fov: float,
                     width: int, height: int) -> dict[str, Path]:
    from core.export.video import turntable

    paths = {"model": scene.export(out / "model.ply"), "config": out / "config.yaml"}
    if frames:
        cams = orbit_cameras(frames, elevation, radius, fov, width, height)
        result = turntable(scene, cams, out / "turntable")
        paths["turntable"] = result.video
        paths["frames"] = out / "turntable"
    return paths
