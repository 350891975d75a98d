"""The built-in monocular depth network (`builtin:depth`): the U-Net of the built-in normal
network (`normal_model.ImageUNet`) with a one-channel head, trained on procedural scenes
(core/data/depth_scenes.py) with a scale-and-shift-invariant loss
(core/training/depth_alignment.py); DreamScene4D's depth teacher when no Marigold
checkpoint is at hand.

Output convention (the `DepthEstimator` protocol's and Marigold's): relative depth in
[0,1], larger is farther, affine-invariant: the head's raw map, trained to match true
depth up to a positive scale and a shift, is min-max normalised per image.

Like Marigold it works at a processing resolution: an image is resized (area) so its
longer side is `processing_resolution`, the map predicted there and resized back
(bilinear) to the input's size; the network only ever sees the scale it was trained at.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from core.priors.builtin.normal_model import CONFIG, WEIGHTS, ImageUNet, NormalNetConfig


@dataclass
class DepthNetConfig:
    """channels: width of each U-Net level (finest first); groups: GroupNorm groups;
    processing_resolution: the longer side images are resized to (the training size)."""

    channels: tuple[int, int, int] = (24, 48, 96)
    groups: int = 8
    processing_resolution: int = 48


class DepthNet(ImageUNet):
    """images [B,3,H,W] in [0,1] -> relative depth [B,1,H,W] in [0,1], larger is farther."""

    def __init__(self, cfg: DepthNetConfig | None = None) -> None:
        cfg = cfg or DepthNetConfig()
        super().__init__(NormalNetConfig(channels=tuple(cfg.channels), groups=cfg.groups), 1)
        self.depth_cfg = cfg

    def relative_depth(self, images: Tensor) -> Tensor:
        """The head's raw map [B,1,H,W] at the images' own size (what the loss sees)."""
        return super().forward(images)

    def forward(self, images: Tensor) -> Tensor:
        H, W = images.shape[-2:]
        side = self.depth_cfg.processing_resolution
        size = (max(1, round(H * side / max(H, W))), max(1, round(W * side / max(H, W))))
        x = images if (H, W) == size else F.interpolate(images, size=size, mode="area")
        raw = self.relative_depth(x)
        if (H, W) != size:
            raw = F.interpolate(raw, size=(H, W), mode="bilinear", align_corners=False)
        lo = raw.amin((1, 2, 3), keepdim=True)
        hi = raw.amax((1, 2, 3), keepdim=True)
        return (raw - lo) / (hi - lo).clamp_min(1e-6)


def save_depth_net(model: DepthNet, folder: str | Path, extra: dict | None = None, half: bool = True) -> Path:
    """Write `folder`/model.safetensors (float16 when `half`) and config.json (the
    architecture plus `extra`, e.g. how it was trained)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    save_file({k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps({"architecture": asdict(model.depth_cfg), **(extra or {})}, indent=2) + "\n")
    return folder


def load_depth_net(folder: str | Path, device: str | torch.device = "cpu") -> DepthNet:
    """The network saved by `save_depth_net` in `folder`, float32, frozen, in eval mode.
    A folder without it, or with weights that do not fit its config, is a PriorLoadError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from core.priors.loading import PriorLoadError

    folder = Path(folder)
    missing = [name for name in (WEIGHTS, CONFIG) if not (folder / name).is_file()]
    if missing:
        raise PriorLoadError(f"{folder} lacks {', '.join(missing)}: train the built-in depth network with "
                             f"`python -m core.training.train_depth` (docs/builtin_depth.md)")
    try:
        arch = json.loads((folder / CONFIG).read_text())["architecture"]
        model = DepthNet(DepthNetConfig(channels=tuple(arch["channels"]), groups=arch["groups"],
                                        processing_resolution=arch["processing_resolution"]))
        model.load_state_dict({k: v.float() for k, v in load_file(str(folder / WEIGHTS)).items()})
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        # ValueError covers a config that is not JSON; RuntimeError, load_state_dict's shape/key mismatch
        raise PriorLoadError(f"{folder} does not hold a built-in depth network ({type(e).__name__}: {e}); "
                             "retrain it with `python -m core.training.train_depth`") from e
    return model.to(device).eval().requires_grad_(False)
