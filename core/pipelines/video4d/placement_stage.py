"""Object-to-world motion refined on the original frames (DreamScene4D's second factor).

With the background and every object's deformation frozen, each object's per-frame centre
T_t and log-scale log s_t (initialised from its mask boxes and the affine-aligned monocular
depth, `placement.py`) are fitted so the composed scene re-renders the input frame:

    L = w_rgb |I_t - render_t|_1 + w_mask sum_o |M_o,t - A_o,t|^2
        + w_depth sum_o ((z_o,t - z0_o,t) / z0_o,t)^2 + w_smooth sum_o |T_{t-1} - 2 T_t + T_{t+1}|^2 / z0^2

A_o,t is object o's share of the rendered weight at each pixel (the owner channels of
`Scene4D.render`), so the mask term also fixes the occlusion order where objects overlap;
z_o,t is the depth of T_t along frame t's optical axis and z0 its initial value. A
monocular picture cannot tell a near small object from a far large one (moving T along the
ray and scaling s with it renders the same), so the depth term keeps that gauge where the
monocular depth put it: the recompose step of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.runner import Batch, Stage
from core.pipelines.video4d.scene4d import Scene4D
from renderers.base import RenderOutput


@dataclass
class PlacementConfig:
    steps: int = 150
    lr_translation: float = 2e-3
    lr_scale: float = 5e-3
    rgb_weight: float = 1.0
    mask_weight: float = 1.0
    depth_weight: float = 1.0
    smooth_weight: float = 10.0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError("placement.steps must be at least 0")


class ComposedModel(nn.Module):
    """The Scene the runner trains here: Scene4D rendered at the frames its batch names."""

    def __init__(self, scene: Scene4D):
        super().__init__()
        self.scene = scene

    def update(self, step: int, out: RenderOutput | None = None) -> dict:
        return {}

    def render(self, cameras, background=None) -> RenderOutput:
        outs = [self.scene.render(t, owners=True) for t in cameras.frames]
        return RenderOutput(rgb=torch.cat([o["rgb"] for o in outs]), alpha=torch.cat([o["alpha"] for o in outs]),
                            depth=torch.cat([o["depth"] for o in outs]),
                            extras={"owner": torch.cat([o["owner"] for o in outs])})


class FrameCameras:
    """What a placement batch renders: video frame indices (Scene4D knows their cameras)."""

    def __init__(self, frames: list[int]):
        self.frames = frames


class PlacementFrames:
    """One random frame per step; checkpointable."""

    def __init__(self, n_frames: int, seed: int):
        self.n = n_frames
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, step: int) -> Batch:
        t = int(torch.randint(self.n, (1,), generator=self.generator))
        return Batch(FrameCameras([t]), None, {"t": t})

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def axial_depth(scene: Scene4D) -> Tensor:
    """[O,T] depth of each object's centre along each frame's optical axis."""
    c2w = scene.c2w
    out = []
    for obj in scene.objects:
        rel = obj.T - c2w[:, :3, 3]
        out.append(-(rel * c2w[:, :3, 2]).sum(-1))
    return torch.stack(out)


def placement_loss(cfg: PlacementConfig, scene: Scene4D, frames: Tensor, masks: Tensor):
    """frames [T,H,W,3], masks [T,H,W] object ids; the stage loss (module docstring)."""
    z0 = axial_depth(scene).detach().clamp_min(1e-6)
    ids = torch.tensor(scene.owner_ids())

    def loss(out: RenderOutput, batch: Batch, step: int, progress: float):
        t = batch.data["t"]
        rgb = (out.rgb[0] - frames[t]).abs().mean()
        onehot = (masks[t][..., None] == ids).float()
        mask = (out.extras["owner"][0][..., 1:] - onehot[..., 1:]).square().mean()
        z = axial_depth(scene)
        depth = ((z - z0) / z0).square().mean()
        T = torch.stack([o.T for o in scene.objects])            # [O,T,3]
        smooth = ((T[:, :-2] - 2 * T[:, 1:-1] + T[:, 2:]).square().sum(-1) / z0[:, 1:-1].square()).mean() \
            if T.shape[1] > 2 else T.sum() * 0
        ls = torch.stack([o.log_scale for o in scene.objects])
        smooth = smooth + ((ls[:, :-2] - 2 * ls[:, 1:-1] + ls[:, 2:]).square()).mean() if ls.shape[1] > 2 else smooth
        total = (cfg.rgb_weight * rgb + cfg.mask_weight * mask + cfg.depth_weight * depth
                 + cfg.smooth_weight * smooth)
        return total, {"rgb_l1": float(rgb.detach()), "mask_mse": float(mask.detach()),
                       "depth_drift": float(depth.detach()), "smooth": float(smooth.detach())}

    return loss


def scale_about_camera(obj, t: int, camera_centre: Tensor, factor: float) -> None:
    """Move object `obj` at frame t along the rays from `camera_centre` by `factor` (its centre
    and its scale both times factor): its picture from that camera does not change."""
    with torch.no_grad():
        obj.T[t] = camera_centre + factor * (obj.T[t] - camera_centre)
        obj.log_scale[t] += float(torch.log(torch.tensor(factor)))


@torch.no_grad()
def order_in_depth(scene: Scene4D, masks: Tensor, margin: float = 0.95) -> dict[str, int]:
    """Make the occlusion order agree with the masks before the placement is refined (depth
    order cannot be learnt through sorted alpha compositing).

    masks [T,H,W] object ids. For each frame where an object shows: (1) on the pixels its mask
    gives it, its rendered depth must be nearer than the background's: if the ratio object /
    background exceeds `margin` (its 90th percentile over those pixels: the silhouette, where
    the object is deepest, included), the object is pulled toward the camera by margin / ratio
    (`scale_about_camera`, so its picture is unchanged); (2) where two objects overlap, the one
    the masks give more of the overlap must be nearer (both renders may overlap more than the
    masks do): the other is pushed back by the same rule (median ratio over the overlap).
    Returns the number of moves of each kind."""
    moved = {"in_front_of_background": 0, "behind_other_object": 0}
    for t in range(scene.n_frames):
        centre = scene.c2w[t, :3, 3]
        background = scene.render(t, objects=[])["depth"][0, ..., 0]
        present = [o for o in scene.objects if t >= o.first_frame and bool((masks[t] == o.object_id).any())]
        renders = {}
        for obj in present:
            r = scene.render(t, include_background=False, objects=[obj.object_id])
            mine = (masks[t] == obj.object_id) & (r["alpha"][0, ..., 0] > 0.5) & (background > 0)
            if mine.sum() >= 4:
                ratio = float(torch.quantile(r["depth"][0, ..., 0][mine] / background[mine], 0.9))
                if ratio > margin:
                    scale_about_camera(obj, t, centre, margin / ratio)
                    moved["in_front_of_background"] += 1
                    r = scene.render(t, include_background=False, objects=[obj.object_id])
            renders[obj.object_id] = r
        for a_i, first in enumerate(present):
            for second in present[a_i + 1:]:
                ra, rb = renders[first.object_id], renders[second.object_id]
                both = (ra["alpha"][0, ..., 0] > 0.5) & (rb["alpha"][0, ..., 0] > 0.5)
                votes = {o: int((both & (masks[t] == o.object_id)).sum()) for o in (first, second)}
                if max(votes.values()) < 4:
                    continue
                front, behind = (first, second) if votes[first] >= votes[second] else (second, first)
                rf, rb = renders[front.object_id], renders[behind.object_id]
                ratio = float((rb["depth"][0, ..., 0][both] / rf["depth"][0, ..., 0][both]).median())
                if ratio < 1 / margin:
                    scale_about_camera(behind, t, centre, 1 / (margin * ratio))
                    renders[behind.object_id] = scene.render(t, include_background=False, objects=[behind.object_id])
                    moved["behind_other_object"] += 1
    return moved


def build_placement_stage(scene: Scene4D, frames: Tensor, masks: Tensor, cfg: PlacementConfig, seed: int,
                          checkpoint_every: int = 0) -> Stage:
    """A runner Stage refining every object's T and log_scale (deformations and background frozen)."""
    model = ComposedModel(scene)
    for p in scene.parameters():
        p.requires_grad_(False)
    groups = []
    for obj in scene.objects:
        obj.T.requires_grad_(True)
        obj.log_scale.requires_grad_(True)
        groups += [{"params": [obj.T], "lr": cfg.lr_translation, "name": f"T_{obj.object_id}"},
                   {"params": [obj.log_scale], "lr": cfg.lr_scale, "name": f"log_scale_{obj.object_id}"}]
    optimizer = torch.optim.Adam(groups, eps=1e-15)
    sampler = PlacementFrames(scene.n_frames, seed)
    return Stage("placement", model, cfg.steps, sampler, placement_loss(cfg, scene, frames, masks), optimizer,
                 stateful={"frames": sampler}, checkpoint_every=checkpoint_every)
