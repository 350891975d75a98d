"""Tiny random checkpoints in the real on-disk layouts (Stable Diffusion, Zero123, Marigold).

Tests load them through the same public loaders as real checkpoints, so the loading code
is exercised without any download; the built-in prior's training starts from them too.
Everything is written with `save_pretrained`, and the tokenizer round-trips through
`CLIPTokenizer.from_pretrained` / `AutoTokenizer.from_pretrained` offline.

Sizes: 32x32 pixel images, a VAE with 2x downsampling (16x16x4 latents), UNets with
(16, 32) channels; each repo holds a few hundred thousand parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

VAE_CHANNELS = (8, 16)  # two levels: 2x downsampling
TEXT_DIM = 32
MAX_TOKENS = 77  # CLIP's context length, as real SD checkpoints
DEFAULT_WORDS = ("a", "photo", "of", "cat", "dog", "front", "side", "back", "overhead", "view", "blurry")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to one printable unicode character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def build_tiny_tokenizer(words: tuple[str, ...] | list[str] | None = None) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over single bytes plus whole-word merges for `words`.

    Any text tokenizes (unknown words fall back to one token per character); listed words
    become single tokens, as a real vocabulary would make them.
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in alphabet:
        vocab.setdefault(c, len(vocab))
    for c in alphabet:
        vocab.setdefault(c + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words if words is not None else DEFAULT_WORDS:
        word = word.lower()
        if not word.isalpha() or len(word) < 2:
            continue
        # Left-to-right merges: ("p","h") -> "ph", ("ph","o") -> "pho", ... ("phot","o</w>") -> "photo</w>".
        piece = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + ("</w>" if i == len(word) - 1 else "")
            merge = (piece, right)
            piece += right
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(piece, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def _text_encoder(vocab_size: int, seed: int) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        projection_dim=TEXT_DIM,
    )
    return CLIPTextModel(config)


def _vae(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=VAE_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        layers_per_block=1, norm_num_groups=8, sample_size=32, scaling_factor=0.18215,
    )


def _unet(sample_size: int, in_channels: int, cross_attention_dim: int, seed: int, **extra) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
        attention_head_dim=4, norm_num_groups=8, **extra,
    )
    # Random init leaves conv_out at tiny values; scale it so branches differ measurably in tests.
    with torch.no_grad():
        unet.conv_out.weight.mul_(10.0)
    return unet


def _latent_size(sample_size: int) -> int:
    factor = 2 ** (len(VAE_CHANNELS) - 1)
    if sample_size % (4 * factor):
        raise ValueError(f"sample_size must be a multiple of {4 * factor} pixels, got {sample_size}")
    return sample_size // factor


def _scheduler_kwargs(prediction_type: str) -> dict:
    # Stable Diffusion's schedule ("scaled_linear" betas 0.00085..0.012 over 1000 steps).
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type=prediction_type, clip_sample=False)


def build_tiny_stable_diffusion(
    path: str | Path,
    sample_size: int = 32,
    words: tuple[str, ...] | list[str] | None = None,
    class_embed_dim: int | None = None,
    prediction_type: str = "epsilon",
    seed: int = 0,
) -> Path:
    """Write a random Stable-Diffusion-format repo (tokenizer/, text_encoder/, unet/, vae/,
    scheduler/, model_index.json) for `sample_size`-pixel images and return its path.

    class_embed_dim: when set, the UNet takes camera features through a "projection" class
    embedding of that input size (see `stable_diffusion.camera_features`).
    prediction_type: "epsilon" (SD 1.x, SD 2 base) or "v_prediction" (SD 2.x 768).
    """
    path = Path(path)
    tokenizer = build_tiny_tokenizer(words)
    tokenizer.save_pretrained(path / "tokenizer")
    _text_encoder(len(tokenizer), seed).save_pretrained(path / "text_encoder")
    _vae(seed + 1).save_pretrained(path / "vae")
    extra = {}
    if class_embed_dim is not None:
        extra = dict(class_embed_type="projection", projection_class_embeddings_input_dim=class_embed_dim)
    _unet(_latent_size(sample_size), 4, TEXT_DIM, seed + 2, **extra).save_pretrained(path / "unet")
    DDPMScheduler(**_scheduler_kwargs(prediction_type)).save_pretrained(path / "scheduler")
    _write_model_index(path, "StableDiffusionPipeline", {
        "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    })
    return path


def build_tiny_zero123(path: str | Path, sample_size: int = 32, projection_folder: str = "clip_camera_projection",
                       seed: int = 0) -> Path:
    """Write a random zero123 repo in the diffusers layout DreamGaussian/threestudio load:
    unet/ (8 input channels: noisy latents + reference latents), vae/, image_encoder/
    (CLIPVisionModelWithProjection), feature_extractor/ (CLIPImageProcessor), scheduler/, and
    the camera projection Linear(embed + 4 -> embed) in `projection_folder`:
    "clip_camera_projection" (ashawkey/*-diffusers, weights `proj.*`) or "cc_projection"
    (kxic/zero123-*, weights `projection.*`).
    """
    from safetensors.torch import save_file

    path = Path(path)
    torch.manual_seed(seed)
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=TEXT_DIM,
    ))
    vision.save_pretrained(path / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path / "feature_extractor")
    _vae(seed + 1).save_pretrained(path / "vae")
    _unet(_latent_size(sample_size), 8, TEXT_DIM, seed + 2).save_pretrained(path / "unet")
    DDIMScheduler(**_scheduler_kwargs("epsilon")).save_pretrained(path / "scheduler")

    torch.manual_seed(seed + 3)
    linear = torch.nn.Linear(TEXT_DIM + 4, TEXT_DIM)
    prefix = "proj" if projection_folder == "clip_camera_projection" else "projection"
    folder = path / projection_folder
    folder.mkdir(parents=True, exist_ok=True)
    save_file({f"{prefix}.weight": linear.weight.detach().contiguous(), f"{prefix}.bias": linear.bias.detach()},
              str(folder / "diffusion_pytorch_model.safetensors"))
    config = ({"_class_name": "CLIPCameraProjection", "embedding_dim": TEXT_DIM, "additional_embeddings": 4}
              if prefix == "proj" else {"_class_name": "CCProjection", "in_channel": TEXT_DIM + 4,
                                        "out_channel": TEXT_DIM})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    _write_model_index(path, "Zero123Pipeline", {
        "vae": ["diffusers", "AutoencoderKL"], "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        projection_folder: ["zero123", config["_class_name"]],
    })
    return path


def build_tiny_marigold(path: str | Path, kind: str = "normals", sample_size: int = 32, seed: int = 0) -> Path:
    """Write a random Marigold repo loadable by `MarigoldNormalsPipeline` / `MarigoldDepthPipeline`:
    unet/ (8 input channels: image latents + prediction latents), vae/, text_encoder/,
    tokenizer/, scheduler/ (DDIM, v-prediction as Marigold), model_index.json with the
    pipeline's config (prediction_type, default steps and processing resolution).
    """
    if kind not in ("normals", "depth"):
        raise ValueError(f"kind must be 'normals' or 'depth', got {kind!r}")
    from diffusers import MarigoldDepthPipeline, MarigoldNormalsPipeline

    tokenizer = build_tiny_tokenizer(())
    components = dict(
        unet=_unet(_latent_size(sample_size), 8, TEXT_DIM, seed + 2),
        vae=_vae(seed + 1),
        scheduler=DDIMScheduler(**{**_scheduler_kwargs("v_prediction"), "timestep_spacing": "trailing",
                                   "set_alpha_to_one": False}),
        text_encoder=_text_encoder(len(tokenizer), seed),
        tokenizer=tokenizer,
        prediction_type=kind,
        default_denoising_steps=1,
        default_processing_resolution=sample_size,
    )
    pipe_cls = MarigoldNormalsPipeline if kind == "normals" else MarigoldDepthPipeline
    if kind == "depth":
        components.update(scale_invariant=True, shift_invariant=True)
    pipe_cls(**components).save_pretrained(path)
    return Path(path)


def _write_model_index(path: Path, class_name: str, components: dict[str, list[str]]) -> None:
    import diffusers

    index = {"_class_name": class_name, "_diffusers_version": diffusers.__version__, **components}
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
