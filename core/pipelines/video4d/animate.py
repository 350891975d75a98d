"""`scorelift animate`: DreamScene4D's decompose-recompose pipeline, stage by stage.

    video + instance masks (core/data/video.py)
      -> camera motion from background features (core/data/camera_motion.py)
      -> objects inpainted away; static background Gaussians; cameras refined on them (background.py)
      -> monocular depth of every frame, affine-aligned to the background's rendered depth
      -> each object cropped at its first visible frame and lifted with Zero123 SDS (objects.py)
      -> its object-to-world motion initialised from its masks and the aligned depth (placement.py)
      -> its object-centric deformation fitted to its re-centred crops (motion_stage.py)
      -> every object's per-frame placement refined on the original frames (placement_stage.py)
      -> outputs: per-frame splats, canonical objects + deformation weights, background, cameras,
         re-rendered input frames, an orbit while time plays.

Every learning stage goes through core.runner (checkpoints, metrics.jsonl, previews), and the
estimated cameras are cached in the run folder, so `--resume` continues where a run stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from core.cameras import Cameras, load_nerf_synthetic, look_at, save_nerf_synthetic
from core.config import ConfigError, save_config
from core.io import save_torch, write_png
from core.pipelines.video4d.background import BackgroundSceneConfig, build_background_stage
from core.pipelines.video4d.deformation import DeformationConfig, DeformationField
from core.pipelines.video4d.inpaint import inpaint_objects
from core.pipelines.video4d.motion_stage import MotionConfig, build_motion_stage, object_frames, reference_camera
from core.pipelines.video4d.objects import ObjectLiftConfig, crop_object, lift_object, lift_prior
from core.pipelines.video4d.placement import align_depth, init_object_to_world, occlusion_disagreements
from core.pipelines.video4d.placement_stage import PlacementConfig, build_placement_stage, order_in_depth
from core.pipelines.video4d.scene4d import DynamicObject, Scene4D
from core.runner import Callbacks, RunFolder, run_stage, seed_everything
from renderers.gaussian.ply import GaussianData, load_gaussians, save_gaussians


@dataclass
class AnimateConfig:
    """video / masks: the inputs (`scorelift animate VIDEO --masks DIR`); fov: horizontal field
    of view in degrees (0: core.data.video.DEFAULT_FOV_X_DEG); stride, max_resolution: keep
    CPU runs small; inpaint_checkpoint: a diffusers Stable Diffusion inpainting checkpoint
    (hub id or folder) to remove the objects with (empty: OpenCV's Telea inpainting);
    background: the static background and camera refinement (its `depth` names the monocular
    depth teacher, "builtin:depth" or a Marigold checkpoint); crop_size/fill: the
    object-centric crops; lift: lifting each object (its Zero123 teacher, `lift.prior_model`,
    and reference camera serve the motion stage too); novel_view_*: the orbit video (swing in
    degrees, frame rate)."""

    video: str = ""
    masks: str = ""
    fov: float = 0.0
    stride: int = 1
    max_resolution: int = 128
    seed: int = 0
    inpaint_checkpoint: str = ""
    crop_size: int = 64
    fill: float = 0.75
    background: BackgroundSceneConfig = field(default_factory=BackgroundSceneConfig)
    lift: ObjectLiftConfig = field(default_factory=ObjectLiftConfig)
    deformation: DeformationConfig = field(default_factory=DeformationConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    novel_view_swing: float = 20.0
    novel_view_fps: float = 12.0
    checkpoint_every: int = 100
    preview_every: int = 100

    def __post_init__(self) -> None:
        if self.stride < 1 or self.max_resolution < 16 or self.crop_size < 16:
            raise ValueError("stride >= 1, max_resolution >= 16 and crop_size >= 16 are needed")
        if not 0 < self.fill < 1:
            raise ValueError(f"fill must be in (0,1), got {self.fill}")


def load_clip(cfg: AnimateConfig):
    from core.data.video import load_video_clip

    if not cfg.video or not cfg.masks:
        raise ConfigError("animate needs a video (or a folder of frames) and --masks DIR")
    return load_video_clip(cfg.video, cfg.masks, cfg.stride, cfg.max_resolution, cfg.fov or None)


def estimated_cameras(clip, folder: RunFolder) -> Tensor:
    """[T,4,4] c2w from background features, cached in the run folder."""
    from core.data.camera_motion import estimate_camera_motion

    path = folder.path / "checkpoints" / "cameras_estimated.pt"
    if path.is_file():
        return torch.load(path)["c2w"]
    motion = estimate_camera_motion(clip.frames, clip.masks, clip.K)
    save_torch(path, {"c2w": motion.c2w, "method": motion.method})
    folder.log({"stage": "cameras", "methods": list(motion.method)})
    return motion.c2w


def aligned_depth(frames: Tensor, background_depth: Tensor, masks: Tensor, estimator) -> Tensor:
    """[T,H,W] monocular depth of every frame mapped (scale, shift) onto the background
    scene's rendered depth over background pixels: the scale objects are placed at."""
    out = []
    with torch.no_grad():
        for t in range(len(frames)):
            rel = estimator.predict(frames[t].permute(2, 0, 1)[None].float())[0, 0]
            valid = (masks[t] == 0) & (background_depth[t] > 0)
            a, b = align_depth(rel, background_depth[t], valid)
            out.append((a * rel + b).clamp_min(1e-3))
    return torch.stack(out)


def orbit_path(scene: Scene4D, swing_deg: float, frames_per_step: int = 1) -> tuple[Cameras, list[int]]:
    """Cameras swinging +-swing_deg around the scene's objects while time plays: for frame t,
    the input camera rotated about the vertical through the mean object centre."""
    T = scene.n_frames
    centre = torch.stack([o.T.detach().mean(0) for o in scene.objects]).mean(0) if scene.objects else \
        scene.c2w[0, :3, 3] - scene.c2w[0, :3, 2] * 2.0
    c2ws, times = [], []
    n = T * frames_per_step
    for i in range(n):
        t = min(T - 1, i // frames_per_step)
        angle = math.radians(swing_deg) * math.sin(2 * math.pi * i / max(1, n))
        cam = scene.c2w[t, :3, 3]
        up = scene.c2w[0, :3, 1]
        rel = cam - centre
        # Rodrigues rotation of rel about `up`
        rot = rel * math.cos(angle) + torch.cross(up, rel, dim=0) * math.sin(angle) + up * (up @ rel) * (1 - math.cos(angle))
        c2ws.append(look_at((centre + rot)[None], centre[None], up[None])[0])
        times.append(t)
    base = scene.cameras([0])
    return Cameras(torch.stack(c2ws), base.K.expand(n, 3, 3).clone(), scene.width, scene.height), times


def animate(cfg: AnimateConfig, out_dir: str | Path, callbacks: Callbacks | None = None, prior=None,
            depth_estimator=None) -> dict[str, Path]:
    """Run the whole pipeline into `out_dir` (resuming from its checkpoints); returns written paths."""
    from core.export.video import write_video
    from core.priors import load
    from core.priors.estimators import load_depth_estimator

    clip = load_clip(cfg)
    folder = RunFolder(out_dir)
    save_config(cfg, folder.path / "config.yaml")
    seed_everything(cfg.seed)
    frames, masks, K = clip.frames, clip.masks, clip.K
    T, H, W = masks.shape
    c2w = estimated_cameras(clip, folder)

    # Background and the cameras refined on it.
    inpainted = inpaint_objects(frames, masks, method="diffusers" if cfg.inpaint_checkpoint else "opencv",
                                checkpoint=cfg.inpaint_checkpoint, c2w=c2w, K=K)
    depth_estimator = depth_estimator or load_depth_estimator(cfg.background.depth)
    stage, bg_scene, poses = build_background_stage(inpainted, masks, c2w, K, cfg.background, depth_estimator)
    run_stage(stage, folder, callbacks)
    with torch.no_grad():
        c2w = poses.c2w().detach()
        bg_data = bg_scene.to_data()
        empty = Scene4D(bg_data, [], c2w, K, W, H)
        bg_depth = torch.stack([empty.render(t)["depth"][0, ..., 0] for t in range(T)])
    depth = aligned_depth(frames, bg_depth, masks, depth_estimator)

    # Objects: lift, place, deform.
    prior = prior if prior is not None else load(lift_prior(cfg.lift))
    ref_cam = reference_camera(cfg.crop_size, cfg.lift.elevation_deg, cfg.lift.radius, cfg.lift.fov_deg)
    R_ref = ref_cam.c2w[0, :3, :3]
    objects = []
    for index, oid in enumerate(clip.object_ids):
        t0 = clip.first_visible[oid]
        crop = crop_object(frames[t0], masks[t0] == oid, cfg.crop_size, cfg.fill)
        canonical = lift_object(crop, folder.path / "objects" / str(oid) / "lift", cfg.lift, prior=prior,
                                callbacks=callbacks).to_data()
        init = init_object_to_world(masks == oid, K, c2w, depth, cfg.fill, cfg.lift.radius, cfg.lift.fov_deg,
                                    cfg.lift.elevation_deg, centre="box")  # the crops are centred on the box
        torch.manual_seed(cfg.seed + 100 + index)
        obj = DynamicObject(oid, canonical, DeformationField(cfg.deformation), R_ref, init.T, init.log_scale,
                            init.visible)
        data = object_frames(frames, masks, oid, cfg.crop_size, cfg.fill)
        stage = build_motion_stage(f"motion_{oid}", obj, data, T, cfg.motion, ref_cam, cfg.seed + index, prior,
                                   cfg.checkpoint_every, cfg.preview_every)
        try:
            run_stage(stage, folder, callbacks)
        finally:
            if "objective" in stage.stateful:
                stage.stateful["objective"].close()
        objects.append(obj)

    scene = Scene4D(bg_data, objects, c2w, K, W, H)
    if not folder.checkpoint("placement").is_file():    # on resume the placement checkpoint holds the result
        folder.log({"stage": "occlusion_order", **order_in_depth(scene, masks)})
    if cfg.placement.steps:
        run_stage(build_placement_stage(scene, frames, masks, cfg.placement, cfg.seed, cfg.checkpoint_every),
                  folder, callbacks)
    for p in scene.parameters():
        p.requires_grad_(False)
    # The refinement's depth and smoothness terms can pull an object back through another:
    # restore the masks' order (pictures unchanged), then check what remains.
    folder.log({"stage": "occlusion_order_final", **order_in_depth(scene, masks)})
    wrong = check_occlusion_order(scene, masks)
    folder.log({"stage": "occlusion_check", "disagreements": len(wrong),
                "frames": sorted({d.t for d in wrong})})
    return write_outputs(scene, folder.path, clip.names, cfg, write_video)


@torch.no_grad()
def check_occlusion_order(scene: Scene4D, masks: Tensor):
    """The final scene's depth order against the masks (placement.occlusion_disagreements):
    each object rendered alone per frame gives its coverage (alpha > 0.5) and depth."""
    coverage, depth = {}, {}
    for obj in scene.objects:
        renders = [scene.render(t, include_background=False, objects=[obj.object_id]) if t >= obj.first_frame else None
                   for t in range(scene.n_frames)]
        blank = torch.zeros(scene.height, scene.width)
        coverage[obj.object_id] = torch.stack([r["alpha"][0, ..., 0] > 0.5 if r else blank.bool() for r in renders])
        depth[obj.object_id] = torch.stack([r["depth"][0, ..., 0] if r else blank for r in renders])
    return occlusion_disagreements(masks, coverage, depth)


def write_outputs(scene: Scene4D, out: Path, names: list[str], cfg: AnimateConfig, write_video) -> dict[str, Path]:
    """The run folder's layout (docs/video4d.md)."""
    paths: dict[str, Path] = {}
    with torch.no_grad():
        if scene.background is not None:
            paths["background"] = save_gaussians(out / "background.ply", scene.background.to_data())
        for obj in scene.objects:
            d = out / "objects" / str(obj.object_id)
            data = GaussianData(obj.canonical_means, obj.canonical_quats, obj.canonical_log_scales,
                                torch.logit(obj.canonical_opacities.clamp(1e-6, 1 - 1e-6)),
                                ((obj.canonical_colors - 0.5) / 0.28209479177387814)[:, None], torch.zeros(len(obj), 0, 3))
            save_gaussians(d / "canonical.ply", data)
            save_torch(d / "deformation.pt", {
                "deformation": obj.deformation.state_dict(), "deformation_config": vars(cfg.deformation).copy(),
                "ref_rotation": obj.ref_rotation, "T": obj.T.detach(), "log_scale": obj.log_scale.detach(),
                "visible": obj.visible})
        for t in range(scene.n_frames):
            save_gaussians(out / "frames" / f"{t:04d}.ply", scene.gaussians(t).to_data())
        paths["frames"] = out / "frames"
        save_nerf_synthetic(out / "cameras.json", scene.cameras(), list(names))
        paths["cameras"] = out / "cameras.json"
        for t in range(scene.n_frames):
            write_png(out / "reconstruction" / f"frame_{t:04d}.png", scene.render(t)["rgb"][0])
        paths["reconstruction"] = out / "reconstruction"
        cams, times = orbit_path(scene, cfg.novel_view_swing, 2)
        video = [scene.render(t, cams[i])["rgb"][0] for i, t in enumerate(times)]
        paths["novel_view"] = write_video(out / "novel_view.mp4", video, fps=cfg.novel_view_fps)
    return paths


def load_scene4d(run: str | Path) -> Scene4D:
    """A finished animate run folder as a Scene4D (for `scorelift track` and rendering)."""
    from core.errors import MissingFileError

    run = Path(run)
    for need in ("cameras.json", "background.ply"):
        if not (run / need).is_file():
            raise MissingFileError(f"{run} is not a finished animate run: {need} is missing")
    cams, _ = load_nerf_synthetic(run / "cameras.json")
    K = cams.K[0].clone()
    K[:2, 2] -= 0.5
    objects = []
    for d in sorted((run / "objects").glob("*"), key=lambda p: int(p.name)) if (run / "objects").is_dir() else []:
        state = torch.load(d / "deformation.pt")
        field_ = DeformationField(DeformationConfig(**state["deformation_config"]))
        field_.load_state_dict(state["deformation"])
        objects.append(DynamicObject(int(d.name), load_gaussians(d / "canonical.ply"), field_, state["ref_rotation"],
                                     state["T"], state["log_scale"], state["visible"]))
    scene = Scene4D(load_gaussians(run / "background.ply"), objects, cams.c2w, K, cams.width, cams.height)
    for p in scene.parameters():
        p.requires_grad_(False)
    return scene


