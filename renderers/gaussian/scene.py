"""GaussianScene: 3D Gaussians behind the Scene contract (renderers/base.py).

Parameters follow gsplat's names and 3DGS's storage: means [N,3], quats [N,4] (w,x,y,z,
unnormalised), scales [N,3] (log), opacities [N] (logit), sh0 [N,1,3] and, for
sh_degree > 0, shN [N,K-1,3] with K = (sh_degree+1)^2.

Training protocol (the runner calls these; see core/runner.py):

    optimizer = torch.optim.Adam(scene.param_groups())   # one named group per tensor
    scene.attach_optimizer(optimizer)                     # densification resizes its state
    loop:
        out = scene.render(cameras, background)
        loss = ... (+ sum(scene.regularisers().values()))
        scene.before_backward(step, out)                  # retains grad of projected means
        loss.backward(); optimizer.step()
        scene.update(step, out)                           # densify / prune / relocate
    resume: scene.load_state_dict(s); scene.rebind_optimizer(optimizer); optimizer.load_state_dict(o)

Densification replaces parameter tensors, so hold `scene.params[name]`, never a stale reference.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from gsplat.utils import normalized_quat_to_rotmat
from torch import Tensor, nn

from core.cameras import Cameras
from renderers.base import RenderOutput, as_background
from renderers.gaussian.densify import Densifier, DensifyConfig
from renderers.gaussian.ply import SH_C0, GaussianData, load_gaussians, save_gaussians
from renderers.gaussian.rasterize import colors_from_sh, rasterize


@dataclass
class GaussianConfig:
    """The 3D Gaussian backend. Defaults suit text-to-3D in the unit sphere (DreamGaussian-like)."""

    sh_degree: int = 0               # text-to-3D keeps colour view-independent
    sh_degree_interval: int = 1000   # steps between raising the active SH degree (3DGS schedule)
    num_points: int = 5000           # for init "sphere"; init "points" takes one Gaussian per point
    init: Literal["sphere", "points"] = "sphere"
    init_radius: float = 0.5
    init_opacity: float = 0.1
    init_scale: float | None = None  # None: the mean spacing of the initial points
    seed: int = 0
    lr_means: float = 1e-3
    lr_quats: float = 5e-3
    lr_scales: float = 5e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 1e-2
    lr_shN: float = 5e-4             # 3DGS: 1/20 of the degree-0 rate
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    render_normals: bool = True
    near_plane: float = 0.01
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    densify: DensifyConfig = field(default_factory=DensifyConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {self.sh_degree}")
        if self.num_points < 1:
            raise ValueError(f"num_points must be at least 1, got {self.num_points}")
        if not 0 < self.init_opacity < 1:
            raise ValueError(f"init_opacity must be in (0,1), got {self.init_opacity}")
        if self.init_radius <= 0 or (self.init_scale is not None and self.init_scale <= 0):
            raise ValueError("init_radius and init_scale must be positive")
        if self.sh_degree_interval < 1:
            raise ValueError(f"sh_degree_interval must be at least 1, got {self.sh_degree_interval}")


def mean_neighbour_distance(points: Tensor, k: int = 3, chunk: int = 4096) -> Tensor:
    """[N] mean distance of each point [N,3] to its k nearest neighbours (3DGS's scale init)."""
    n = points.shape[0]
    if n <= 1:
        return torch.full((n,), 0.01, device=points.device)
    k = min(k, n - 1)
    out = []
    for start in range(0, n, chunk):
        d = torch.cdist(points[start:start + chunk], points)
        out.append(d.topk(k + 1, largest=False).values[:, 1:].mean(-1))  # drop the point itself
    return torch.cat(out).clamp_min(1e-7)


class GaussianScene(nn.Module):
    """Learnable 3D Gaussians rendered by `renderers.gaussian.rasterize` (gsplat on CUDA, torch on CPU)."""

    def __init__(self, cfg: GaussianConfig | None = None, points: Tensor | None = None,
                 colors: Tensor | None = None) -> None:
        """points [M,3] and colors [M,3] in [0,1] (optional) seed the Gaussians when cfg.init == "points"."""
        super().__init__()
        self.cfg = cfg = cfg or GaussianConfig()
        generator = torch.Generator().manual_seed(cfg.seed)
        if cfg.init == "points":
            if points is None:
                raise ValueError('init="points" needs points [M,3] (and optionally colors [M,3])')
            means = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 3)
        else:
            # Uniform in the ball: radius ~ R u^(1/3), direction isotropic.
            direction = F.normalize(torch.randn(cfg.num_points, 3, generator=generator), dim=-1)
            radius = cfg.init_radius * torch.rand(cfg.num_points, 1, generator=generator) ** (1 / 3)
            means = direction * radius
        n = means.shape[0]
        if colors is None:
            colors = torch.rand(n, 3, generator=generator)
        colors = torch.as_tensor(colors, dtype=torch.float32).reshape(n, 3)
        if cfg.init_scale is not None:
            scales = torch.full((n,), cfg.init_scale)
        else:
            scales = mean_neighbour_distance(means)
        k = (cfg.sh_degree + 1) ** 2
        data = GaussianData(
            means=means,
            quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
            log_scales=scales.log()[:, None].repeat(1, 3),
            logit_opacities=torch.full((n,), math.log(cfg.init_opacity / (1 - cfg.init_opacity))),
            sh0=((colors - 0.5) / SH_C0)[:, None, :],
            shN=torch.zeros(n, k - 1, 3),
        )
        self.params = nn.ParameterDict()
        self._set_data(data)
        self.densifier = Densifier(cfg.densify)
        self.active_sh_degree = 0
        self._optimizer: torch.optim.Optimizer | None = None

    # --- construction and files -------------------------------------------------------------

    @classmethod
    def from_data(cls, data: GaussianData, cfg: GaussianConfig | None = None) -> "GaussianScene":
        """A scene holding exactly `data` (its SH degree wins over cfg.sh_degree), all degrees active."""
        cfg = cfg or GaussianConfig()
        cfg = dataclasses.replace(cfg, sh_degree=data.sh_degree, init="sphere", num_points=1)
        scene = cls(cfg)
        scene._set_data(data)
        scene.active_sh_degree = data.sh_degree
        return scene

    @classmethod
    def load(cls, path: str | Path, cfg: GaussianConfig | None = None) -> "GaussianScene":
        """A scene from a 3DGS .ply or .splat file (raises ply.SplatFormatError for other files)."""
        return cls.from_data(load_gaussians(path), cfg)

    def to_data(self) -> GaussianData:
        p = {name: t.detach() for name, t in self.params.items()}
        n = p["means"].shape[0]
        return GaussianData(
            means=p["means"], quats=p["quats"], log_scales=p["scales"], logit_opacities=p["opacities"],
            sh0=p["sh0"], shN=p.get("shN", torch.zeros(n, 0, 3, device=p["means"].device)),
        )

    def export(self, path: str | Path) -> Path:
        """Write a standard 3DGS .ply (or .splat when the suffix says so); returns the path."""
        path = Path(path)
        if path.suffix.lower() not in (".ply", ".splat"):
            path = path.with_suffix(".ply")
        return save_gaussians(path, self.to_data())

    def _set_data(self, data: GaussianData) -> None:
        device = self.params["means"].device if "means" in self.params else torch.device("cpu")
        tensors = {"means": data.means, "quats": data.quats, "scales": data.log_scales,
                   "opacities": data.logit_opacities, "sh0": data.sh0}
        if data.shN.shape[1] > 0:
            tensors["shN"] = data.shN
        for name in list(self.params.keys()):
            if name not in tensors:
                del self.params[name]
        for name, t in tensors.items():
            self.params[name] = nn.Parameter(t.detach().clone().float().to(device))

    # --- rendering ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    def _view_colors(self, viewmats: Tensor) -> Tensor:
        """[C,N,3] colours seen by cameras viewmats [C,4,4], as gsplat evaluates SH (clamped at 0)."""
        p = self.params
        degree = min(self.active_sh_degree, self.cfg.sh_degree) if "shN" in p else 0
        if degree == 0:  # SH degree 0 is view-independent: skip the per-camera evaluation
            return (SH_C0 * p["sh0"][:, 0] + 0.5).clamp_min(0).expand(len(viewmats), -1, -1)
        return colors_from_sh(degree, torch.cat([p["sh0"], p["shN"]], dim=1), p["means"], viewmats)

    def _view_normals(self, campos: Tensor) -> Tensor:
        """[C,N,3] each Gaussian's shortest axis, flipped to face each camera."""
        p = self.params
        rotmats = normalized_quat_to_rotmat(F.normalize(p["quats"], dim=-1))   # [N,3,3], columns = axes
        shortest = p["scales"].argmin(dim=-1)
        normals = rotmats.gather(2, shortest[:, None, None].expand(-1, 3, 1))[..., 0]   # [N,3]
        to_camera = campos[:, None] - p["means"][None]                  # [C,N,3]
        facing = torch.where((normals[None] * to_camera).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        return normals[None] * facing

    def render(self, cameras: Cameras, background: Tensor | float | None = None) -> RenderOutput:
        """rgb [B,H,W,3] over `background` ([3]/[B,3] in [0,1]; None: cfg.background), alpha [B,H,W,1],
        depth [B,H,W,1] expected z (0 where alpha is 0), normal [B,H,W,3] world unit vectors
        (None when cfg.render_normals is off). extras["meta"] is the rasteriser's meta
        (gsplat layout) that `update` needs; extras["n_gaussians"] the count rendered."""
        cameras = cameras.to(self.device)
        p = self.params
        B = len(cameras)
        bg = as_background(background, B, self.device, default=self.cfg.background)
        viewmats = cameras.viewmats()
        features = [self._view_colors(viewmats)]
        if self.cfg.render_normals:
            features.append(self._view_normals(cameras.positions))
        colors, alpha, meta = rasterize(
            p["means"], F.normalize(p["quats"], dim=-1), torch.exp(p["scales"]), torch.sigmoid(p["opacities"]),
            torch.cat(features, dim=-1), viewmats, cameras.K, cameras.width, cameras.height,
            near_plane=self.cfg.near_plane, render_mode="RGB+ED", backend=self.cfg.backend,
        )
        # Premultiplied colour: composite here so the depth/normal channels never see the background.
        rgb = (colors[..., :3] + (1 - alpha) * bg[:, None, None, :]).clamp(0, 1)
        normal = F.normalize(colors[..., 3:6], dim=-1) if self.cfg.render_normals else None
        return RenderOutput(rgb=rgb, alpha=alpha, depth=colors[..., -1:], normal=normal,
                            extras={"meta": meta, "n_gaussians": len(self)})

    # --- optimisation ---------------------------------------------------------------------------

    def param_groups(self, cfg: Any = None) -> list[dict]:
        """One Adam group per tensor, named after it; learning rates from `cfg` when it has
        lr_<name> attributes, else from this scene's GaussianConfig."""
        return [
            {"name": name, "params": [t], "lr": float(getattr(cfg, f"lr_{name}", getattr(self.cfg, f"lr_{name}")))}
            for name, t in self.params.items()
        ]

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Let densification resize `optimizer`'s groups and state with the parameters. The
        optimizer must have been built from `param_groups()` (one named group per tensor)."""
        from renderers.gaussian.densify import optimizer_views

        optimizer_views(self.params, optimizer)  # validates
        self._optimizer = optimizer

    def rebind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """After `load_state_dict` changed tensors: point `optimizer`'s named groups at the
        current tensors (dropping stale state) and attach it. Call before
        `optimizer.load_state_dict`, which then restores matching moments."""
        for group in optimizer.param_groups:
            name = group.get("name")
            if name in self.params and (len(group["params"]) != 1 or group["params"][0] is not self.params[name]):
                for old in group["params"]:
                    optimizer.state.pop(old, None)
                group["params"] = [self.params[name]]
        self.attach_optimizer(optimizer)

    def before_backward(self, step: int, out: RenderOutput) -> None:
        """Before loss.backward(): keep the gradient of the projected means densification reads."""
        means2d = out.extras.get("meta", {}).get("means2d")
        if self.densifier.needs_means2d_grad and means2d is not None and means2d.requires_grad:
            means2d.retain_grad()

    def update(self, step: int, out: RenderOutput | None = None) -> dict[str, int]:
        """After the optimizer step: raise the active SH degree on schedule, then densify,
        prune or relocate (cfg.densify). Returns counts for logging (empty when nothing ran)."""
        # Never lowered: a loaded scene keeps the degrees it was saved with.
        scheduled = min(self.cfg.sh_degree, step // self.cfg.sh_degree_interval)
        self.active_sh_degree = max(self.active_sh_degree, scheduled)
        meta = out.extras.get("meta") if out is not None else None
        means2d = meta.get("means2d") if meta else None
        if (self.densifier.needs_means2d_grad and means2d is not None and means2d.requires_grad
                and not means2d.retains_grad and step < self.cfg.densify.refine_stop):
            raise RuntimeError("densification reads the projected means' gradient: call "
                               "scene.before_backward(step, out) before loss.backward()")
        return self.densifier.step(self.params, self._optimizer, step, meta)

    def regularisers(self) -> dict[str, Tensor]:
        """Loss terms the densification strategy asks for (3DGS-MCMC's opacity/scale L1), already weighted."""
        return self.densifier.regularisers(self.params)

    # --- checkpoints (N changes with densification) ----------------------------------------------

    def get_extra_state(self) -> dict:
        return {"densify": self.densifier.state_dict(), "active_sh_degree": self.active_sh_degree}

    def set_extra_state(self, state: dict) -> None:
        self.densifier.load_state_dict(state["densify"])
        self.active_sh_degree = int(state["active_sh_degree"])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # Runs before the ParameterDict copies values in: resize tensors whose N differs.
        for name in list(self.params.keys()):
            key = f"{prefix}params.{name}"
            if key in state_dict:
                saved, current = state_dict[key], self.params[name]
                if saved.shape[1:] != current.shape[1:]:
                    error_msgs.append(f"{key}: saved shape {tuple(saved.shape)} is not [N,{list(current.shape[1:])}] "
                                      "(a different sh_degree?)")
                elif saved.shape != current.shape:
                    resized = torch.empty(saved.shape, dtype=current.dtype, device=current.device)
                    self.params[name] = nn.Parameter(resized)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
