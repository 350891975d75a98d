"""Monocular normal and depth estimators: the image-space teachers of normal guidance
(DreamPolish) and depth supervision (DreamScene4D).

Two interfaces, each with a Marigold implementation (diffusers' `MarigoldNormalsPipeline`
/ `MarigoldDepthPipeline`, a hub id or a folder) and a wrapper for any torch module mapping
images to normals or depth (the built-in small networks, trained on the procedural world:
"builtin:normals" names the image-to-normal network shipped in core/priors/builtin/normals/,
"builtin:depth" the depth network in core/priors/builtin/depth/):

    NormalEstimator.predict(images [B,3,H,W] in [0,1]) -> normals [B,3,H,W], unit vectors in
        camera space, OpenGL axes as `Cameras` (x right, y up, z towards the viewer), Marigold's frame.
    DepthEstimator.predict(images [B,3,H,W] in [0,1]) -> depth [B,1,H,W], relative
        (affine-invariant: compare after fitting scale and shift), larger is farther.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from core.priors.loading import (BUILTIN_PREFIX, PriorLoadError, load_component, resolve_device, resolve_dtype,
                                 resolve_source)

MARIGOLD_LAYOUT = "Marigold format"
MARIGOLD_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
BUILTIN_NORMALS = "builtin:normals"
BUILTIN_DEPTH = "builtin:depth"


@runtime_checkable
class NormalEstimator(Protocol):
    def predict(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] in [0,1] -> unit camera-space normals [B,3,H,W] in [-1,1]."""


@runtime_checkable
class DepthEstimator(Protocol):
    def predict(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] in [0,1] -> relative depth [B,1,H,W] (affine-invariant)."""


def _check_images(images: Tensor) -> Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B,3,H,W] in [0,1], got {tuple(images.shape)}")
    return images.clamp(0, 1)


class _Marigold:
    """A Marigold pipeline loaded frozen, run with few denoising steps, seeded per call."""

    pipeline_name = ""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", num_inference_steps: int | None = None,
                 ensemble_size: int = 1, processing_resolution: int | None = None, seed: int = 0) -> None:
        import diffusers

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        source = resolve_source(model, MARIGOLD_LAYOUT, MARIGOLD_FOLDERS)
        pipe_cls = getattr(diffusers, self.pipeline_name)
        self.pipe = load_component(pipe_cls, source, None, MARIGOLD_LAYOUT, dtype=self.dtype).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        for module in (self.pipe.unet, self.pipe.vae, self.pipe.text_encoder):
            module.requires_grad_(False).eval()
        self.num_inference_steps = num_inference_steps
        self.ensemble_size = ensemble_size
        self.processing_resolution = processing_resolution
        self.seed = seed

    @torch.no_grad()
    def _run(self, images: Tensor) -> Tensor:
        images = _check_images(images).to(self.device, torch.float32)
        generator = torch.Generator(self.device).manual_seed(self.seed)
        out = self.pipe(images, num_inference_steps=self.num_inference_steps, ensemble_size=self.ensemble_size,
                        processing_resolution=self.processing_resolution, batch_size=images.shape[0],
                        generator=generator, output_type="pt")
        return out.prediction.float()


class MarigoldNormals(_Marigold):
    """Marigold normals (e.g. "prs-eth/marigold-normals-v1-1") as a `NormalEstimator`."""

    pipeline_name = "MarigoldNormalsPipeline"

    def predict(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] in [0,1] -> unit normals [B,3,H,W] (x right, y up, z towards the viewer)."""
        return F.normalize(self._run(images), dim=1, eps=1e-6)


