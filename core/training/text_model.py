"""Architecture of the built-in text-and-camera prior: Stable Diffusion's components, small.

    tokenizer/     closed word-level vocabulary: the procedural world's caption and view words
    text_encoder/  CLIPTextModel, trained from scratch with the UNet
    vae/           AutoencoderKL, 32 px RGB <-> 8x8x8 latents (two 2x downsamplings)
    unet/          UNet2DConditionModel: cross-attention to the text, camera features through a
                   "projection" class embedding added to the time embedding (MVDream-style
                   camera conditioning, against multi-face objects)
    scheduler/     DDPM config: cosine betas, v-prediction

The tokenizer knows only its words and maps any other word to its unknown token, so
`StableDiffusionPrior.condition` can tell a user which words it does not know.
Camera features follow `core.priors.stable_diffusion.camera_features(cameras, CAMERA_DIM)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from core.data.procedural import CAPTION_WORDS, VIEW_WORDS

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>", "<|unknown|>")


@dataclass
class TextPriorConfig:
    """Sizes of the built-in prior. max_tokens: the longest caption ("a shiny checkered
    yellow cylinder, overhead view") is 10 tokens with start and end; 16 leaves room."""

    resolution: int = 32
    latent_channels: int = 8
    vae_channels: tuple[int, ...] = (16, 32, 64)
    text_dim: int = 64
    text_layers: int = 2
    max_tokens: int = 16
    unet_channels: tuple[int, ...] = (64, 128, 128)
    unet_layers_per_block: int = 1
    attention_head_dim: int = 32
    camera_dim: int = 14  # 6 base features + sin/cos of 2x and 3x elevation and azimuth
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"

    @property
    def latent_size(self) -> int:
        return self.resolution // 2 ** (len(self.vae_channels) - 1)


def build_tokenizer(words: list[str] | None = None, max_tokens: int = 16) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words` (default: the world's caption and view words).

    Lower-cases, splits on whitespace and punctuation, frames with <|startoftext|> ...
    <|endoftext|>, pads with <|endoftext|> (as CLIP), and maps unknown words to <|unknown|>.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    words = list(dict.fromkeys(words if words is not None else CAPTION_WORDS + VIEW_WORDS))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w.lower(), len(vocab))
    bos, eos, unk = SPECIAL_TOKENS
    backend = Tokenizer(WordLevel(vocab, unk_token=unk))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # "cube," -> "cube", ","
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} $B {eos}",
        special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=eos,
                                   unk_token=unk, model_max_length=max_tokens)


def build_text_encoder(cfg: TextPriorConfig, vocab_size: int) -> CLIPTextModel:
    """CLIPTextModel of `text_layers` layers, `text_dim` wide, `max_tokens` positions (~0.1M params)."""
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=cfg.text_dim, intermediate_size=2 * cfg.text_dim,
        num_hidden_layers=cfg.text_layers, num_attention_heads=max(1, cfg.text_dim // 32),
        max_position_embeddings=cfg.max_tokens, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        projection_dim=cfg.text_dim))


def build_vae(cfg: TextPriorConfig) -> AutoencoderKL:
    """AutoencoderKL, 2x downsampling per level after the first: 32 px -> latent_size px.
    8x8 latents make a UNet step ~3x cheaper than 16x16 ones on a CPU; 8 channels (512
    numbers for 3072 pixels) keep the silhouettes the shape words depend on."""
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=cfg.latent_channels, block_out_channels=cfg.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=8, sample_size=cfg.resolution, scaling_factor=1.0)


def build_unet(cfg: TextPriorConfig) -> UNet2DConditionModel:
    """UNet on latent_size latents: plain ResNet blocks at full latent resolution (attention
    there is the costliest part on a CPU), cross-attention blocks below."""
    n = len(cfg.unet_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=cfg.latent_size, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        layers_per_block=cfg.unet_layers_per_block, block_out_channels=cfg.unet_channels,
        down_block_types=down, up_block_types=up, mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=cfg.text_dim, attention_head_dim=cfg.attention_head_dim, norm_num_groups=32,
        class_embed_type="projection", projection_class_embeddings_input_dim=cfg.camera_dim)


def build_scheduler(cfg: TextPriorConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type=cfg.prediction_type, clip_sample=False)
