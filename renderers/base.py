"""The renderer boundary: what every representation's `render` returns and the Scene contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from core.cameras import Cameras


@dataclass
class RenderOutput:
    """Channel-last renders of a batch of B cameras.

    rgb [B,H,W,3] in [0,1] (composited over the background), alpha [B,H,W,1] in [0,1],
    depth [B,H,W,1] expected z-depth along the camera axis (0 where alpha is 0),
    normal [B,H,W,3] world-space unit normals in [-1,1] or None, extras: backend specifics.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normal: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def chw(self) -> Tensor:
        """rgb as [B,3,H,W], the layout priors take."""
        return self.rgb.permute(0, 3, 1, 2)


@runtime_checkable
class Scene(Protocol):
    """A learnable representation with a differentiable renderer.

    Writing asset files is not part of it: core.export.assets.export_scene writes every
    scene (renderers sit below core/export, so they never call it). Scenes whose native
    format needs only core.io (Gaussians' .ply/.splat, NeRF and DMTet checkpoints) also
    have an `export(path) -> Path` of their own."""

    def render(self, cameras: Cameras, background: Tensor | None = None) -> RenderOutput:
        """background: [3] or [B,3] colour in [0,1] (None: the scene's own background)."""

    def param_groups(self, cfg: Any) -> list[dict]:
        """Optimizer parameter groups (name, params, lr) for this scene."""

    def update(self, step: int, out: RenderOutput) -> None:
        """After the optimizer step: densify / prune / refresh acceleration structures."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def as_background(background: Tensor | float | None, batch: int, device, default=(1.0, 1.0, 1.0)) -> Tensor:
    """[B,3] background colours from None, a scalar, [3] or [B,3]."""
    if background is None:
        background = torch.tensor(default)
    bg = torch.as_tensor(background, dtype=torch.float32, device=device)
    if bg.ndim == 0:
        bg = bg.expand(3)
    return bg.expand(batch, 3) if bg.ndim == 1 else bg
