"""Object-centric motion: fitting an object's deformation field to its re-centred crops.

DreamScene4D factorises an object's motion into object-centric deformation (learnt here) and
object-to-world motion (`placement_stage.py`). Every frame t where the object is visible is
cropped and re-centred the way its first frame was for lifting (same fill, so translation and
apparent size are removed), and the deformed canonical Gaussians D(x, tau_t), rendered by the
reference camera, are fitted to that crop. Losses per step (weights in `MotionConfig`):

- RGB and mask: DreamScene4D's "balanced" MSE (the mean over the object's pixels plus the mean
  over the rest) between the render (over white) and the crop, and between the rendered alpha
  and the crop's mask, on the pixels another object does not cover in the frame (an occluder
  says nothing about what is behind it);
- optical flow: the displacement of each Gaussian's projection between tau_t and tau_{t+1},
  splatted with the same weights as colour, against OpenCV DIS flow between the two crops
  where the forward-backward check passes and the crop shows the object, plus zero flow off
  the object (`flow.py`);
- chained flow (ours, for CPU step counts): the frame-to-frame flows composed from the first
  crop, p_f = p_{f-1} + flow_{f-1}(p_{f-1}) for the pixels whose chain passes every
  forward-backward check, compared with the splatted displacement of the Gaussians from the
  first frame's time to frame f's, seen from the first frame. The frame-to-frame term
  constrains only the time derivative of the field, which a HexPlane field learns far too
  slowly at a few hundred steps (measured: a field supervised with a constant 2.5 px/frame
  velocity stayed at 2.5 px error after 150 steps, while supervising displacements from a
  fixed time brought it under 1 px);
- rigidity and local scale over the k nearest canonical neighbours, and the mean absolute
  log-scale change (`neighbours.py`);
- the deformation grid's own smoothness terms (total variation, time smoothness);
- Zero123 SDS every `sds_every` steps on a random novel view of the deformed object,
  conditioned on the crop of the same frame (the object as it looks at tau_t).

The default weights are DreamScene4D's (main_4d.py: rgb 1e4, mask 1e3, flow 1e4, scale change
1e3, local scale 5e4, rigidity 5e4, Zero123 1) divided by its RGB weight; its linear ramp of
every term but SDS (step_ratio) is left out. Rigidity here compares each frame with the
canonical Gaussians (Luiten et al.'s eq. 3 with the canonical set as reference) rather than
with the previous frame: one frame is rendered per step on CPU. Colour and opacity are frozen:
only the deformation field learns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.cameras import Cameras, spherical_cameras
from core.distill import ObjectiveConfig, build
from core.distill.schedules import ScheduleConfig
from core.pipelines.video4d.flow import dis_flow, flow_loss, forward_backward_valid
from core.pipelines.video4d.neighbours import knn, local_scale_loss, neighbour_weights, relative_rotation, rigidity_loss
from core.pipelines.video4d.objects import crop_image, crop_object
from core.pipelines.video4d.scene4d import DynamicObject
from core.pipelines.video4d.tracks import project
from core.runner import Batch, Stage
from renderers.base import RenderOutput
from renderers.gaussian.rasterize import rasterize


@dataclass
class MotionConfig:
    """steps: optimisation steps per object; rgb/mask/flow/chain/rigidity/scale/sds weights;
    grid_weight: the HexPlane grid's own regulariser (4DGaussians' TV and time smoothness; 0 as
    DreamScene4D's main_4d.py: at these loss scales it held the time planes at their initial 1);
    knn: neighbours of the rigidity terms; sds_every: steps between SDS views (0: none);
    sds_elevation_range / sds_azimuth_range: novel views around the reference (degrees)."""

    steps: int = 300
    lr_scale: float = 1.0
    rgb_weight: float = 1.0
    mask_weight: float = 0.1
    flow_weight: float = 1.0
    chain_weight: float = 1.0
    rigidity_weight: float = 5.0
    scale_weight: float = 5.0
    scale_change_weight: float = 0.1
    grid_weight: float = 0.0
    knn: int = 16
    sds_every: int = 4
    sds_weight: float = 1e-4
    sds_elevation_range: tuple[float, float] = (-10.0, 30.0)
    sds_azimuth_range: tuple[float, float] = (-180.0, 180.0)
    objective: ObjectiveConfig = field(default_factory=lambda: ObjectiveConfig(
        kind="sds", guidance_scale=5.0, target_space="image",
        schedule=ScheduleConfig(t_min=0.02, t_max=0.5)))

    def __post_init__(self) -> None:
        if self.steps < 1 or self.knn < 1 or self.sds_every < 0:
            raise ValueError("motion.steps and motion.knn must be at least 1, motion.sds_every at least 0")


@dataclass
class ObjectFrames:
    """An object's re-centred crops: frames [F] (indices into the video), rgba [F,S,S,4] in
    [0,1], free [F,S,S,1] (1 where no other object covers the pixel), flow_next [F,S,S,2]
    (crop f -> crop f+1 in crop pixels) and flow_valid [F,S,S,1] (0 for the last frame and
    where frame f+1 is not the next video frame); chain [F,S,S,2]: where each pixel of the
    first crop is in crop f (displacement), chain_valid [F,S,S,1] (`chain_flows`)."""

    frames: list[int]
    rgba: Tensor
    free: Tensor
    flow_next: Tensor
    flow_valid: Tensor
    chain: Tensor
    chain_valid: Tensor


def chain_flows(flow_next: Tensor, flow_valid: Tensor, alpha0: Tensor) -> tuple[Tensor, Tensor]:
    """Compose frame-to-frame flows [F,S,S,2] (valid [F,S,S,1]) from the first frame's object
    pixels (alpha0 [S,S] > 0.5): displacement [F,S,S,2] of each first-frame pixel at frame f
    and its validity [F,S,S,1] (every step's forward-backward check passed, inside the crop)."""
    F_, S = flow_next.shape[0], flow_next.shape[1]
    ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij")
    grid = torch.stack([xs, ys], -1)
    disp = torch.zeros(F_, S, S, 2)
    ok = torch.zeros(F_, S, S, 1)
    ok[0, ..., 0] = (alpha0 > 0.5).float()
    for f in range(F_ - 1):
        pos = grid + disp[f]
        norm = (pos + 0.5) / S * 2 - 1                      # pixel centres at integers
        sample = F.grid_sample(torch.cat([flow_next[f], flow_valid[f]], -1).permute(2, 0, 1)[None], norm[None],
                               mode="bilinear", padding_mode="zeros", align_corners=False)[0].permute(1, 2, 0)
        disp[f + 1] = disp[f] + sample[..., :2]
        inside = ((pos >= 0) & (pos <= S - 1)).all(-1, keepdim=True).float()
        ok[f + 1] = ok[f] * (sample[..., 2:] > 0.99).float() * inside
    return disp, ok


def object_frames(frames: Tensor, masks: Tensor, object_id: int, size: int, fill: float) -> ObjectFrames:
    """Crops of every frame where `object_id` is visible (frames [T,H,W,3], masks [T,H,W]),
    cut as its lift's crop was (objects.crop_object); other objects' pixels cut by the same box."""
    kept, rgba, free = [], [], []
    for t in range(len(frames)):
        mine = masks[t] == object_id
        if not mine.any():
            continue
        crop = crop_object(frames[t], mine, size, fill)
        others = ((masks[t] != object_id) & (masks[t] != 0)).float()[..., None]
        kept.append(t)
        rgba.append(crop.rgba[0].permute(1, 2, 0))
        free.append((crop_image(others, crop.box, size) < 0.5).float())
    rgba_t = torch.stack(rgba)
    flows, valid = torch.zeros(len(kept), size, size, 2), torch.zeros(len(kept), size, size, 1)
    white = rgba_t[..., :3] * rgba_t[..., 3:] + (1 - rgba_t[..., 3:])
    for i in range(len(kept) - 1):
        if kept[i + 1] != kept[i] + 1:
            continue
        fw, bw = dis_flow(white[i], white[i + 1]), dis_flow(white[i + 1], white[i])
        ok = forward_backward_valid(fw, bw) & (rgba_t[i, ..., 3] > 0.5) & (free[i][..., 0] > 0.5)
        flows[i], valid[i, ..., 0] = fw, ok.float()
    chain, chain_valid = chain_flows(flows, valid, rgba_t[0, ..., 3])
    return ObjectFrames(kept, rgba_t, torch.stack(free), flows, valid, chain, chain_valid)


class TimedCameras(Cameras):
    """Cameras that also say at which normalised time each view sees the scene: tau [B], and
    tau_next [B] (the time the splatted flow points to; nan: no flow)."""

    def __init__(self, cameras: Cameras, tau: Tensor, tau_next: Tensor):
        super().__init__(cameras.c2w, cameras.K, cameras.width, cameras.height)
        self.tau, self.tau_next = tau, tau_next


def reference_camera(size: int, elevation: float, radius: float, fov: float) -> Cameras:
    one = torch.ones(1)
    return spherical_cameras(one * elevation, one * 0.0, one * radius, one * fov, size, size)


class ObjectCentricModel(nn.Module):
    """The Scene the runner trains in this stage: the object's deformed canonical Gaussians
    rendered by TimedCameras; extras["flow"] [B,H,W,2] is the splatted 2D displacement to
    tau_next, extras["deformed"] the (means, quats, log_scales) of the first view."""

    def __init__(self, obj: DynamicObject):
        super().__init__()
        self.obj = obj

    def param_groups(self) -> list[dict]:
        return self.obj.deformation.param_groups()

    def update(self, step: int, out: RenderOutput | None = None) -> dict:
        return {}

    def render(self, cameras: TimedCameras, background=None) -> RenderOutput:
        rgbs, alphas, depths, flows, deformed = [], [], [], [], None
        colors = self.obj.canonical_colors
        opac = self.obj.canonical_opacities
        for i in range(len(cameras)):
            cam = cameras[i]
            means, quats, log_scales = self.obj.object_space(float(cameras.tau[i]))
            if deformed is None:
                deformed = (means, quats, log_scales)
            feats = [colors]
            has_flow = not math.isnan(float(cameras.tau_next[i]))
            if has_flow:
                nxt = self.obj.object_space(float(cameras.tau_next[i]))[0]
                # displacement in pixels (the Cameras' own K: differences do not see the +0.5)
                feats.append(project(nxt, cam.c2w[0], cam.K[0])[0] - project(means, cam.c2w[0], cam.K[0])[0])
            out, alpha, _ = rasterize(means, quats, torch.exp(log_scales), opac, torch.cat(feats, -1),
                                      cam.viewmats(), cam.K, cam.width, cam.height, render_mode="RGB+ED")
            rgbs.append(out[..., :3] + (1 - alpha))
            alphas.append(alpha)
            depths.append(out[..., -1:])
            flows.append(out[..., 3:5] if has_flow else torch.zeros_like(out[..., :2]))
        return RenderOutput(rgb=torch.cat(rgbs).clamp(0, 1), alpha=torch.cat(alphas), depth=torch.cat(depths),
                            extras={"flow": torch.cat(flows), "deformed": deformed})


class FrameSampler:
    """Random visible frame per step (and a random novel view every `sds_every` steps); checkpointable."""

    def __init__(self, data: ObjectFrames, n_video_frames: int, cfg: MotionConfig, ref: Cameras, seed: int):
        self.data, self.T, self.cfg, self.ref = data, n_video_frames, cfg, ref
        self.generator = torch.Generator().manual_seed(seed)

    def tau(self, t: int) -> float:
        return t / max(1, self.T - 1)

    def __call__(self, step: int) -> Batch:
        g = self.generator
        i = int(torch.randint(len(self.data.frames), (1,), generator=g))
        t = self.data.frames[i]
        has_next = bool(self.data.flow_valid[i].any())
        tau = [self.tau(t)]
        tau_next = [self.tau(self.data.frames[i + 1]) if has_next else math.nan]
        cams = self.ref
        chain = self.cfg.chain_weight > 0 and i > 0 and bool(self.data.chain_valid[i].any())
        if chain:   # the first frame's view, its splatted displacement pointing at frame t
            cams = Cameras(torch.cat([cams.c2w, self.ref.c2w]), torch.cat([cams.K, self.ref.K]), cams.width, cams.height)
            tau.append(self.tau(self.data.frames[0]))
            tau_next.append(self.tau(t))
        novel = None
        if self.cfg.sds_every and step % self.cfg.sds_every == 0:
            el_lo, el_hi = self.cfg.sds_elevation_range
            az_lo, az_hi = self.cfg.sds_azimuth_range
            el = el_lo + (el_hi - el_lo) * torch.rand(1, generator=g)
            az = az_lo + (az_hi - az_lo) * torch.rand(1, generator=g)
            radius = self.ref.spherical()[2]
            fov = torch.rad2deg(2 * torch.atan(self.ref.height / 2 / self.ref.K[:, 1, 1]))
            novel = spherical_cameras(el, az, radius, fov, self.ref.width, self.ref.height)
            cams = Cameras(torch.cat([cams.c2w, novel.c2w]), torch.cat([cams.K, novel.K]), cams.width, cams.height)
            tau.append(self.tau(t))
            tau_next.append(math.nan)
        timed = TimedCameras(cams, torch.tensor(tau), torch.tensor(tau_next))
        return Batch(timed, None, {"index": i, "novel": novel, "chain": chain})

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def motion_loss(cfg: MotionConfig, obj: DynamicObject, data: ObjectFrames, prior=None, objective=None):
    """The stage loss (module docstring)."""
    canonical = obj.canonical_means
    idx, dist = knn(canonical, min(cfg.knn, len(canonical) - 1))
    weights = neighbour_weights(dist)

    def loss(out: RenderOutput, batch: Batch, step: int, progress: float):
        i = batch.data["index"]
        target = data.rgba[i]
        free = data.free[i]
        white = target[..., :3] * target[..., 3:] + (1 - target[..., 3:])
        inside = target[..., 3:] * free
        rgb_mse = balanced_mse(out.rgb[0], white, inside, free)
        mask_mse = balanced_mse(out.alpha[0], target[..., 3:], inside, free)
        total = cfg.rgb_weight * rgb_mse + cfg.mask_weight * mask_mse
        stats = {"rgb_mse": float(rgb_mse.detach()), "mask_mse": float(mask_mse.detach())}
        if cfg.flow_weight and data.flow_valid[i].any():
            f = flow_loss(out.extras["flow"][0], out.alpha[0], data.flow_next[i], data.flow_valid[i][..., 0] > 0.5,
                          outside=(target[..., 3] < 0.5) & (free[..., 0] > 0.5))
            total = total + cfg.flow_weight * f
            stats["flow"] = float(f.detach())
        if batch.data["chain"]:
            c = flow_loss(out.extras["flow"][1], out.alpha[1], data.chain[i], data.chain_valid[i][..., 0] > 0.5)
            total = total + cfg.chain_weight * c
            stats["chain"] = float(c.detach())
        means, quats, log_scales = out.extras["deformed"]
        if cfg.rigidity_weight:
            r = rigidity_loss(canonical, means, relative_rotation(quats, obj.canonical_quats), idx, weights)
            total = total + cfg.rigidity_weight * r
            stats["rigidity"] = float(r.detach())
        change = log_scales - obj.canonical_log_scales
        if cfg.scale_weight:
            s = local_scale_loss(change, idx, weights)
            total = total + cfg.scale_weight * s
            stats["local_scale"] = float(s.detach())
        if cfg.scale_change_weight:
            total = total + cfg.scale_change_weight * change.abs().mean()
        if cfg.grid_weight:
            g = obj.deformation.regulariser()
            total = total + cfg.grid_weight * g
            stats["grid"] = float(g.detach())
        novel = batch.data["novel"]
        if novel is not None and objective is not None and cfg.sds_weight:
            reference = white.permute(2, 0, 1)[None]
            sds, sds_stats = objective(out.chw()[-1:], prior.condition(reference, "", novel), progress, cameras=novel)
            total = total + cfg.sds_weight * sds
            stats["sds"] = float(sds.detach())
        return total, stats

    return loss


def balanced_mse(pred: Tensor, target: Tensor, inside: Tensor, considered: Tensor) -> Tensor:
    """DreamScene4D's balanced loss: mean squared error over `inside` pixels plus over the other
    `considered` ones (pred/target [H,W,C], inside/considered [H,W,1] in {0,1})."""
    err = (pred - target).square().mean(-1, keepdim=True)
    outside = considered * (1 - inside)
    return (err * inside).sum() / inside.sum().clamp_min(1) + (err * outside).sum() / outside.sum().clamp_min(1)


def build_motion_stage(name: str, obj: DynamicObject, data: ObjectFrames, n_video_frames: int, cfg: MotionConfig,
                       ref: Cameras, seed: int, prior=None, checkpoint_every: int = 0, preview_every: int = 0) -> Stage:
    """A runner Stage fitting `obj.deformation` (run it with core.runner.run_stage)."""
    model = ObjectCentricModel(obj)
    groups = model.param_groups()
    for group in groups:
        group["lr"] *= cfg.lr_scale
    optimizer = torch.optim.Adam(groups, eps=1e-15)
    objective = build(cfg.objective, prior) if prior is not None and cfg.sds_every else None
    sampler = FrameSampler(data, n_video_frames, cfg, ref, seed)
    stateful = {"frames": sampler}
    if objective is not None:
        stateful["objective"] = objective
    return Stage(name, model, cfg.steps, sampler, motion_loss(cfg, obj, data, prior, objective), optimizer,
                 stateful=stateful, checkpoint_every=checkpoint_every, preview_every=preview_every,
                 after_step=objective.step if objective is not None else None)
