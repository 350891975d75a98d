"""The shared engine of distillation pipelines (text-to-3D, image-to-3D): stage configs,
camera batches, the stage loss (objective + regularisers + normal guidance + a pipeline's
own terms) and the stage loop over representations with their hand-offs.

A pipeline only says how to condition the prior for a batch of cameras and what extra
loss it adds (e.g. image-to-3D's reference-view loss); the runner owns the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch

from core.cameras import CameraSamplerConfig, Cameras, RandomCameraSampler, orbit_cameras
from core.config import ConfigError, save_config
from core.distill import ObjectiveConfig, build
from core.distill.schedules import ScalarSchedule, as_schedule
from core.errors import UserError
from core.export.assets import ExportOptions
from core.export.extract import IsoSurfaceConfig
from core.pipelines.backgrounds import BackgroundConfig, DistillationBackground
from core.normal_guidance import normal_guidance_loss
from core.priors import PriorConfig
from core.priors.base import Cond
from core.regularisers import RegulariserConfig, regularise
from core.runner import Batch, Callbacks, RunFolder, Stage, run_stage, seed_everything
from renderers.base import RenderOutput
from renderers.gaussian.scene import GaussianConfig
from renderers.mesh import DMTetSceneConfig, MeshSceneConfig
from renderers.nerf import NerfConfig

Representation = Literal["gaussian", "nerf", "dmtet", "mesh"]


@dataclass
class StageConfig:
    """One stage. resolution: [[progress, size], ...] milestones (size from that progress on);
    the camera sampler's width/height are the size before the first milestone."""

    name: str = "coarse"
    representation: Representation = "gaussian"
    steps: int = 400
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    cameras: CameraSamplerConfig = field(default_factory=CameraSamplerConfig)
    resolution: list[tuple[float, int]] = field(default_factory=list)
    lr_scale: float = 1.0
    regularisers: RegulariserConfig = field(default_factory=RegulariserConfig)
    # DreamPolish's normal-guided polish: weight of core.normal_guidance (needs normal_estimator).
    normal_guidance: float | ScalarSchedule = 0.0
    # What the prior sees behind the object (core/pipelines/backgrounds.py).
    background: BackgroundConfig = field(default_factory=BackgroundConfig)

    @property
    def largest_size(self) -> int:
        """The largest render side of the stage (its cameras or any resolution milestone)."""
        return max([self.cameras.width, self.cameras.height, *[size for _, size in self.resolution]])

    def size_at(self, progress: float) -> int:
        size = self.cameras.width
        for start, value in sorted(self.resolution):
            if progress >= start:
                size = value
        return size


