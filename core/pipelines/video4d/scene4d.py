"""The recomposed 4D scene: a static background plus dynamic objects, composed per frame.

Each object o keeps canonical Gaussians in its object space (lifted from its crop, centred at
the origin, seen by Zero123's reference camera at distance r_ref) and a deformation field
D_o(x, tau) giving each Gaussian's object-centric motion. Its place in the world at frame t
follows DreamScene4D's factorisation (object-centric motion, then object-to-world motion):

    x_world = T_t + s_t * R_t @ D_o(x, tau_t)

with T_t [3] the object's centre, s_t = exp(log_scale_t) and R_t the rotation that makes the
real camera at frame t see the object as the reference camera sees the canonical object:

    R_t = R_cam,t @ L(d_t) @ R_ref^T

R_cam,t is the camera-to-world rotation of frame t (OpenGL), R_ref the reference camera's
camera-to-world rotation in object space (so R_ref^T takes object space into the reference
camera's axes, in which the object's centre is at (0, 0, -r_ref)), d_t = R_cam,t^T (T_t - c_t)
/ |.| the direction of the object's centre in frame t's camera axes, and L(d) the smallest
rotation taking the optical axis (0, 0, -1) onto d (Rodrigues about (0,0,-1) x d). Since the
object-centric crops the deformation is fitted to are always seen from the reference camera,
re-aiming R_t along each frame's ray keeps the composition consistent with them while the
camera pans and the object crosses the picture; for an object on the optical axis (d = -z)
the composition is exactly the canonical render, scaled by s_t r_ref / depth.

A Gaussian's orientation composes the same way (q_world = q(R_t) * dq * q), its log-scales add
log s_t; colour and opacity are the canonical ones (frozen during motion, as the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.geometry.conversions import rotation_matrix_to_quaternion
from torch import Tensor, nn

from core.cameras import Cameras, c2w_to_viewmats
from core.pipelines.video4d.deformation import quaternion_multiply
from renderers.gaussian.ply import SH_C0, GaussianData
from renderers.gaussian.rasterize import rasterize

BACKGROUND_OWNER = 0


def axis_to_direction(d: Tensor) -> Tensor:
    """[...,3,3] smallest rotation taking the optical axis (0,0,-1) onto unit directions d [...,3].

    With a = (0,0,-1), v = a x d = (d_y, -d_x, 0), c = a . d = -d_z:
    L = I + [v]x + [v]x^2 / (1 + c)  (Rodrigues; d = -a, a half turn, never happens for a
    point in front of the camera)."""
    d = F.normalize(d, dim=-1)
    vx, vy = d[..., 1], -d[..., 0]
    zero = torch.zeros_like(vx)
    c = (-d[..., 2]).clamp_min(-1 + 1e-6)
    skew = torch.stack([
        torch.stack([zero, zero, vy], -1),
        torch.stack([zero, zero, -vx], -1),
        torch.stack([-vy, vx, zero], -1),
    ], -2)
    eye = torch.eye(3, dtype=d.dtype, device=d.device).expand_as(skew)
    return eye + skew + skew @ skew / (1 + c)[..., None, None]


def object_rotation(c2w: Tensor, centre: Tensor, ref_rotation: Tensor) -> Tensor:
    """R_t [T,3,3] for cameras c2w [T,4,4], object centres [T,3] (world) and the reference
    camera's rotation ref_rotation [3,3] (module docstring)."""
    R_cam = c2w[:, :3, :3]
    d = torch.einsum("tji,tj->ti", R_cam, centre - c2w[:, :3, 3])
    return R_cam @ axis_to_direction(d) @ ref_rotation.T.to(c2w)


@dataclass
class Gaussians:
    """A flat set of world-space Gaussians ready for the rasteriser.

    means [N,3]; quats [N,4] unit wxyz; log_scales [N,3]; opacities [N] in [0,1];
    colors [N,3] in [0,1]; owner [N] long (0 = background, else the object id)."""

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    opacities: Tensor
    colors: Tensor
    owner: Tensor

    @staticmethod
    def cat(parts: list["Gaussians"]) -> "Gaussians":
        return Gaussians(*[torch.cat([getattr(p, f) for p in parts]) for f in
                           ("means", "quats", "log_scales", "opacities", "colors", "owner")])

    def to_data(self) -> GaussianData:
        """As a standard 3DGS .ply's fields (degree-0 SH)."""
        opa = self.opacities.clamp(1e-6, 1 - 1e-6)
        n = len(self.means)
        return GaussianData(self.means.detach(), self.quats.detach(), self.log_scales.detach(),
                            torch.logit(opa).detach(), ((self.colors - 0.5) / SH_C0).detach()[:, None],
                            torch.zeros(n, 0, 3))


def gaussians_of(data: GaussianData, owner: int) -> Gaussians:
    """A GaussianData (degree-0 colour used) as Gaussians with one owner."""
    n = len(data)
    colors = (SH_C0 * data.sh0[:, 0] + 0.5).clamp(0, 1)
    return Gaussians(data.means, F.normalize(data.quats, dim=-1), data.log_scales, torch.sigmoid(data.logit_opacities),
                     colors, torch.full((n,), owner, dtype=torch.long))


