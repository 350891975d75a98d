"""What the prior sees behind the object during distillation.

An object rendered over one fixed colour can grow geometry of that colour for free: to the
prior an opaque white Gaussian in a torus's hole is as good as white background. Two
remedies from the literature, chosen per stage:

- "random": each view is composited over a uniform random solid colour with probability
  `random_prob`, else over `color` (DreamGaussian flips white/black with probability 0.5;
  threestudio's random background augmentation). A background-coloured filler is then
  wrong in most views.
- "learned": one colour, optimised with the scene (threestudio's learned background), so the
  background can take whatever colour the prior prefers while the object cannot hide in it.
- "scene": the scene's own background (GaussianConfig.background etc.), as before.

Both remedies assume the prior knows objects over other backgrounds. A prior trained over
white only repaints black, grey or random backgrounds toward light grey and so asks for
*more* pale geometry around the object over them (bench/prior_backgrounds.py). The built-in
text prior is trained over drawn backgrounds (core/data/procedural.py,
PRIOR_BACKGROUND_MIX) and keeps the colour it is given, so its Gaussian presets use
"random" with random_prob 0.5 as the Stable Diffusion presets do (docs/clean_assets.md);
the built-in Zero123 is trained with its targets over the same mix (the reference over
white), so the image-to-3D preset's Gaussian stage does too. `nerf_sds` keeps "scene": its
density regulariser already leaves no white filler, and random colours turned its pyramids
into cones; `mesh_dsd` learns only the colours of a fixed closed mesh, so there is no
geometry for a background to become.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

BackgroundKind = Literal["scene", "random", "learned"]


@dataclass
class BackgroundConfig:
    """kind: see the module docstring; color [3] in [0,1]: the non-random colour (random) or
    the initial one (learned); random_prob in [0,1]; lr: Adam rate of the learned colour."""

    kind: BackgroundKind = "scene"
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    random_prob: float = 0.5
    lr: float = 1e-2

    def __post_init__(self) -> None:
        if self.kind not in ("scene", "random", "learned"):
            raise ValueError(f"background.kind must be scene, random or learned, got {self.kind!r}")
        if not 0 <= self.random_prob <= 1:
            raise ValueError(f"background.random_prob must be in [0,1], got {self.random_prob}")
        if len(self.color) != 3 or not all(0 <= c <= 1 for c in self.color):
            raise ValueError(f"background.color must be three numbers in [0,1], got {self.color}")


class DistillationBackground(nn.Module):
    """Backgrounds for the B views of a step: None ("scene"), or [B,3] in [0,1].

    Random colours are a pure function of (seed, step), so a resumed run draws the same
    ones; the learned colour is a parameter (logits, so it stays in [0,1]) to optimise."""

    def __init__(self, cfg: BackgroundConfig, seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        if cfg.kind == "learned":
            colour = torch.tensor(cfg.color, dtype=torch.float32).clamp(1e-3, 1 - 1e-3)
            self.color_logit = nn.Parameter(torch.logit(colour))

    def param_groups(self) -> list[dict]:
        """The learned colour's Adam group (none for the other kinds)."""
        if self.cfg.kind != "learned":
            return []
        return [{"name": "background", "params": [self.color_logit], "lr": self.cfg.lr}]

    def forward(self, step: int, views: int, device: torch.device | str = "cpu") -> Tensor | None:
        if self.cfg.kind == "scene":
            return None
        if self.cfg.kind == "learned":
            return torch.sigmoid(self.color_logit).to(device).expand(views, 3)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        random = torch.rand(views, 3, generator=generator)
        use_random = torch.rand(views, 1, generator=generator) < self.cfg.random_prob
        fixed = torch.tensor(self.cfg.color, dtype=torch.float32).expand(views, 3)
        return torch.where(use_random, random, fixed).to(device)