class MarigoldDepth(_Marigold):
    """Marigold depth (e.g. "prs-eth/marigold-depth-v1-1") as a `DepthEstimator`."""

    pipeline_name = "MarigoldDepthPipeline"

    def predict(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] in [0,1] -> affine-invariant depth [B,1,H,W] in [0,1] (larger is farther)."""
        depth = self._run(images)
        return depth if depth.ndim == 4 else depth[:, None]


class ModuleNormals:
    """Any callable (torch module) images [B,3,H,W] -> [B,3,H,W] as a `NormalEstimator`;
    its output is normalised to unit length."""

    def __init__(self, module: Callable[[Tensor], Tensor]) -> None:
        self.module = module

    def predict(self, images: Tensor) -> Tensor:
        normals = self.module(_check_images(images))
        if normals.ndim != 4 or normals.shape[1] != 3:
            raise ValueError(f"normal network must return [B,3,H,W], got {tuple(normals.shape)}")
        return F.normalize(normals.float(), dim=1, eps=1e-6)


class ModuleDepth:
    """Any callable (torch module) images [B,3,H,W] -> [B,1,H,W] as a `DepthEstimator`."""

    def __init__(self, module: Callable[[Tensor], Tensor]) -> None:
        self.module = module

    def predict(self, images: Tensor) -> Tensor:
        depth = self.module(_check_images(images))
        if depth.ndim != 4 or depth.shape[1] != 1:
            raise ValueError(f"depth network must return [B,1,H,W], got {tuple(depth.shape)}")
        return depth.float()


def load_builtin_normals(name: str = BUILTIN_NORMALS, device: str = "auto") -> ModuleNormals:
    """The shipped image-to-normal network (core/priors/builtin/normals/) as a `NormalEstimator`."""
    from core.priors.builtin.normal_model import load_normal_net

    if name != BUILTIN_NORMALS:
        raise PriorLoadError(f"unknown built-in normal estimator '{name}': the shipped one is '{BUILTIN_NORMALS}'; "
                             "other estimators are Marigold normals repos (hub id or folder)")
    folder = Path(__file__).parent / "builtin" / "normals"
    return ModuleNormals(load_normal_net(folder, resolve_device(device)))


def load_normal_estimator(source: str | Callable[[Tensor], Tensor], **marigold_kwargs) -> NormalEstimator:
    """The built-in network ("builtin:normals"), a Marigold normals repo (hub id or folder) or a
    torch module, as a `NormalEstimator`. For the built-in network only `device` of
    `marigold_kwargs` applies."""
    if isinstance(source, str) and source.startswith(BUILTIN_PREFIX):
        return load_builtin_normals(source, marigold_kwargs.get("device", "auto"))
    if isinstance(source, str):
        return MarigoldNormals(source, **marigold_kwargs)
    return source if isinstance(source, NormalEstimator) else ModuleNormals(source)


def load_builtin_depth(name: str = BUILTIN_DEPTH, device: str = "auto") -> ModuleDepth:
    """The shipped depth network (core/priors/builtin/depth/) as a `DepthEstimator`."""
    if name != BUILTIN_DEPTH:
        raise PriorLoadError(f"unknown built-in depth estimator '{name}': the shipped one is '{BUILTIN_DEPTH}'; "
                             "other estimators are Marigold depth repos (hub id or folder)")
    return load_depth_net_folder(Path(__file__).parent / "builtin" / "depth", device)


def load_depth_net_folder(folder: str | Path, device: str = "auto") -> ModuleDepth:
    """A folder written by `python -m core.training.train_depth --out FOLDER` as a `DepthEstimator`."""
    from core.priors.builtin.depth_model import load_depth_net

    return ModuleDepth(load_depth_net(folder, resolve_device(device)))


def load_depth_estimator(source: str | Callable[[Tensor], Tensor], **marigold_kwargs) -> DepthEstimator:
    """The built-in network ("builtin:depth"), a folder holding a trained built-in-format
    network (model.safetensors + config.json, no unet/), a Marigold depth repo (hub id or
    folder) or a torch module, as a `DepthEstimator`. For the built-in format only `device`
    of `marigold_kwargs` applies."""
    if isinstance(source, str) and source.startswith(BUILTIN_PREFIX):
        return load_builtin_depth(source, marigold_kwargs.get("device", "auto"))
    if isinstance(source, str):
        folder = Path(source).expanduser()
        if (folder / "model.safetensors").is_file() and not (folder / "unet").is_dir():
            return load_depth_net_folder(folder, marigold_kwargs.get("device", "auto"))
        return MarigoldDepth(source, **marigold_kwargs)
    return source if isinstance(source, DepthEstimator) else ModuleDepth(source)
