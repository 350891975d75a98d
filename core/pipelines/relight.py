"""Progressive radiance distillation (Ye et al. 2024): relightable PBR Gaussians from posed photos.

The scene is a `PBRGaussianScene` (renderers/gaussian/pbr.py): radiance Gaussians that also
carry albedo, roughness, metallic and a distillation progress a, shaded in screen space
under a learnable HDR environment and blended I = a I_pbr + (1 - a) I_rad (maths in
renderers/shading/deferred.py). Stages, as the paper orders them:

  1. radiance   a = 0: 3DGS pre-training of geometry and radiance colour (with densification)
                and the depth-normal consistency that gives the shading its normals.
  2. specular   a from the splatted map, initialised small (`renderer.pbr.init_progress`):
                environment, roughness, metallic and albedo (from a uniform grey) are distilled.
                `init_albedo_from_radiance` would start the albedo from the radiance colour
                instead; measured worse, since that colour has the shading baked in and the
                light then stays nearly uniform (docs/relight.md).
  3. diffuse    the same groups go on learning (the paper's material stage; its own weights).
  4. joint      everything, geometry at a reduced rate.

Stages 2-4 add the progress push L_push = mean_p (1 - a(p)) exp(-|I_pbr(p) - I_gt(p)|_1 / tau),
the weight (held constant in the step) being large where the physical model already
explains the pixel, so progress moves toward 1 there and only there, as fast as the
physical model converges.

Every stage's loss: (1 - l) L1 + l D-SSIM of the blend against the photo (3DGS eq. 7,
kornia's ssim_loss = (1 - SSIM) / 2), an alpha-mask L1, the environment's white-light
prior, edge-aware smoothness of the material buffers, depth-normal consistency and the
densifier's own regularisers; weights are per stage in configs/relight/*.yaml.

`progressive=false` is the PBR-only baseline in the same code: a = 1 in every stage, and
the first stage learns materials and light together with the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from core.config import save_config
from core.data.nerf_synthetic import ImageDataset, load_dataset
from core.pipelines.reconstruct import ViewSampler, reconstruction_gaussians
from core.runner import Batch, Callbacks, RunFolder, Stage, run_stage, seed_everything
from renderers.gaussian.densify import Densifier, DensifyConfig
from renderers.gaussian.pbr import PBR_ATTRIBUTES, PBRConfig, PBRGaussianScene
from renderers.gaussian.scene import GaussianConfig
from renderers.shading.deferred import depth_normal_consistency, edge_aware_smoothness
from renderers.shading.tonemap import srgb_decode

GEOMETRY = ("means", "quats", "scales", "opacities")
RADIANCE = ("sh0", "shN")
TRAINABLE = (*GEOMETRY, *RADIANCE, *PBR_ATTRIBUTES, "environment")


@dataclass
class RelightStageConfig:
    """One stage. train: parameter groups that learn (`geometry` = means/quats/scales/opacities,
    `radiance` = SH colour, albedo, roughness, metallic, progress, environment); lr_scale
    multiplies their rates (geometry_lr_scale the geometry's on top)."""

    name: str = "radiance"
    steps: int = 300
    blend: str = "map"                  # "radiance" (a = 0) | "map" (the splatted progress)
    train: list[str] = field(default_factory=lambda: ["geometry", "radiance"])
    densify: bool = False
    lr_scale: float = 1.0
    geometry_lr_scale: float = 1.0
    init_albedo_from_radiance: bool = False
    ssim_weight: float = 0.2            # l in (1 - l) L1 + l D-SSIM
    alpha_weight: float = 0.5
    white_light_weight: float = 0.0
    smoothness_weight: float = 0.0
    normal_weight: float = 0.05         # depth-normal consistency
    progress_push_weight: float = 0.0
    progress_push_tau: float = 0.1      # L1 error (display units) at which the push weight is 1/e

    def __post_init__(self) -> None:
        if self.blend not in ("radiance", "map"):
            raise ValueError(f"blend must be 'radiance' or 'map', got {self.blend!r}")
        unknown = [t for t in self.train if t not in ("geometry", "radiance", *PBR_ATTRIBUTES, "environment")]
        if unknown:
            raise ValueError(f"unknown train groups {unknown}; use geometry, radiance, albedo, roughness, metallic, "
                             "progress, environment")
        if self.steps < 1:
            raise ValueError(f"stage steps must be at least 1, got {self.steps}")


def _default_stages() -> list[RelightStageConfig]:
    pbr = ["albedo", "roughness", "metallic", "progress", "environment"]
    return [
        RelightStageConfig("radiance", 300, "radiance", ["geometry", "radiance"], densify=True),
        RelightStageConfig("specular", 150, "map", pbr, white_light_weight=0.05, smoothness_weight=0.05,
                           progress_push_weight=0.3),
        RelightStageConfig("diffuse", 150, "map", pbr, white_light_weight=0.05, smoothness_weight=0.05,
                           progress_push_weight=0.3),
        RelightStageConfig("joint", 150, "map", ["geometry", "radiance", *pbr], geometry_lr_scale=0.1,
                           white_light_weight=0.05, smoothness_weight=0.05, progress_push_weight=0.3),
    ]


def relight_gaussians() -> GaussianConfig:
    """Stage 1 (radiance pre-training) is a photometric reconstruction: the same Gaussians, with a
    view-dependent colour (SH degree 3, as 3DGS; one degree more every 60 steps)."""
    return replace(reconstruction_gaussians(), sh_degree=3, sh_degree_interval=60)


@dataclass
class RelightRendererConfig:
    gaussian: GaussianConfig = field(default_factory=relight_gaussians)
    pbr: PBRConfig = field(default_factory=PBRConfig)


@dataclass
class RelightConfig:
    data: str = ""                       # Blender/NeRF-synthetic folder (transforms_train.json + images)
    progressive: bool = True             # false: the PBR-only baseline (a = 1 from the start)
    seed: int = 0
    device: str = "auto"
    batch_size: int = 2
    width: int = 0                       # 0: the images' own size
    height: int = 0
    stages: list[RelightStageConfig] = field(default_factory=_default_stages)
    renderer: RelightRendererConfig = field(default_factory=RelightRendererConfig)
    preview_every: int = 100
    checkpoint_every: int = 100
    export_glb: bool = True
    glb_resolution: int = 64             # iso-surface grid of the Gaussians -> mesh step
    glb_texture_size: int = 256
    turntable_frames: int = 24           # relit turntable: the environment turns once around +Z
    turntable_size: int = 128
    turntable_elevation: float = 20.0
    turntable_radius: float = 2.6
    turntable_fov: float = 40.0

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("relight needs at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")


def stage_learning_rates(scene: PBRGaussianScene, stage: RelightStageConfig, progressive: bool) -> list[dict]:
    """The scene's Adam groups with the stage's rates: 0 for groups that do not learn in it."""
    train = set(stage.train)
    if not progressive:  # PBR only: a is 1, so materials and light always learn, progress never
        train |= {"albedo", "roughness", "metallic", "environment"}
        train.discard("progress")
    groups = scene.param_groups()
    for group in groups:
        name = group["name"]
        kind = "geometry" if name in GEOMETRY else "radiance" if name in RADIANCE else name
        scale = stage.lr_scale * (stage.geometry_lr_scale if kind == "geometry" else 1.0)
        group["lr"] = group["lr"] * scale if kind in train else 0.0
    return groups


def relight_loss(stage: RelightStageConfig, scene: PBRGaussianScene, progressive: bool):
    """The stage's loss(out, batch, step, progress) -> (total, stats) (terms in the module docstring)."""
    from kornia.losses import ssim_loss

    shading = progressive and stage.blend == "map" or not progressive

    def loss(out, batch: Batch, step: int, progress: float):
        target = batch.data["rgb"].to(out.rgb)
        target_alpha = batch.data["alpha"].to(out.alpha)
        l1 = (out.rgb - target).abs().mean()
        dssim = ssim_loss(out.chw(), target.permute(0, 3, 1, 2), window_size=7)
        mask = F.l1_loss(out.alpha, target_alpha)
        total = (1 - stage.ssim_weight) * l1 + stage.ssim_weight * dssim + stage.alpha_weight * mask
        stats = {"l1": l1.item(), "dssim": dssim.item(), "alpha_l1": mask.item(), "n_gaussians": len(scene)}
        if stage.normal_weight:
            consistency = depth_normal_consistency(out.depth, out.normal, out.alpha, batch.cameras.to(out.rgb.device))
            total = total + stage.normal_weight * consistency
            stats["depth_normal"] = consistency.item()
        if shading and stage.white_light_weight:
            white = scene.environment.white_light_prior()
            total = total + stage.white_light_weight * white
            stats["white_light"] = white.item()
        if shading and stage.smoothness_weight:
            smooth = sum(edge_aware_smoothness(out.extras[name], target, out.alpha)
                         for name in ("albedo", "roughness", "metallic"))
            total = total + stage.smoothness_weight * smooth
            stats["smoothness"] = smooth.item()
        if "pbr" in out.extras:
            a = out.extras["progress"]
            with torch.no_grad():
                stats["progress_mean"] = float((a * out.alpha).sum() / out.alpha.sum().clamp_min(1e-6))
                stats["pbr_l1"] = float((out.extras["pbr"] - target).abs().mean())
            if progressive and stage.progress_push_weight:
                explained = torch.exp(-(out.extras["pbr"] - target).abs().mean(-1, keepdim=True)
                                      / stage.progress_push_tau).detach()
                push = ((1 - a) * explained * out.alpha.detach()).sum() / out.alpha.detach().sum().clamp_min(1.0)
                total = total + stage.progress_push_weight * push
                stats["progress_push"] = push.item()
        for value in scene.regularisers().values():
            total = total + value
        return total, stats

    return loss


@torch.no_grad()
def init_albedo_from_radiance(scene: PBRGaussianScene) -> None:
    """albedo := sRGB-decoded view-independent radiance colour: under the initial uniform
    environment of radiance 1 (irradiance pi), Lambert then reproduces the radiance colour."""
    from renderers.gaussian.ply import SH_C0

    colour = (SH_C0 * scene.params["sh0"][:, 0] + 0.5).clamp(0, 1)
    scene.set_attribute("albedo", srgb_decode(colour))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def relight(cfg: RelightConfig, out_dir: str | Path, callbacks: Callbacks | None = None,
            dataset: ImageDataset | None = None) -> dict[str, Path]:
    """Run every stage into `out_dir` (resuming from its checkpoints) and write the outputs
    (core/pipelines/relight_outputs.py). Returns the written paths."""
    from core.pipelines.relight_outputs import export_relight, save_radiance_snapshot

    if dataset is None:
        dataset = load_dataset(cfg.data, "train", cfg.width or None, cfg.height or None,
                               background=cfg.renderer.gaussian.background)
    folder = RunFolder(out_dir)
    save_config(cfg, folder.path / "config.yaml")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    scene = PBRGaussianScene(cfg.renderer.gaussian, cfg.renderer.pbr).to(device)
    geometry_densifier = scene.densifier
    for index, stage_cfg in enumerate(cfg.stages):
        seed_everything(cfg.seed + index)
        scene.densifier = geometry_densifier if stage_cfg.densify else Densifier(DensifyConfig(strategy="none"))
        if cfg.progressive:
            scene.progress_override = 0.0 if stage_cfg.blend == "radiance" else None
        else:
            scene.progress_override = 1.0
        if stage_cfg.init_albedo_from_radiance and cfg.progressive:
            init_albedo_from_radiance(scene)  # a resumed stage's checkpoint overwrites this
        optimizer = torch.optim.Adam(stage_learning_rates(scene, stage_cfg, cfg.progressive), eps=1e-15)
        scene.attach_optimizer(optimizer)
        sampler = ViewSampler(dataset, cfg.batch_size, cfg.seed + index)
        stage = Stage(stage_cfg.name, scene, stage_cfg.steps, sampler, relight_loss(stage_cfg, scene, cfg.progressive),
                      optimizer, stateful={"views": sampler}, preview_every=cfg.preview_every,
                      checkpoint_every=cfg.checkpoint_every)
        run_stage(stage, folder, callbacks)
        if index == 0 and cfg.progressive:
            save_radiance_snapshot(scene, folder.path)
    scene.progress_override = None if cfg.progressive else 1.0
    return export_relight(scene, cfg, folder.path)
