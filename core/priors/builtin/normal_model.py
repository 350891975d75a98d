"""The built-in image-to-normal network (`builtin:normals`): a small U-Net trained on the
procedural world's normal maps (train_normals.py), DreamPolish's normal teacher when no
Marigold checkpoint is at hand.

Three levels (32 -> 16 -> 8 px at the world's resolution), two 3x3 convolutions with
GroupNorm and SiLU per level, skip connections by concatenation. Two coordinate channels
(x, y in [-1,1]) join the image: under perspective the same shading means a slightly
different normal at the image's edge than at its centre.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class NormalNetConfig:
    """channels: width of each level (finest first); groups: GroupNorm groups."""

    channels: tuple[int, int, int] = (32, 64, 96)
    groups: int = 8


def _block(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU())


class ImageUNet(nn.Module):
    """images [B,3,H,W] in [0,1] -> raw maps [B,out_channels,H,W]: the U-Net above with the
    image and its pixel coordinates (x right, y up, in [-1,1]) as input. Sizes that do not
    divide by 4 are edge-padded and cropped. The built-in normal and depth networks are
    this body with their own head and output mapping."""

    def __init__(self, cfg: NormalNetConfig, out_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.channels
        self.down1 = _block(3 + 2, c1, cfg.groups)
        self.down2 = _block(c1, c2, cfg.groups)
        self.mid = _block(c2, c3, cfg.groups)
        self.up2 = _block(c3 + c2, c2, cfg.groups)
        self.up1 = _block(c2 + c1, c1, cfg.groups)
        self.head = nn.Conv2d(c1, out_channels, 1)

    def forward(self, images: Tensor) -> Tensor:
        B, _, H, W = images.shape
        ys = torch.linspace(1, -1, H, device=images.device, dtype=images.dtype)  # y up, as the normals
        xs = torch.linspace(-1, 1, W, device=images.device, dtype=images.dtype)
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0).expand(B, 2, H, W)
        x = F.pad(torch.cat([images * 2 - 1, coords], 1), (0, -W % 4, 0, -H % 4), mode="replicate")
        x1 = self.down1(x)
        x2 = self.down2(F.avg_pool2d(x1, 2))
        x3 = self.mid(F.avg_pool2d(x2, 2))
        y2 = self.up2(torch.cat([F.interpolate(x3, scale_factor=2, mode="nearest"), x2], 1))
        y1 = self.up1(torch.cat([F.interpolate(y2, scale_factor=2, mode="nearest"), x1], 1))
        return self.head(y1)[:, :, :H, :W]


class NormalNet(ImageUNet):
    """images [B,3,H,W] in [0,1] -> unit camera-space normals [B,3,H,W] (OpenGL axes: x right,
    y up, z toward the viewer). Sizes that do not divide by 4 are edge-padded and cropped."""

    def __init__(self, cfg: NormalNetConfig | None = None) -> None:
        super().__init__(cfg or NormalNetConfig(), 3)

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(super().forward(images), dim=1, eps=1e-6)


def save_normal_net(model: NormalNet, folder: str | Path, extra: dict | None = None) -> Path:
    """Write `folder`/model.safetensors and config.json (the architecture plus `extra`,
    e.g. how it was trained)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps({"architecture": asdict(model.cfg), **(extra or {})}, indent=2) + "\n")
    return folder


def load_normal_net(folder: str | Path, device: str | torch.device = "cpu") -> NormalNet:
    """The network saved by `save_normal_net` in `folder`, frozen, in eval mode."""
    from safetensors.torch import load_file

    from core.priors.loading import PriorLoadError

    folder = Path(folder)
    missing = [name for name in (WEIGHTS, CONFIG) if not (folder / name).is_file()]
    if missing:
        raise PriorLoadError(f"{folder} lacks {', '.join(missing)}: train the built-in normal network with "
                             f"`python -m core.training.train_normals` (docs/builtin_normals.md)")
    arch = json.loads((folder / CONFIG).read_text())["architecture"]
    model = NormalNet(NormalNetConfig(channels=tuple(arch["channels"]), groups=arch["groups"]))
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model.to(device).eval().requires_grad_(False)
