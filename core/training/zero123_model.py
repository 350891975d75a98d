"""Architecture of the built-in Zero123 prior: zero123's components (Liu et al. 2023), small.

    vae/                    the built-in text prior's AutoencoderKL (same world, 32 px <-> 8x8x8
                            latents), copied unchanged and kept frozen
    image_encoder/          CLIPVisionModelWithProjection at 32 px (patch 4), trained from scratch
    feature_extractor/      CLIPImageProcessor with crop_size 32, so the loader does not upsample
                            the reference to CLIP's 224 px
    clip_camera_projection/ Linear(D + 4 -> D), weights `proj.*`: [image embedding, camera
                            embedding] -> the one cross-attention token
    unet/                   UNet2DConditionModel, 2 x 8 input channels (noisy latents + the
                            reference's unscaled posterior mode), cross-attention to that token
    scheduler/              DDPM config: cosine betas, v-prediction (as the text prior)

`core.priors.zero123.Zero123Prior` loads the folder as any zero123 checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import UNet2DConditionModel
from torch import nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from core.priors.zero123 import CLIP_MEAN, CLIP_STD

CAMERA_EMBEDDING_DIM = 4  # zero123's [d_polar, sin d_azimuth, cos d_azimuth, d_radius]


@dataclass
class Zero123PriorConfig:
    """Sizes of the built-in Zero123 prior. The VAE and schedule are the text prior's
    (`core.training.text_model.TextPriorConfig`); `embed_dim` is the CLIP projection
    width and the UNet's cross-attention width."""

    resolution: int = 32
    latent_channels: int = 8
    latent_size: int = 8
    vision_width: int = 64
    vision_layers: int = 2
    patch_size: int = 4
    embed_dim: int = 64
    unet_channels: tuple[int, ...] = (64, 128, 128)
    unet_layers_per_block: int = 1
    attention_head_dim: int = 32


class CameraProjection(nn.Module):
    """zero123's `clip_camera_projection`: Linear(D + 4 -> D) saved as `proj.*`."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(embed_dim + CAMERA_EMBEDDING_DIM, embed_dim)

    def forward(self, x):
        return self.proj(x)


def build_image_encoder(cfg: Zero123PriorConfig) -> CLIPVisionModelWithProjection:
    """CLIP vision tower at `resolution` px: (32/4)^2 = 64 patches + the class token."""
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=cfg.vision_width, intermediate_size=2 * cfg.vision_width, num_hidden_layers=cfg.vision_layers,
        num_attention_heads=max(1, cfg.vision_width // 32), image_size=cfg.resolution, patch_size=cfg.patch_size,
        projection_dim=cfg.embed_dim))


def build_feature_extractor(cfg: Zero123PriorConfig) -> CLIPImageProcessor:
    """OpenAI CLIP normalisation at the world's resolution (the loader reads crop_size, mean, std)."""
    size = cfg.resolution
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def build_unet(cfg: Zero123PriorConfig) -> UNet2DConditionModel:
    """The text prior's UNet layout with the reference latents stacked on the input channels
    and no class embedding: the camera reaches it through the projected token, as in zero123."""
    n = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=cfg.latent_size, in_channels=2 * cfg.latent_channels, out_channels=cfg.latent_channels,
        layers_per_block=cfg.unet_layers_per_block, block_out_channels=cfg.unet_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",), mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=cfg.embed_dim, attention_head_dim=cfg.attention_head_dim, norm_num_groups=32)