@dataclass
class JobResources:
    """What one job reserves on the machine that runs it when a batch runs on a cluster
    (app/ray_jobs.py turns it into Ray's num_cpus / num_gpus / memory; the local executor
    ignores it). num_cpus: cores, also the job's torch threads; num_gpus: GPUs (a fraction
    shares one); memory_gb: RAM reserved for the job's process (0 reserves none)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_gb: float = 0.0

    def __post_init__(self) -> None:
        if self.num_cpus <= 0 or self.num_gpus < 0 or self.memory_gb < 0:
            raise ValueError("need num_cpus > 0, num_gpus >= 0 and memory_gb >= 0")


@dataclass
class DistillationConfig:
    """What every distillation job shares; pipelines add their inputs (prompt, image)."""

    seed: int = 0
    device: str = "auto"
    prior: PriorConfig = field(default_factory=lambda: PriorConfig(model="builtin:text", view_dependent_prompt=False))
    gaussian: GaussianConfig = field(default_factory=GaussianConfig)
    nerf: NerfConfig = field(default_factory=NerfConfig)
    dmtet: DMTetSceneConfig = field(default_factory=DMTetSceneConfig)
    mesh: MeshSceneConfig = field(default_factory=MeshSceneConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    # For stages with normal_guidance > 0: "builtin:normals" (the shipped network trained on the
    # procedural world) or a Marigold normals repo (hub id or folder).
    normal_estimator: str = ""
    export: list[Literal["ply", "splat", "glb", "obj"]] = field(default_factory=lambda: ["ply", "glb"])
    export_options: ExportOptions = field(default_factory=lambda: ExportOptions(resolution=96, texture_size=512,
                                                                                target_faces=20_000,
                                                                                remove_floaters=True))
    handoff: IsoSurfaceConfig = field(default_factory=lambda: IsoSurfaceConfig(resolution=64, target_faces=20_000))
    preview_every: int = 50
    checkpoint_every: int = 100
    turntable_frames: int = 24
    turntable_size: int = 128
    turntable_elevation: float = 15.0
    turntable_radius: float = 2.5
    turntable_fov: float = 45.0
    resources: JobResources = field(default_factory=JobResources)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("a pipeline needs at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"stage names must be unique, got {names}")


class CameraBatches:
    """Random cameras per step at the stage's scheduled resolution, with the stage's
    backgrounds (`background`: None leaves each scene its own). Checkpointable."""

    def __init__(self, stage: StageConfig, seed: int, background: DistillationBackground | None = None):
        self.stage = stage
        self.sampler = RandomCameraSampler(stage.cameras, seed)
        self.background = background

    def __call__(self, step: int) -> Batch:
        progress = (step - 1) / max(1, self.stage.steps - 1)
        size = self.stage.size_at(progress)
        cameras = self.sampler(step, size, size)
        background = self.background(step, len(cameras)) if self.background is not None else None
        return Batch(cameras, background)

    def state_dict(self) -> dict:
        state = self.sampler.state_dict()
        if self.background is not None:
            state = {"sampler": state, "background": self.background.state_dict()}
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.background is not None:
            self.background.load_state_dict(state["background"])
            state = state["sampler"]
        self.sampler.load_state_dict(state)


ConditionFn = Callable[[Cameras], Cond]
ExtraLossFn = Callable[[object, RenderOutput, Batch, float], "tuple[torch.Tensor, dict[str, float]]"]


def distillation_loss(stage: StageConfig, scene, objective, condition: ConditionFn, normal_estimator=None,
                      extra_loss: ExtraLossFn | None = None):
    """The stage's loss: score distillation on the render (prior conditioned by
    `condition(cameras)`) + scheduled regularisers (+ normal guidance toward
    `normal_estimator`'s prediction when the stage weights it) + `extra_loss(scene, out,
    batch, progress)` of the pipeline."""
    normal_weight = as_schedule(stage.normal_guidance)

    def loss(out, batch: Batch, step: int, progress: float):
        value, stats = objective(out, condition(batch.cameras), progress, cameras=batch.cameras)
        reg, reg_stats = regularise(stage.regularisers, scene, out, batch.cameras, progress)
        stats.update(reg_stats)
        w = float(normal_weight(progress))
        if w:
            guidance = normal_guidance_loss(out, batch.cameras, normal_estimator)
            stats["normal_guidance"] = float(guidance.detach())
            reg = reg + w * guidance
        if extra_loss is not None:
            extra, extra_stats = extra_loss(scene, out, batch, progress)
            stats.update(extra_stats)
            reg = reg + extra
        stats["resolution"] = batch.cameras.width
        return value + reg, stats

    return loss


def gradient_preview(objective, max_views: int = 4):
    """Previews for a distillation stage: renders on top, the per-pixel magnitude of the
    distillation gradient on the rendered image below (brighter = stronger guidance)."""
    from core.distill.diagnostics import gradient_magnitude_map
    from core.runner import preview_strip

    def preview(out):
        top = preview_strip(out, max_views)
        norms = objective.pgc.pixel_norms.get("image")
        if norms is None or norms.shape[0] < 1:
            return top
        mag = gradient_magnitude_map(norms[:max_views].to(top.device))      # [n,1,H,W]
        bottom = torch.cat(list(mag[:, 0]), dim=1)[..., None].expand(-1, -1, 3)
        return torch.cat([top, bottom.to(top)], dim=0)

    return preview


# float32 per-pixel buffers every renderer keeps for a differentiable render (rgb, alpha,
# depth, normal and their gradients); NeRF adds ~8 per sample along each ray.
PIXEL_FLOATS = 16
NERF_SAMPLE_FLOATS = 8


def available_memory(device: torch.device) -> int:
    """Bytes free for this job: free GPU memory on CUDA, available RAM otherwise."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import os

    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def render_memory_lower_bound(cfg: "DistillationConfig", stage: StageConfig) -> int:
    """Bytes a stage's largest batch of renders needs at least: the per-pixel buffers
    alone (PIXEL_FLOATS float32 per pixel, + NERF_SAMPLE_FLOATS per ray sample for NeRF),
    not counting the scene, the prior or the renderer's working memory."""
    per_pixel = PIXEL_FLOATS + (NERF_SAMPLE_FLOATS * cfg.nerf.n_samples if stage.representation == "nerf" else 0)
    return stage.cameras.batch_size * stage.largest_size ** 2 * per_pixel * 4


def check_memory(cfg: "DistillationConfig", available: int | None = None) -> None:
    """Stop before any work when a stage's renders cannot fit: UserError naming the stage,
    the size, the bytes needed (a lower bound) and the keys to lower. The pipelines
    (text_to_3d.generate, image_to_3d.image_to_3d) call it before loading their prior."""
    device = resolve_device(cfg.device)
    available = available_memory(device) if available is None else available
    for index, stage in enumerate(cfg.stages):
        need = render_memory_lower_bound(cfg, stage)
        if need > available:
            size = stage.largest_size
            raise UserError(
                f"stage '{stage.name}' renders {stage.cameras.batch_size} x {size}x{size} px: at least "
                f"{need / 2**30:.1f} GiB for the image buffers alone, more than the {available / 2**30:.1f} GiB "
                f"{device.type} memory available; lower stages.{index}.cameras.width/height (and "
                f"stages.{index}.resolution) or stages.{index}.cameras.batch_size")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_distillation(cfg: DistillationConfig, out_dir: str | Path, prior, condition: ConditionFn,
                     callbacks: Callbacks | None = None, extra_loss: ExtraLossFn | None = None) -> dict[str, Path]:
    """Run every stage of `cfg` into `out_dir` with `prior` conditioned by `condition(cameras)`
    (resuming finished/interrupted stages from their checkpoints) and export the final
    representation. Returns the written paths."""
    from core.pipelines.handoff import build_scene, export_final

    folder = RunFolder(out_dir)
    save_config(cfg, folder.path / "config.yaml")
    device = resolve_device(cfg.device)
    normal_estimator = None
    if any(as_schedule(s.normal_guidance)(0.0) or as_schedule(s.normal_guidance)(1.0) for s in cfg.stages):
        if not cfg.normal_estimator:
            raise ConfigError("a stage sets normal_guidance but normal_estimator is empty: set "
                             "normal_estimator=builtin:normals or a Marigold normals repo or folder")
        from core.priors.estimators import load_normal_estimator

        normal_estimator = load_normal_estimator(cfg.normal_estimator, device=device.type)
    scene = None
    for index, stage_cfg in enumerate(cfg.stages):
        seed_everything(cfg.seed + index)
        scene = build_scene(cfg, stage_cfg.representation, scene, device)
        background = DistillationBackground(stage_cfg.background, cfg.seed + index).to(device)
        groups = scene.param_groups()
        for group in groups:
            group["lr"] *= stage_cfg.lr_scale
        groups += background.param_groups()
        optimizer = torch.optim.Adam(groups, eps=1e-15)
        if hasattr(scene, "attach_optimizer"):
            scene.attach_optimizer(optimizer)
        objective = build(stage_cfg.objective, prior)
        batches = CameraBatches(stage_cfg, cfg.seed + index,
                                background if stage_cfg.background.kind != "scene" else None)
        stage = Stage(stage_cfg.name, scene, stage_cfg.steps, batches,
                      distillation_loss(stage_cfg, scene, objective, condition, normal_estimator, extra_loss),
                      optimizer, stateful={"cameras": batches, "objective": objective},
                      preview_every=cfg.preview_every, checkpoint_every=cfg.checkpoint_every,
                      preview=gradient_preview(objective), after_step=objective.step)
        try:
            run_stage(stage, folder, callbacks)
        finally:  # the prior is shared by the stages (and by a door's next job): leave it as loaded
            objective.close()
    cams = orbit_cameras(cfg.turntable_frames, cfg.turntable_elevation, cfg.turntable_radius, cfg.turntable_fov,
                         cfg.turntable_size, cfg.turntable_size) if cfg.turntable_frames else None
    return export_final(scene, folder.path, cams, tuple(cfg.export), cfg.export_options)
