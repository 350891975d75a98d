"""What rays see after leaving the scene: a solid colour, one learned colour, or a small MLP
on the view direction (threestudio's neural environment background)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

BACKGROUND_KINDS = ("solid", "learned", "mlp")


class Background(nn.Module):
    """dirs [N,3] unit world directions -> rgb [N,3] in [0,1]."""

    def __init__(self, kind: str = "solid", color: tuple[float, float, float] = (1.0, 1.0, 1.0), hidden_dim: int = 32):
        super().__init__()
        if kind not in BACKGROUND_KINDS:
            raise ValueError(f"background must be one of {BACKGROUND_KINDS}, got {kind!r}")
        self.kind = kind
        color_tensor = torch.tensor(color, dtype=torch.float32)
        if kind == "solid":
            self.register_buffer("color", color_tensor)
        elif kind == "learned":
            # Stored as logits so the colour stays in [0,1] under any optimizer step.
            self.color_logit = nn.Parameter(torch.logit(color_tensor.clamp(1e-3, 1 - 1e-3)))
        else:
            self.mlp = nn.Sequential(nn.Linear(3, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, 3))

    def forward(self, dirs: Tensor) -> Tensor:
        if self.kind == "solid":
            return self.color.expand(dirs.shape[0], 3)
        if self.kind == "learned":
            return torch.sigmoid(self.color_logit).expand(dirs.shape[0], 3)
        return torch.sigmoid(self.mlp(dirs))