class DynamicObject(nn.Module):
    """One object: frozen canonical Gaussians, its deformation field and its object-to-world
    motion (T [T,3], log_scale [T] learnable; R_t derived, module docstring)."""

    def __init__(self, object_id: int, canonical: GaussianData, deformation: nn.Module, ref_rotation: Tensor,
                 T: Tensor, log_scale: Tensor, visible: Tensor):
        super().__init__()
        self.object_id = int(object_id)
        base = gaussians_of(canonical, object_id)
        for name in ("means", "quats", "log_scales", "opacities", "colors"):
            self.register_buffer(f"canonical_{name}", getattr(base, name).detach().clone().float())
        self.deformation = deformation
        self.register_buffer("ref_rotation", ref_rotation.detach().clone().float())
        self.T = nn.Parameter(T.detach().clone().float())
        self.log_scale = nn.Parameter(log_scale.detach().clone().float())
        self.register_buffer("visible", visible.detach().clone().bool())

    def __len__(self) -> int:
        return len(self.canonical_means)

    @property
    def first_frame(self) -> int:
        """The first frame the object is visible in: it does not exist before it."""
        return int(self.visible.float().argmax())

    def object_space(self, tau: float) -> tuple[Tensor, Tensor, Tensor]:
        """The deformed canonical Gaussians at normalised time tau: means [N,3], unit quats
        [N,4], log_scales [N,3], in object space."""
        return self.deformation.deform(self.canonical_means, self.canonical_quats, self.canonical_log_scales, tau)

    def rotations(self, c2w: Tensor) -> Tensor:
        """R_t [T,3,3] for every frame's camera c2w [T,4,4]."""
        return object_rotation(c2w, self.T, self.ref_rotation)

    def to_world(self, means: Tensor, t: int, c2w: Tensor) -> tuple[Tensor, Tensor]:
        """Object-space points [N,3] at frame t -> world [N,3]; also R_t [3,3] (frame t's camera c2w [4,4])."""
        R = object_rotation(c2w[None], self.T[t:t + 1], self.ref_rotation)[0]
        return self.T[t] + torch.exp(self.log_scale[t]) * means @ R.T, R

    def gaussians(self, t: int, tau: float, c2w: Tensor) -> Gaussians:
        """World-space Gaussians of the object at frame t (camera c2w [4,4])."""
        means, quats, log_scales = self.object_space(tau)
        world, R = self.to_world(means, t, c2w)
        q = rotation_matrix_to_quaternion(R.contiguous())
        return Gaussians(world, F.normalize(quaternion_multiply(q.expand_as(quats), quats), dim=-1),
                         log_scales + self.log_scale[t], self.canonical_opacities, self.canonical_colors,
                         torch.full((len(world),), self.object_id, dtype=torch.long, device=world.device))


class Scene4D(nn.Module):
    """Background + objects + the estimated camera of each input frame.

    c2w [T,4,4] OpenGL camera-to-world; K [3,3] OpenCV intrinsics (pixel centres at 0);
    width, height: the input frames' size."""

    def __init__(self, background: GaussianData | None, objects: list[DynamicObject], c2w: Tensor, K: Tensor,
                 width: int, height: int):
        super().__init__()
        self.background = gaussians_of(background, BACKGROUND_OWNER) if background is not None else None
        self.objects = nn.ModuleList(objects)
        self.register_buffer("c2w", c2w.detach().clone().float())
        self.register_buffer("K", K.detach().clone().float())
        self.width, self.height = int(width), int(height)

    @property
    def n_frames(self) -> int:
        return len(self.c2w)

    def tau(self, t: int) -> float:
        return t / max(1, self.n_frames - 1)

    def object_ids(self) -> list[int]:
        return [o.object_id for o in self.objects]

    def cameras(self, frames: list[int] | None = None) -> Cameras:
        """The input frames' cameras (Cameras convention: pixel centres at +0.5)."""
        frames = list(range(self.n_frames)) if frames is None else frames
        K = self.K.clone()
        K[:2, 2] += 0.5
        return Cameras(self.c2w[frames], K.expand(len(frames), 3, 3).clone(), self.width, self.height)

    def gaussians(self, t: int, background: bool = True, objects: list[int] | None = None) -> Gaussians:
        """Every Gaussian of frame t in world space (objects: ids to include, default all)."""
        parts = [self.background] if background and self.background is not None else []
        for obj in self.objects:
            if (objects is None or obj.object_id in objects) and t >= obj.first_frame:
                parts.append(obj.gaussians(t, self.tau(t), self.c2w[t]))
        if not parts:
            raise ValueError("nothing to render: no background and no object selected")
        return Gaussians.cat(parts)

    def owner_ids(self) -> list[int]:
        """Owner channel order of `render(..., owners=True)`: background first, then objects."""
        return [BACKGROUND_OWNER, *self.object_ids()]

    def render(self, t: int, cameras: Cameras | None = None, background_color: Tensor | float = 0.0,
               owners: bool = False, include_background: bool = True,
               objects: list[int] | None = None) -> dict[str, Tensor]:
        """Render frame t's Gaussians through `cameras` (default: frame t's camera).

        Returns rgb [C,H,W,3] over background_color, alpha [C,H,W,1], depth [C,H,W,1]
        (expected z), and with owners=True owner [C,H,W,K+1]: each owner's share of the
        pixel's accumulated weight (order `owner_ids()`)."""
        cameras = cameras if cameras is not None else self.cameras([t])
        g = self.gaussians(t, include_background, objects)
        features = [g.colors]
        if owners:
            ids = torch.tensor(self.owner_ids(), device=g.owner.device)
            features.append((g.owner[:, None] == ids[None]).float())
        colors, alpha, _ = rasterize(g.means, g.quats, torch.exp(g.log_scales), g.opacities,
                                     torch.cat(features, -1), c2w_to_viewmats(cameras.c2w), cameras.K,
                                     cameras.width, cameras.height, render_mode="RGB+ED")
        bg = torch.as_tensor(background_color, dtype=colors.dtype, device=colors.device).expand(3)
        out = {"rgb": (colors[..., :3] + (1 - alpha) * bg).clamp(0, 1), "alpha": alpha, "depth": colors[..., -1:]}
        if owners:
            out["owner"] = colors[..., 3:-1]
        return out
