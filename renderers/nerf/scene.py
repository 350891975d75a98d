"""NerfScene: the density + colour field backend behind the Scene contract (renderers/base.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from core.cameras import Cameras
from core.config import from_dict, to_dict
from renderers.base import RenderOutput, as_background
from renderers.nerf.background import Background
from renderers.nerf.encoding import GridEncoding
from renderers.nerf.field import NerfField
from renderers.nerf.occupancy import OccupancyGrid
from renderers.nerf.render import render_field


@dataclass
class NerfConfig:
    """The NeRF backend. Defaults suit 64x64 text-to-3D renders on a CPU."""

    bound_radius: float = 1.0  # the scene lives inside this sphere
    # Encoding: dense grids from base to max resolution, then a triplane (0 disables it).
    n_levels: int = 6
    features_per_level: int = 2
    base_resolution: int = 8
    max_resolution: int = 64
    plane_resolution: int = 128
    plane_features: int = 8
    hidden_dim: int = 32
    n_hidden_layers: int = 1
    density_activation: Literal["softplus", "trunc_exp"] = "softplus"
    # Magic3D density bias: blob_density * (1 - |x| / blob_radius); blob_density 0 disables it.
    blob_density: float = 10.0
    blob_radius: float = 0.5
    view_dependent: bool = False  # text-to-3D keeps albedo view-independent
    background: Literal["solid", "learned", "mlp"] = "solid"
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # Sampling: intervals per ray (dense path); the occupancy grid marches at 2*bound/n_samples.
    n_samples: int = 64
    max_samples_per_chunk: int = 1 << 18
    # Normals from the density gradient: "analytic" (autograd, detached: to view and shade),
    # "finite_difference" (differentiable: for normal regularisers), or "none".
    normals: Literal["analytic", "finite_difference", "none"] = "analytic"
    normal_eps: float = 1e-2  # finite-difference step, about a finest triplane texel
    occupancy_grid: bool = True  # use nerfacc's occupancy grid when on CUDA
    occupancy_resolution: int = 64
    occupancy_threshold: float = 0.01
    occupancy_update_every: int = 16
    lr_grid: float = 1e-2
    lr_mlp: float = 1e-3
    lr_background: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("n_levels", "features_per_level", "base_resolution", "max_resolution", "hidden_dim",
                     "n_hidden_layers", "n_samples", "max_samples_per_chunk", "occupancy_resolution",
                     "occupancy_update_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.bound_radius <= 0 or self.blob_radius <= 0 or self.normal_eps <= 0:
            raise ValueError("bound_radius, blob_radius and normal_eps must be positive")
        if self.max_resolution < self.base_resolution:
            raise ValueError(
                f"max_resolution ({self.max_resolution}) must be >= base_resolution ({self.base_resolution})"
            )
        if self.max_samples_per_chunk < self.n_samples:
            raise ValueError(f"max_samples_per_chunk ({self.max_samples_per_chunk}) must hold one ray "
                             f"(n_samples={self.n_samples})")


class NerfScene(nn.Module):
    """Learnable radiance field in the sphere |x| < bound_radius with a volume renderer.

    CPU tensors: dense stratified sampling through nerfacc's [n_rays, n_samples] functions.
    CUDA tensors (and cfg.occupancy_grid): nerfacc occupancy-grid marching + packed rendering.
    """

    def __init__(self, cfg: NerfConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or NerfConfig()
        # The encoding's cube circumscribes the bounding sphere.
        encoding = GridEncoding(
            cfg.bound_radius, cfg.n_levels, cfg.features_per_level, cfg.base_resolution, cfg.max_resolution,
            cfg.plane_resolution, cfg.plane_features,
        )
        self.field = NerfField(
            encoding, cfg.hidden_dim, cfg.n_hidden_layers, cfg.density_activation,
            cfg.blob_density, cfg.blob_radius, cfg.view_dependent, cfg.normal_eps,
        )
        self.background = Background(cfg.background, cfg.background_color)
        self.occupancy = OccupancyGrid(
            cfg.bound_radius, cfg.occupancy_resolution, cfg.occupancy_threshold, cfg.occupancy_update_every
        )

    @property
    def device(self) -> torch.device:
        return self.field.density_mlp[0].weight.device

    @property
    def step_size(self) -> float:
        """Marching step of the occupancy-grid path: n_samples steps across a diameter."""
        return 2 * self.cfg.bound_radius / self.cfg.n_samples

    def _use_occupancy(self, device: torch.device) -> bool:
        return self.cfg.occupancy_grid and device.type == "cuda"

    def density(self, points: Tensor) -> Tensor:
        """points [N,3] world -> sigma [N] >= 0; for marching cubes and baking."""
        return self.field.density(points)

    def color(self, points: Tensor, dirs: Tensor | None = None) -> Tensor:
        """points [N,3], unit dirs [N,3] (optional unless cfg.view_dependent) -> rgb [N,3] in [0,1]."""
        return self.field.color(points, dirs)

    def render(self, cameras: Cameras, background: Tensor | float | None = None) -> RenderOutput:
        """cameras on the scene's device; background None uses the scene's background model,
        else a scalar, [3] or [B,3] colour in [0,1]. Training mode jitters samples."""
        cameras = cameras.to(self.device)
        occupancy = None
        if self._use_occupancy(cameras.device):
            self.occupancy.ensure_initialised(self.field.density, self.step_size)
            occupancy = self.occupancy
        bg = self.background if background is None else as_background(background, len(cameras), cameras.device)
        return render_field(
            self.field, cameras, bg, self.cfg.bound_radius, self.cfg.n_samples, self.cfg.max_samples_per_chunk,
            stratified=self.training, normals=self.cfg.normals, occupancy=occupancy,
        )

    def param_groups(self, cfg: Any = None) -> list[dict]:
        """Adam groups for grids, MLPs and background. Learning rates come from `cfg` when it
        has lr_grid / lr_mlp / lr_background attributes, else from this scene's NerfConfig."""

        def lr(name: str) -> float:
            return float(getattr(cfg, name, getattr(self.cfg, name)))

        mlps = list(self.field.density_mlp.parameters()) + list(self.field.color_mlp.parameters())
        groups = [
            {"name": "grid", "params": list(self.field.encoding.parameters()), "lr": lr("lr_grid")},
            {"name": "mlp", "params": mlps, "lr": lr("lr_mlp")},
        ]
        background = list(self.background.parameters())
        if background:
            groups.append({"name": "background", "params": background, "lr": lr("lr_background")})
        return groups

    def update(self, step: int, out: RenderOutput | None = None) -> None:
        """After the optimizer step: refresh the occupancy grid (CUDA path only)."""
        if self.training and self._use_occupancy(self.device):
            self.occupancy.update(step, self.field.density, self.step_size)

    def export(self, path: str | Path) -> Path:
        """Save config + weights as a torch checkpoint (.pt); reload with `NerfScene.load`."""
        path = Path(path)
        if path.suffix != ".pt":
            path = path.with_suffix(".pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": to_dict(self.cfg), "state_dict": self.state_dict()}, path)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "NerfScene":
        """A scene from `export`'s checkpoint."""
        checkpoint = torch.load(Path(path), map_location=map_location, weights_only=True)
        scene = cls(from_dict(NerfConfig, checkpoint["config"]))
        scene.load_state_dict(checkpoint["state_dict"])
        return scene
