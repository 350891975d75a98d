"""The static background of a video as 3D Gaussians, with the cameras refined on it.

DreamScene4D (Chu et al. 2024, Sec. 3.2) fits a static Gaussian scene to the inpainted
frames and refines the camera poses of the video with the same rendering loss. Here:

Initialisation: Gaussians unprojected from a few keyframes with monocular depth mapped to
the cameras' scale (`background_points.py`, derived there), one per `pixel_stride`-th
pixel, sized `footprint` times their sample spacing, nearly opaque.

Cameras (`PoseRefinement`). Each frame t > 0 gets a correction in its own camera axes,
    c2w_t' = c2w_t [ Exp(omega_t)  delta_t ; 0 1 ],
omega_t in so(3) (axis-angle, Rodrigues: Exp(w) = I + sin(th)/th [w]_x + (1 - cos th)/th^2 [w]_x^2,
th = |w|) and delta_t a translation; frame 0 has none (it defines the world). Corrections
in camera axes turn a camera about its own centre, which the photometric loss measures
best. The renderer is differentiable in the view matrices, so gradients reach omega, delta.

Loss (per sampled frame, over pixels p):
    L = sum_p w_p [ l1_weight |I(p) - J(p)| + ssim_weight (1 - SSIM(p)) / 2 ] / sum_p w_p,
(3DGS's loss, Kerbl et al. 2023 eq. 7, restricted to pixels; |.| and SSIM averaged over
the colour channels, SSIM with a 7 px window)
w_p = 1 on background pixels, `hole_weight` inside the dilated object masks (there the
target J is the inpainted frame: it only keeps what no frame shows from drifting; what
another frame shows is fitted there, where it is real). The scene is fitted alone for
`pose_start` steps before the poses move (a half-fitted scene pulls cameras anywhere);
then their learning rates decay exponentially to `pose_lr_final` times the initial ones at
the last step (as BARF / NeRF-- anneal theirs: Adam's steps are about lr whatever the
gradient, so a constant rate leaves the cameras jittering by that much).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.cameras import Cameras
from core.pipelines.video4d.background_points import initial_points, keyframe_indices, metric_depth
from core.pipelines.video4d.inpaint import dilated_object_mask
from core.runner import Batch, Stage
from renderers.gaussian.densify import DensifyConfig
from renderers.gaussian.scene import GaussianConfig, GaussianScene

def background_gaussians() -> GaussianConfig:
    # Photometric fitting of a surface seen from the front: view-independent colour, nearly
    # opaque Gaussians from the start (full coverage). No densification: the keyframes give one
    # Gaussian per sample already, and at 64-128 px on CPU the reconstruct preset's
    # splitting (tried) lowered the background PSNR of runs of a few hundred steps.
    return GaussianConfig(
        sh_degree=0, init="points", init_opacity=0.9, lr_means=5e-4, lr_scales=2e-2, lr_opacities=0.1,
        lr_sh0=2.5e-2, background=(0.0, 0.0, 0.0), render_normals=False, densify=DensifyConfig(strategy="none"),
    )


@dataclass
class BackgroundSceneConfig:
    """steps: optimisation steps; batch_size: frames per step; keyframes: frames unprojected
    to initialise; pixel_stride: every n-th pixel of them; footprint: initial standard
    deviation of a Gaussian in units of the sample spacing; dilate: pixels the object masks
    grow by in the loss; hole_weight: weight of the inpainted pixels; l1_weight,
    ssim_weight: the loss (module docstring); refine_cameras: learn pose corrections;
    pose_start: steps before they move; lr_rotation (rad), lr_translation (units of the
    median depth): their initial Adam rates, decayed to pose_lr_final of that at the end; depth: the monocular depth estimator; min_triangulated: points
    needed to fit its scale; renderer: the Gaussians (mean learning rate scaled by the
    median depth of the initial points)."""

    steps: int = 300
    seed: int = 0
    batch_size: int = 2
    keyframes: int = 4
    pixel_stride: int = 2
    footprint: float = 0.5
    dilate: int = 2
    hole_weight: float = 0.1
    l1_weight: float = 0.8
    ssim_weight: float = 0.2
    refine_cameras: bool = True
    pose_start: int = 50
    lr_rotation: float = 1e-3
    lr_translation: float = 1e-3
    pose_lr_final: float = 0.1
    depth: str = "builtin:depth"
    min_triangulated: int = 20
    preview_every: int = 100
    checkpoint_every: int = 100
    renderer: GaussianConfig = field(default_factory=background_gaussians)


def so3_exp(omega: Tensor) -> Tensor:
    """Rotation matrices [...,3,3] from axis-angle vectors omega [...,3] (Rodrigues), with
    the Taylor series below 1e-4 rad so the gradient at 0 is exact and finite."""
    theta2 = (omega * omega).sum(-1, keepdim=True)[..., None]           # [...,1,1]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2_safe)
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    hat = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*omega.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(hat)
    return eye + a * hat + b * (hat @ hat)


class PoseRefinement(nn.Module):
    """Per-frame pose corrections (module docstring) of OpenGL c2w [T,4,4]; frame 0 fixed."""

    def __init__(self, c2w: Tensor):
        super().__init__()
        self.register_buffer("initial", c2w.detach().float().clone())
        T = c2w.shape[0]
        self.rotation = nn.Parameter(torch.zeros(T, 3))      # omega_t, radians, camera axes
        self.translation = nn.Parameter(torch.zeros(T, 3))   # delta_t, world units, camera axes
        free = torch.ones(T, 1)
        free[0] = 0.0
        self.register_buffer("free", free)

    def c2w(self) -> Tensor:
        """[T,4,4] refined OpenGL c2w, differentiable in the corrections; c2w()[0] = the initial one."""
        T = self.initial.shape[0]
        delta = torch.eye(4, device=self.initial.device).repeat(T, 1, 1)
        delta[:, :3, :3] = so3_exp(self.rotation * self.free)
        delta[:, :3, 3] = self.translation * self.free
        return self.initial @ delta

    def param_groups(self, lr_rotation: float, lr_translation: float) -> list[dict]:
        return [{"name": "pose_rotation", "params": [self.rotation], "lr": lr_rotation},
                {"name": "pose_translation", "params": [self.translation], "lr": lr_translation}]


def rotation_error_deg(c2w_a: Tensor, c2w_b: Tensor) -> Tensor:
    """[T] angle in degrees between the rotations relative to frame 0 of two camera paths
    c2w_a, c2w_b [T,4,4] (each in its own world: only R_0^T R_t is compared)."""
    rel_a = c2w_a[0, :3, :3].T @ c2w_a[:, :3, :3]
    rel_b = c2w_b[0, :3, :3].T @ c2w_b[:, :3, :3]
    diff = rel_a.transpose(-1, -2) @ rel_b
    cos = ((diff.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def camera_k(K: Tensor, batch: int) -> Tensor:
    """OpenCV K [3,3] (pixel centres at integers) -> `Cameras` K [batch,3,3] (centres at +0.5)."""
    K = K.detach().float().clone()
    K[0, 2] += 0.5
    K[1, 2] += 0.5
    return K.expand(batch, 3, 3).clone()


# --- the stage ----------------------------------------------------------------------------------

class FrameSampler:
    """Each step: `batch_size` random frames from a seeded generator (checkpointable), their
    cameras from the pose refinement (detached before `pose_start` or when not refining)."""

    def __init__(self, frames: Tensor, weights: Tensor, poses: PoseRefinement, K: Tensor, cfg: BackgroundSceneConfig):
        self.frames, self.weights, self.poses, self.K, self.cfg = frames, weights, poses, K, cfg
        self.batch_size = min(cfg.batch_size, frames.shape[0])
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self.pose_lrs: dict[str, float] = {}

    def schedule(self, optimizer: torch.optim.Optimizer) -> None:
        """Let the sampler set the pose groups' learning rates each step (their initial values now)."""
        self.optimizer = optimizer
        self.pose_lrs = {g["name"]: g["lr"] for g in optimizer.param_groups if g.get("name", "").startswith("pose_")}

    def __call__(self, step: int) -> Batch:
        idx = torch.randperm(self.frames.shape[0], generator=self.generator)[: self.batch_size]
        c2w = self.poses.c2w()[idx]
        if not self.cfg.refine_cameras or step <= self.cfg.pose_start:
            c2w = c2w.detach()
        elif self.optimizer is not None:  # a function of the step alone: resumed runs agree
            span = max(1, self.cfg.steps - self.cfg.pose_start - 1)
            decay = self.cfg.pose_lr_final ** ((step - self.cfg.pose_start - 1) / span)
            for group in self.optimizer.param_groups:
                if group.get("name") in self.pose_lrs:
                    group["lr"] = self.pose_lrs[group["name"]] * decay
        T, H, W, _ = self.frames.shape
        cameras = Cameras(c2w, camera_k(self.K, len(idx)), W, H)
        return Batch(cameras, background=torch.zeros(3),
                     data={"rgb": self.frames[idx], "weight": self.weights[idx], "frames": idx})

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def background_loss(cfg: BackgroundSceneConfig, scene: GaussianScene):
    """The weighted L1 + D-SSIM of the module docstring, as a runner loss."""
    from kornia.metrics import ssim

    def loss(out, batch: Batch, step: int, progress: float):
        target = batch.data["rgb"].to(out.rgb)
        weight = batch.data["weight"].to(out.rgb)[..., None]        # [B,H,W,1]
        total_weight = weight.sum().clamp_min(1e-8)
        l1 = ((out.rgb - target).abs().mean(-1, keepdim=True) * weight).sum() / total_weight
        total = cfg.l1_weight * l1
        stats = {"l1": l1.item(), "n_gaussians": len(scene)}
        if cfg.ssim_weight > 0:
            ssim_map = ssim(out.chw(), target.permute(0, 3, 1, 2), window_size=7)      # [B,3,H,W]
            dssim = (((1 - ssim_map) / 2).mean(1)[..., None] * weight).sum() / total_weight
            total = total + cfg.ssim_weight * dssim
            stats["dssim"] = dssim.item()
        for value in scene.regularisers().values():
            total = total + value
        return total, stats

    return loss


