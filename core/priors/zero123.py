"""Zero123: a view-conditioned prior for image-to-3D (Liu et al. 2023), as DreamGaussian,
DreamScene4D and threestudio use it for score distillation.

Repo layout (diffusers format, e.g. "ashawkey/zero123-xl-diffusers", "kxic/zero123-xl"):
unet/ (8 input channels: noisy latents + reference latents), vae/, image_encoder/
(CLIPVisionModelWithProjection), feature_extractor/ (CLIP preprocessing), scheduler/, and a
Linear(D + 4 -> D) camera projection in clip_camera_projection/ (weights `proj.*`) or
cc_projection/ (weights `projection.*`). The projection is read as a plain Linear from its
weights file, so neither repo's custom pipeline class is needed.

Conditioning, as the original model was trained:
    embeds = projection([CLIP image embedding of the reference, camera embedding])  [B,1,D]
    x_in   = [x_t, VAE posterior mode of the reference (unscaled)]                 channel-wise
and the unconditional branch zeroes both, as zero123's classifier-free guidance does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.cameras import Cameras
from core.priors import PriorConfig
from core.priors.base import Cond
from core.priors.loading import PriorLoadError, fetch_file, freeze, load_component, resolve_source
from core.priors.stable_diffusion import LatentDiffusionPrior

ZERO123_LAYOUT = "zero123 diffusers format"
ZERO123_FOLDERS = ("unet", "vae", "image_encoder", "scheduler")
PROJECTION_FOLDERS = ("clip_camera_projection", "cc_projection")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# OpenAI CLIP preprocessing, used when a repo has no feature_extractor/.
CLIP_SIZE, CLIP_MEAN, CLIP_STD = 224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def zero123_camera_embedding(d_elevation_deg: Tensor, d_azimuth_deg: Tensor, d_radius: Tensor,
                             reference_elevation_deg: float = 0.0, style: str = "zero123") -> Tensor:
    """[B,4] relative-pose embedding of zero123 from [B] deltas (target minus reference).

    zero123:        [d_polar, sin(d_azimuth), cos(d_azimuth), d_radius]
    stable_zero123: [d_polar, sin(d_azimuth), cos(d_azimuth), polar angle of the reference]
    Angles in radians. The polar angle is measured from the up axis (90 deg - elevation),
    so d_polar = -d_elevation; azimuth as `Cameras.spherical` (from +X towards +Y), as threestudio.
    """
    d_polar = torch.deg2rad(-d_elevation_deg.float())
    d_az = torch.deg2rad(d_azimuth_deg.float())
    if style == "zero123":
        last = d_radius.float()
    elif style == "stable_zero123":
        last = torch.full_like(d_polar, float(torch.deg2rad(torch.tensor(90.0 - reference_elevation_deg))))
    else:
        raise ValueError(f"unknown zero123 camera style {style!r}")
    return torch.stack([d_polar, d_az.sin(), d_az.cos(), last], dim=-1)


class Zero123Prior(LatentDiffusionPrior):
    """Image-and-relative-camera conditioned teacher; same predict_noise/denoiser contract as
    `StableDiffusionPrior`. `condition(reference, cameras=...)` takes the reference image
    in place of a prompt."""

    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__(cfg)
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPVisionModelWithProjection

        source = resolve_source(cfg.model, ZERO123_LAYOUT, ZERO123_FOLDERS, PROJECTION_FOLDERS)
        kwargs = self._load_kwargs()
        self.source = source
        self.image_encoder = freeze(load_component(CLIPVisionModelWithProjection, source, "image_encoder",
                                                   ZERO123_LAYOUT, **kwargs)).to(self.device)
        self.unet = load_component(UNet2DConditionModel, source, "unet", ZERO123_LAYOUT, **kwargs)
        self.vae = load_component(AutoencoderKL, source, "vae", ZERO123_LAYOUT, **kwargs)
        self._setup(source, ZERO123_LAYOUT)
        if self.unet.config.in_channels != 2 * self.latent_channels:
            raise PriorLoadError(f"unet/ of '{source}' takes {self.unet.config.in_channels} input channels; zero123 "
                                 f"needs {2 * self.latent_channels} (noisy + reference latents): {ZERO123_LAYOUT}")
        self.projection = freeze(_load_projection(source, cfg.revision)).to(self.device, self.dtype)
        self.clip_size, self.clip_mean, self.clip_std = _clip_preprocessing(source, cfg.revision)
        style = cfg.zero123_camera
        if style == "auto":
            style = "stable_zero123" if "stable" in cfg.model.lower() else "zero123"
        self.camera_style = style
        self._reference: tuple[Tensor, Tensor, Tensor] | None = None

    @torch.no_grad()
    def reference_embeddings(self, reference: Tensor) -> tuple[Tensor, Tensor]:
        """reference [1,3,H,W] in [0,1] -> (CLIP image embedding [1,1,D], reference latents
        [1,4,h,w]: VAE posterior mode, unscaled, as zero123's c_concat). Cached for the last image."""
        if reference.ndim != 4 or reference.shape[:2] != (1, 3):
            raise ValueError(f"reference must be one image [1,3,H,W] in [0,1], got {tuple(reference.shape)}")
        reference = reference.detach().to(self.device, torch.float32)
        cached = self._reference
        if cached is not None and cached[0].shape == reference.shape and torch.equal(cached[0], reference):
            return cached[1], cached[2]
        clip_in = F.interpolate(reference, (self.clip_size, self.clip_size), mode="bilinear", align_corners=False,
                                antialias=True)
        mean = torch.tensor(self.clip_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.clip_std, device=self.device).view(1, 3, 1, 1)
        clip = self.image_encoder(((clip_in - mean) / std).to(self.dtype)).image_embeds[:, None]
        latents = self.vae.encode(self._to_model_pixels(reference)).latent_dist.mode()
        self._reference = (reference.clone(), clip, latents)
        return clip, latents

    def relative_pose(self, cameras: Cameras | Tensor) -> Tensor:
        """[B,4] camera embedding of `cameras` relative to the reference view (cfg.reference_*).

        cameras: `Cameras`, or a [B,3] tensor of deltas (elevation deg, azimuth deg, radius).
        """
        if isinstance(cameras, Cameras):
            el, az, radius = cameras.spherical()
            ref_radius = radius if self.cfg.reference_radius is None else self.cfg.reference_radius
            deltas = (el - self.cfg.reference_elevation_deg, az - self.cfg.reference_azimuth_deg, radius - ref_radius)
        else:
            if cameras.ndim != 2 or cameras.shape[1] != 3:
                raise ValueError(f"relative cameras must be [B,3] (d_elevation, d_azimuth, d_radius), "
                                 f"got {tuple(cameras.shape)}")
            deltas = cameras.float().unbind(-1)
        return zero123_camera_embedding(*deltas, self.cfg.reference_elevation_deg, self.camera_style).to(self.device)

    def condition(self, reference: Tensor, negative_prompt: str = "", cameras: Cameras | Tensor | None = None) -> Cond:
        """Conditioning for B target views of `reference` [1,3,H,W] in [0,1].

        cameras: B target cameras (`Cameras`, made relative to cfg.reference_*) or [B,3]
        deltas; None means the reference view itself (B = 1). `negative_prompt` is unused:
        zero123's unconditional branch is all zeros.
        Returns embeds [B,1,D], uncond_embeds zeros, extras["concat"] [B,4,h,w].
        """
        clip, latents = self.reference_embeddings(reference)
        pose = self.relative_pose(torch.zeros(1, 3) if cameras is None else cameras)
        B = pose.shape[0]
        with torch.no_grad():
            embeds = self.projection(torch.cat([clip.expand(B, 1, -1), pose[:, None].to(self.dtype)], dim=-1))
        return Cond(embeds, torch.zeros_like(embeds), None, extras={"concat": latents.expand(B, -1, -1, -1)})

    def _uncond_concat(self, cond: Cond) -> Tensor:
        return torch.zeros_like(cond.extras["concat"])


def _load_projection(source: str, revision: str | None) -> nn.Linear:
    """The camera projection Linear(D + 4 -> D) from either repo layout's weights file."""
    folders = [f for f in PROJECTION_FOLDERS if (Path(source).expanduser() / f).is_dir()] or list(PROJECTION_FOLDERS)
    errors = []
    for folder in folders:
        try:
            path = fetch_file(source, folder, WEIGHT_FILES, ZERO123_LAYOUT, revision)
            break
        except PriorLoadError as e:
            errors.append(e)
    else:
        raise errors[-1]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    weights = [k for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    if len(weights) != 1:
        raise PriorLoadError(f"{path}: expected one Linear weight (proj.weight or projection.weight), "
                             f"found {sorted(state)}")
    weight = state[weights[0]]
    bias = state.get(weights[0][: -len("weight")] + "bias")
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _clip_preprocessing(source: str, revision: str | None) -> tuple[int, tuple, tuple]:
    """(square input size, mean, std) of the CLIP image encoder, from feature_extractor/ if present."""
    try:
        path = fetch_file(source, "feature_extractor", ("preprocessor_config.json",), ZERO123_LAYOUT, revision)
    except PriorLoadError:
        return CLIP_SIZE, CLIP_MEAN, CLIP_STD
    config = json.loads(path.read_text())
    crop = config.get("crop_size", CLIP_SIZE)
    size = crop.get("height", CLIP_SIZE) if isinstance(crop, dict) else int(crop)
    return size, tuple(config.get("image_mean", CLIP_MEAN)), tuple(config.get("image_std", CLIP_STD))
