"""PBRGaussianScene: 3D Gaussians with physically based attributes, deferred shading and the
progressive blend of Ye et al. 2024 (maths in `renderers.shading.deferred`).

Each Gaussian keeps its radiance colour (SH, as `GaussianScene`) and carries four more
attributes stored as logits and sigmoid-activated: albedo [N,3] (linear), roughness [N,1],
metallic [N,1] and distillation progress [N,1]. Its normal is its shortest axis turned
toward the camera (`GaussianScene._view_normals`).

One rasteriser call splats every per-pixel buffer: the features
[radiance 3 | albedo 3 | roughness 1 | metallic 1 | progress 1 | normal 3] (12 channels)
plus expected depth ("RGB+ED"), through `rasterize`: gsplat's CUDA kernel on CUDA tensors
(it pads 13 channels to a size it compiles), the tiled torch compositor otherwise.
Attributes come out premultiplied by coverage A; dividing by A gives the pixel's mean.

The environment is a `LearnableEnvironment` child module; `render(..., light=...)`
shades under another map (relighting) instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.cameras import Cameras
from renderers.base import RenderOutput, as_background
from renderers.gaussian.rasterize import rasterize
from renderers.gaussian.scene import GaussianConfig, GaussianScene
from renderers.shading.deferred import LearnableEnvironment, deferred_shade, display_encode, progressive_blend
from renderers.shading.environment import EnvironmentLight
from renderers.shading.tonemap import srgb_encode

PBR_ATTRIBUTES = {"albedo": 3, "roughness": 1, "metallic": 1, "progress": 1}


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


@dataclass
class PBRConfig:
    """Initial values (after the sigmoid), learning rates and the environment of PBR Gaussians."""

    init_albedo: float = 0.5
    init_roughness: float = 0.5
    init_metallic: float = 0.05
    init_progress: float = 0.1        # Ye et al.: "initialised to a small value"
    lr_albedo: float = 2e-2
    lr_roughness: float = 2e-2
    lr_metallic: float = 0.05        # progressive distillation's; the PBR-only preset sets 0.02
    lr_progress: float = 0.1         # a rises as fast as the physical model converges (docs/relight.md)
    lr_environment: float = 0.1      # 0.02 left the learned light too flat for either method
    env_height: int = 16              # learned equirect map is env_height x 2 env_height
    env_init: float = 1.0             # initial radiance (uniform grey)
    env_levels: int = 5               # GGX pre-filtered roughness levels
    env_samples: int = 64             # GGX samples per pre-filtered texel

    def __post_init__(self) -> None:
        for name in ("init_albedo", "init_roughness", "init_metallic", "init_progress"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0,1], got {getattr(self, name)}")


class PBRGaussianScene(GaussianScene):
    """Gaussians with radiance SH + albedo/roughness/metallic/progress and a learnable environment.

    `progress_override`: None uses the splatted progress map; a float in [0,1] uses that
    value everywhere (0: the radiance field alone, skipping the shading; 1: the PBR-only
    baseline). `pbr_trainable`/freezing is done by the pipeline through learning rates.
    """

    def __init__(self, cfg: GaussianConfig | None = None, pbr: PBRConfig | None = None,
                 points: Tensor | None = None, colors: Tensor | None = None) -> None:
        super().__init__(cfg, points, colors)
        self.pbr_cfg = pbr = pbr or PBRConfig()
        self._add_pbr_params()
        self.environment = LearnableEnvironment(pbr.env_height, pbr.env_init, pbr.env_levels, pbr.env_samples)
        self.progress_override: float | None = None

    def _add_pbr_params(self) -> None:
        """(Re)create the PBR attributes at the current N with their initial values."""
        n, device = len(self), self.device
        for name, channels in PBR_ATTRIBUTES.items():
            init = _logit(getattr(self.pbr_cfg, f"init_{name}"))
            self.params[name] = nn.Parameter(torch.full((n, channels), init, device=device))

    # --- attributes ---------------------------------------------------------------------------

    def attribute(self, name: str) -> Tensor:
        """[N,C] activated attribute in [0,1] (albedo, roughness, metallic, progress)."""
        return torch.sigmoid(self.params[name])

    @torch.no_grad()
    def set_attribute(self, name: str, value: Tensor | float) -> None:
        """Set an attribute from activated values in [0,1] ([N,C] or a scalar); exact 0 and 1 stay exact
        (logits -/+1e4, whose sigmoid is 0/1 in float32)."""
        value = torch.as_tensor(value, dtype=torch.float32, device=self.device).clamp(0, 1)
        logit = torch.logit(value.clamp(1e-7, 1 - 1e-7))
        logit = torch.where(value <= 0, -1e4, torch.where(value >= 1, 1e4, logit))
        self.params[name].copy_(logit.expand_as(self.params[name]))

    # --- rendering ----------------------------------------------------------------------------

    def render(self, cameras: Cameras, background: Tensor | float | None = None,
               light: EnvironmentLight | None = None, progress: float | None = None) -> RenderOutput:
        """rgb [B,H,W,3] = the blend a I_pbr + (1-a) I_rad over `background`, alpha, depth, normal.

        light: shade under this environment instead of the learned one. progress: a constant
        blend weight (else `progress_override`, else the splatted map). extras: "radiance" and
        (unless a == 0) "pbr" [B,H,W,3] display images over the background, "linear" [B,H,W,3]
        PBR radiance, the un-premultiplied buffers "albedo" [B,H,W,3] (linear; "base_color" is it
        sRGB-encoded, as glTF textures store it),
        "roughness", "metallic", "progress" [B,H,W,1] (a), "mask" (= alpha), "meta".
        """
        cameras = cameras.to(self.device)
        p = self.params
        B = len(cameras)
        bg = as_background(background, B, self.device, default=self.cfg.background)
        viewmats = cameras.viewmats()
        C = len(viewmats)
        features = [self._view_colors(viewmats)]
        features += [self.attribute(name)[None].expand(C, -1, -1) for name in PBR_ATTRIBUTES]
        features.append(self._view_normals(cameras.positions))
        colors, alpha, meta = rasterize(
            p["means"], F.normalize(p["quats"], dim=-1), torch.exp(p["scales"]), torch.sigmoid(p["opacities"]),
            torch.cat(features, dim=-1), viewmats, cameras.K, cameras.width, cameras.height,
            near_plane=self.cfg.near_plane, render_mode="RGB+ED", backend=self.cfg.backend,
        )
        over = (1 - alpha) * bg[:, None, None, :]
        radiance = (colors[..., :3] + over).clamp(0, 1)
        coverage = alpha.clamp_min(1e-6)
        buffers, start = {}, 3
        for name, channels in PBR_ATTRIBUTES.items():
            buffers[name] = (colors[..., start:start + channels] / coverage).clamp(0, 1)
            start += channels
        normal = F.normalize(colors[..., start:start + 3], dim=-1)
        depth = colors[..., -1:]

        constant = progress if progress is not None else self.progress_override
        extras = {"meta": meta, "n_gaussians": len(self), "radiance": radiance, "mask": alpha,
                  "base_color": srgb_encode(buffers["albedo"]), **buffers}
        if constant is not None and float(constant) == 0.0:
            rgb = radiance
            extras["progress"] = torch.zeros_like(alpha)
        else:
            light = light if light is not None else self.environment.light()
            linear = deferred_shade(buffers["albedo"], buffers["roughness"], buffers["metallic"], normal, cameras,
                                    light)
            pbr = display_encode(linear) * alpha + over
            a = buffers["progress"] if constant is None else torch.full_like(alpha, float(constant))
            rgb = progressive_blend(a, pbr, radiance)
            extras.update(pbr=pbr, linear=linear, progress=a)
        return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, normal=normal, extras=extras)

    # --- optimisation ---------------------------------------------------------------------------

    def param_groups(self, cfg=None) -> list[dict]:
        """Per-Gaussian groups (as `GaussianScene`, PBR rates from the PBRConfig) + "environment"."""
        groups = []
        for name, t in self.params.items():
            source = self.pbr_cfg if name in PBR_ATTRIBUTES else self.cfg
            lr = getattr(cfg, f"lr_{name}", getattr(source, f"lr_{name}"))
            groups.append({"name": name, "params": [t], "lr": float(lr)})
        groups.append({"name": "environment", "params": [self.environment.log_radiance],
                       "lr": float(getattr(cfg, "lr_environment", self.pbr_cfg.lr_environment))})
        return groups

    # --- files ----------------------------------------------------------------------------------

    def export(self, path: str | Path) -> Path:
        """Write model_pbr-style .ply: the standard 3DGS fields plus the PBR fields (renderers.gaussian.pbr_ply)."""
        from renderers.gaussian.pbr_ply import save_pbr_ply

        path = Path(path)
        return save_pbr_ply(path if path.suffix.lower() == ".ply" else path.with_suffix(".ply"), self)