def build_background_stage(frames_inpainted: Tensor, masks: Tensor, c2w: Tensor, K: Tensor,
                           cfg: BackgroundSceneConfig | None = None, depth_estimator=None,
                           name: str = "background") -> tuple[Stage, GaussianScene, PoseRefinement]:
    """The background stage of video-to-4D, to run with `core.runner.run_stage`.

    frames_inpainted [T,H,W,3] in [0,1] (`inpaint_objects`); masks [T,H,W] int object ids (0 =
    background); c2w [T,4,4] OpenGL camera-to-world (`estimate_camera_motion`, frame 0 the
    world); K [3,3] OpenCV intrinsics (centre of the top-left pixel at (0, 0)).
    depth_estimator: a `DepthEstimator` or a module images [B,3,H,W] -> [B,1,H,W] (None:
    `load_depth_estimator(cfg.depth)`). Returns the stage, its scene and the pose refinement
    (its `c2w()` gives the refined cameras after the run); both are restored on resume.
    """
    from core.priors.estimators import load_depth_estimator

    cfg = cfg or BackgroundSceneConfig()
    frames_inpainted = frames_inpainted.detach().float().cpu().clamp(0, 1)
    masks, c2w, K = masks.cpu(), c2w.detach().float().cpu(), K.detach().float().cpu()
    T, H, W, _ = frames_inpainted.shape
    holes = dilated_object_mask(masks, cfg.dilate)
    estimator = load_depth_estimator(depth_estimator if depth_estimator is not None else cfg.depth)
    keyframes = keyframe_indices(T, cfg.keyframes)
    with torch.no_grad():
        relative = estimator.predict(frames_inpainted[keyframes].permute(0, 3, 1, 2)).float().cpu()[:, 0]
    if relative.shape[-2:] != (H, W):
        relative = F.interpolate(relative[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    depths = {t: metric_depth(relative[i], frames_inpainted, holes, c2w, K, t, cfg.min_triangulated)[0]
              for i, t in enumerate(keyframes)}
    points, colours, spacings = initial_points(frames_inpainted, holes, c2w, K, depths, cfg.pixel_stride)
    # The scene's size is the median depth: densification's scale thresholds and the means' rate follow it.
    extent = float(torch.cat([d.flatten() for d in depths.values()]).median())
    gaussians = dataclasses.replace(cfg.renderer, lr_means=cfg.renderer.lr_means * extent,
                                    densify=dataclasses.replace(cfg.renderer.densify, scene_scale=extent))
    scene = GaussianScene(gaussians, points=points, colors=colours)
    with torch.no_grad():  # sharp from the start: each Gaussian about its share of a pixel footprint
        scene.params["scales"].copy_((cfg.footprint * spacings).log()[:, None].expand(-1, 3))
    poses = PoseRefinement(c2w)
    groups = scene.param_groups()
    if cfg.refine_cameras:
        groups += poses.param_groups(cfg.lr_rotation, cfg.lr_translation * extent)
    optimizer = torch.optim.Adam(groups, eps=1e-15)
    scene.attach_optimizer(optimizer)
    weights = torch.where(holes, torch.tensor(cfg.hole_weight), torch.tensor(1.0))
    sampler = FrameSampler(frames_inpainted, weights, poses, K, cfg)
    sampler.schedule(optimizer)
    stage = Stage(name, scene, cfg.steps, sampler, background_loss(cfg, scene), optimizer,
                  stateful={"views": sampler, "poses": poses}, preview_every=cfg.preview_every,
                  checkpoint_every=cfg.checkpoint_every)
    return stage, scene, poses


@torch.no_grad()
def background_psnr(scene: GaussianScene, c2w: Tensor, K: Tensor, frames: Tensor, masks: Tensor,
                    dilate: int = 2) -> float:
    """PSNR (dB) of the scene rendered at c2w [T,4,4] against frames [T,H,W,3] in [0,1] over
    the background pixels (outside the object masks grown by `dilate`), all frames pooled."""
    T, H, W, _ = frames.shape
    keep = ~dilated_object_mask(masks.cpu(), dilate)
    squared, count = 0.0, 0
    for t in range(T):
        out = scene.render(Cameras(c2w[t:t + 1].detach().float(), camera_k(K, 1), W, H), torch.zeros(3))
        error = (out.rgb[0].cpu() - frames[t].cpu()) ** 2
        squared += float(error[keep[t]].sum())
        count += int(keep[t].sum()) * 3
    return 10 * math.log10(1.0 / max(squared / max(count, 1), 1e-12))
