"""Training the built-in Zero123 prior on pairs of views of procedural objects.

    python -m core.training.train zero123 --out core/priors/builtin/zero123 --minutes 60

Two phases, resumable from checkpoints in the cache folder (never committed); re-running
the command continues where a killed run stopped (docs/builtin_prior.md):

1. render: `views` views of each procedural object (seeds PRIOR_SEED_START + i, view v
   drawn as `ProceduralWorld.pair` draws views 0 and 1) into uint8 shards, each view twice:
   over white (a reference, as image-to-3D feeds one) and over the object's drawn background
   (a target, as score distillation renders one: `PRIOR_BACKGROUND_MIX`, so the prior does
   not repaint a random-colour view white); any two views of an object make a training
   pair, in either order.
2. unet: CLIP image encoder + camera projection + UNet trained jointly on the latents of
   the text prior's VAE (frozen, copied into the output), v-prediction with Min-SNR
   weighting, reference dropout for classifier-free guidance, EMA weights. Pairs are drawn
   with `shape_weights`: cubes and pyramids are the shapes whose look tells which way the
   camera turned (the key light turns with the camera, so a body of revolution looks the
   same from every azimuth), so they are drawn more often than their share of the world.

The whole command fits in `--minutes` of wall time: the UNet phase gets what rendering and
encoding left, its step count fixed after 20 timed steps. One CPU thread throughout.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from core.data.classifier import over_background
from core.data.procedural import (PRIOR_BACKGROUND_MIX, PRIOR_SEED_START, ProceduralWorld, ProceduralWorldConfig,
                                  sample_background, sample_camera_params)
from core.data.procedural_shapes import SHAPES
from core.priors.builtin import TEXT_PRIOR, ZERO123_PRIOR
from core.training.common import (SAVE_MARGIN_S, SHARD, DiffusionTrainConfig, StepTracker, encode_latents,
                                          load_checkpoint, load_shards, lr_at_step, optimizer_step, resume_schedule, save_checkpoint,
                                          v_prediction_loss, world_key, write_shards)
from core.priors.zero123 import CLIP_MEAN, CLIP_STD, zero123_camera_embedding

@dataclass
class Zero123TrainConfig(DiffusionTrainConfig):
    """Data and budget. `steps` None: as many UNet steps as fit in what is left of `minutes`
    after rendering, fixed after 20 timed steps and stored in the checkpoint; pass steps to
    reproduce a run exactly. shape_weights: how much more often than the others an object
    of that shape is drawn (absent shapes weigh 1)."""

    objects: int = 16 * SHARD
    views: int = 3
    minutes: float = 60.0
    steps: int | None = None
    p_drop_reference: float = 0.1
    shape_weights: dict[str, float] = field(default_factory=lambda: {"cube": 2.5, "pyramid": 2.5})

    def __post_init__(self) -> None:
        unknown = set(self.shape_weights) - set(SHAPES)
        if unknown or any(w <= 0 for w in self.shape_weights.values()):
            raise ValueError(f"shape_weights must map shapes from {SHAPES} to positive weights, got {self.shape_weights}")


def zero123_world(resolution: int) -> ProceduralWorld:
    """The world the prior trains on: the text prior's objects and cameras, targets over
    `PRIOR_BACKGROUND_MIX` (references are rendered over white, `render_views`)."""
    return ProceduralWorld(ProceduralWorldConfig(resolution=resolution, background_mix=PRIOR_BACKGROUND_MIX))


# -- phase 1: the pair cache --------------------------------------------------------------------


def render_views(world: ProceduralWorld, seeds: list[int], views: int) -> tuple[Tensor, Tensor, Tensor]:
    """Views 0..views-1 of each object in `seeds`, in one rasteriser call: images over white
    and targets over the object's `sample_background`, each uint8 [n,views,3,H,W], and
    cameras [n,views,4] (elevation, azimuth, radius, fov_y in degrees). Views 0 and 1 are
    `world.pair(seed)`'s cameras; the targets are the white renders re-composited,
    I_w - (1 - alpha)(1 - b) (compositing is linear)."""
    specs = [world.spec(seed) for seed in seeds]
    params = [sample_camera_params(seed, world.cfg, v) for seed in seeds for v in range(views)]
    rgb, alpha = world.render([spec for spec in specs for _ in range(views)], world.cameras(params), (1.0, 1.0, 1.0))
    bg = torch.tensor([sample_background(seed, world.cfg) for seed in seeds]).repeat_interleave(views, 0)
    over_bg = over_background(rgb, alpha, bg)

    def as_uint8(x: Tensor) -> Tensor:
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).reshape(len(specs), views, *x.shape[1:])

    return as_uint8(rgb), as_uint8(over_bg), torch.tensor(params, dtype=torch.float32).reshape(len(specs), views, 4)


def render_pair_cache(cache_dir: str | Path, n_objects: int, views: int = 3, world: ProceduralWorld | None = None,
                      first_seed: int = PRIOR_SEED_START, progress: bool = True) -> list[Path]:
    """Render `views` views of objects first_seed.. first_seed+n_objects-1 (`render_views`)
    into shards of SHARD objects (missing shards only); returns the shard paths. A shard
    holds images and targets uint8 [n,views,3,H,W], cameras [n,views,4] and colour/shape
    labels [n]."""
    world = world or zero123_world(32)
    root = Path(cache_dir) / f"world_{world_key(world.cfg)}"
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"views{views}_{first_seed + i}.pt" for i in range(0, n_objects, SHARD)]

    def make_shard(start: int) -> dict:
        parts = [render_views(world, list(range(s, s + 128)), views) for s in range(start, start + SHARD, 128)]
        specs = [world.spec(seed) for seed in range(start, start + SHARD)]
        return {"images": torch.cat([p[0] for p in parts]), "targets": torch.cat([p[1] for p in parts]),
                "cameras": torch.cat([p[2] for p in parts]),
                "color": torch.tensor([s.labels["color"] for s in specs]),
                "shape": torch.tensor([s.labels["shape"] for s in specs])}

    write_shards(paths, make_shard, "rendering pair shards", progress)
    return paths


def load_pair_cache(paths: list[Path]) -> dict:
    """All shards concatenated: images, targets uint8 [N,V,3,H,W], cameras [N,V,4], color/shape [N]."""
    return load_shards(paths, ("images", "targets", "cameras", "color", "shape"))


# -- phase 2: image encoder + projection + UNet ------------------------------------------------------


def clip_pixels(images: Tensor) -> Tensor:
    """uint8 or [0,1] images [B,3,H,W] -> the CLIP encoder's input, normalised exactly as
    `Zero123Prior.reference_embeddings` does at crop_size = H (no resize)."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def relative_camera(cameras: Tensor, ref: Tensor, target: Tensor) -> Tensor:
    """zero123 camera embeddings [B,4] from cameras [B,V,4] (elevation, azimuth, radius, fov)
    and view indices ref, target [B]: target minus reference, as the prior computes them."""
    rows = torch.arange(len(cameras))
    d = cameras[rows, target] - cameras[rows, ref]
    return zero123_camera_embedding(d[:, 0], d[:, 1], d[:, 2])


class Zero123Modules(torch.nn.Module):
    """The trained parts together, so one state_dict, optimiser and EMA cover them."""

    def __init__(self, mcfg):
        super().__init__()
        from core.training.zero123_model import CameraProjection, build_image_encoder, build_unet

        self.image_encoder = build_image_encoder(mcfg)
        self.projection = CameraProjection(mcfg.embed_dim)
        self.unet = build_unet(mcfg)

    def forward(self, x_t: Tensor, t: Tensor, reference: Tensor, reference_latents: Tensor, camera: Tensor,
                keep: Tensor) -> Tensor:
        """x_t [B,C,h,w] scaled noisy latents, reference uint8 [B,3,H,W], reference_latents
        [B,C,h,w] unscaled posterior mode, camera [B,4], keep [B] 1 or 0 (0: the all-zero
        unconditional branch of Zero123Prior) -> v prediction [B,C,h,w]."""
        clip = self.image_encoder(clip_pixels(reference)).image_embeds
        embeds = self.projection(torch.cat([clip, camera], dim=-1))[:, None] * keep.view(-1, 1, 1)
        concat = reference_latents * keep.view(-1, 1, 1, 1)
        return self.unet(torch.cat([x_t, concat], dim=1), t, encoder_hidden_states=embeds).sample


def object_weights(shapes: Tensor, shape_weights: dict[str, float]) -> Tensor:
    """Draw weights [N] of objects whose shape indices (into SHAPES) are `shapes` [N]."""
    per_shape = torch.tensor([float(shape_weights.get(name, 1.0)) for name in SHAPES])
    return per_shape[shapes]


def train_modules(work: Path, data: dict, latents: tuple[Tensor, Tensor], scaling_factor: float,
                  alphas_cumprod: Tensor, cfg: Zero123TrainConfig, mcfg, budget_s: float | None,
                  progress: bool = True, reference_latents: Tensor | None = None) -> Zero123Modules:
    """Train (or resume) on pairs of views: data["images"] uint8 [N,V,3,H,W] (references),
    data["cameras"] [N,V,4], data["shape"] [N] (optional: objects drawn by
    cfg.shape_weights; without it uniformly); latents (mean, std) of the targets each
    [N,V,C,h,w] unscaled; reference_latents [N,V,C,h,w] the posterior mean of the references
    (None: the targets' mean, for targets over the references' background). budget_s: wall
    seconds this phase may take (None: cfg.steps must be set). Returns the EMA modules in
    eval mode."""
    images, cameras = data["images"], data["cameras"]
    mean, std = latents
    ref_mean = mean if reference_latents is None else reference_latents
    N, V = images.shape[:2]
    weights = object_weights(data["shape"], cfg.shape_weights) if "shape" in data else torch.ones(N)
    torch.manual_seed(cfg.seed + 1)
    model = Zero123Modules(mcfg)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    ema = copy.deepcopy(model).requires_grad_(False)
    ema_params = list(ema.parameters())
    g = torch.Generator().manual_seed(cfg.seed + 2)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "zero123.pt"
    state = load_checkpoint(ckpt)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["generator"])
    step, elapsed, total, budget_s = resume_schedule(state, cfg.steps, budget_s)

    def checkpoint():
        save_checkpoint(ckpt, {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                               "generator": g.get_state(), "step": step, "elapsed": tracker.elapsed(),
                               "total": total, "budget_s": budget_s})

    tracker = StepTracker(work / "zero123_loss.jsonl", "zero123 unet", step, total, elapsed, cfg.checkpoint_minutes,
                          progress)
    model.train()
    while total is None or step < total:
        if tracker.out_of_time(budget_s):
            break
        idx = torch.multinomial(weights, cfg.batch, replacement=True, generator=g)
        ref = torch.randint(V, (cfg.batch,), generator=g)
        target = (ref + 1 + torch.randint(V - 1, (cfg.batch,), generator=g)) % V  # any other view
        x0 = (mean[idx, target] + std[idx, target] * torch.randn(mean[idx, target].shape, generator=g)) * scaling_factor
        keep = (torch.rand(cfg.batch, generator=g) >= cfg.p_drop_reference).float()
        t = torch.randint(0, len(alphas_cumprod), (cfg.batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        out = model(x_t, t, images[idx, ref], ref_mean[idx, ref], relative_camera(cameras[idx], ref, target), keep)
        loss = v_prediction_loss(out, x0, noise, a, cfg.min_snr_gamma)
        lr = lr_at_step(step, total or 10**9, cfg)
        optimizer_step(loss, opt, params, lr, ema_params, step, cfg.ema_decay)
        step += 1
        total = tracker.after_step(step, loss.item(), lr, budget_s, checkpoint)
    checkpoint()
    return ema.eval()


def save_zero123_prior(out: Path, modules: Zero123Modules, mcfg, vae_source: Path = TEXT_PRIOR,
                       fp16: bool = True) -> Path:
    """Write the zero123-format folder: image_encoder/, feature_extractor/,
    clip_camera_projection/, unet/ (weights in fp16 safetensors), and `vae_source`'s vae/
    and scheduler/ copied as they are (kept as they are when `vae_source` is `out`)."""
    import diffusers
    from safetensors.torch import save_file

    from core.training.zero123_model import build_feature_extractor

    out.mkdir(parents=True, exist_ok=True)
    modules = copy.deepcopy(modules)
    if fp16:
        modules.half()
    modules.image_encoder.save_pretrained(out / "image_encoder", safe_serialization=True)
    modules.unet.save_pretrained(out / "unet", safe_serialization=True)
    build_feature_extractor(mcfg).save_pretrained(out / "feature_extractor")
    projection = out / "clip_camera_projection"
    projection.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in modules.projection.state_dict().items()},
              str(projection / "diffusion_pytorch_model.safetensors"))
    (projection / "config.json").write_text(json.dumps(
        {"_class_name": "CLIPCameraProjection", "embedding_dim": mcfg.embed_dim, "additional_embeddings": 4}, indent=2))
    for folder in ("vae", "scheduler"):
        if (vae_source / folder).resolve() == (out / folder).resolve():
            continue  # retraining with the VAE the prior already holds
        shutil.rmtree(out / folder, ignore_errors=True)
        shutil.copytree(vae_source / folder, out / folder)
    index = {"_class_name": "Zero123Pipeline", "_diffusers_version": diffusers.__version__,
             "vae": ["diffusers", "AutoencoderKL"], "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"],
             "feature_extractor": ["transformers", "CLIPImageProcessor"],
             "clip_camera_projection": ["zero123", "CLIPCameraProjection"]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def _frozen_vae(vae_source: Path):
    """`vae_source`'s VAE as the prior will load it (fp16 weights, float32 on the CPU)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(vae_source / "vae", torch_dtype=torch.float32).eval().requires_grad_(False)


def _alphas_cumprod(vae_source: Path) -> Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_pretrained(vae_source / "scheduler").alphas_cumprod.float()


def vae_key(vae_source: Path) -> str:
    """A short hash of the frozen VAE's weights and the noise schedule the run trains on."""
    digest = hashlib.sha1((vae_source / "vae" / "diffusion_pytorch_model.safetensors").read_bytes())
    digest.update((vae_source / "scheduler" / "scheduler_config.json").read_bytes())
    return digest.hexdigest()[:10]


def _work_dir(out: Path, seed: int, cache_dir: str | Path, resolution: int, vae_source: Path) -> Path:
    """The run's checkpoint folder, keyed by its world's config and its VAE: a changed world or
    a retrained text prior (whose VAE encodes the cached latents) never resumes an old run."""
    world = world_key(zero123_world(resolution).cfg)
    return Path(cache_dir) / f"work_{out.name}_seed{seed}_{world}_vae{vae_key(Path(vae_source))}"


def train_zero123_prior(out_dir: str | Path, cfg: Zero123TrainConfig | None = None, resume: bool = True,
                        cache_dir: str | Path = "/tmp/scorelift-cache", vae_source: Path = TEXT_PRIOR,
                        progress: bool = True) -> Path:
    """Render pairs, encode them with the text prior's VAE, train; save the EMA weights to
    `out_dir`. Checkpoints and loss logs live in `<cache_dir>/work_<out name>_seed<seed>_<world
    key>_vae<VAE key>/`, outside the repository; with resume=False they are deleted first."""
    from core.training.zero123_model import Zero123PriorConfig

    start = time.time()
    torch.set_num_threads(1)
    cfg = cfg or Zero123TrainConfig()
    out = Path(out_dir)
    mcfg = Zero123PriorConfig(**cfg.model)
    work = _work_dir(out, cfg.seed, cache_dir, mcfg.resolution, vae_source)
    if not resume and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    data = load_pair_cache(render_pair_cache(cache_dir, cfg.objects, cfg.views, zero123_world(mcfg.resolution),
                                             progress=progress))
    vae = _frozen_vae(vae_source)
    latents_path = work / "latents.pt"
    if latents_path.is_file():
        cached = torch.load(latents_path)
        latents, reference_latents = (cached["target_mean"], cached["target_std"]), cached["reference_mean"]
    else:
        N, V = data["images"].shape[:2]

        def encode(key: str) -> tuple[Tensor, Tensor]:
            flat = encode_latents(vae, data[key].flatten(0, 1))
            return tuple(x.reshape(N, V, *x.shape[1:]) for x in flat)

        latents, reference_latents = encode("targets"), encode("images")[0]
        torch.save({"target_mean": latents[0], "target_std": latents[1], "reference_mean": reference_latents},
                   latents_path)
    budget_s = None if cfg.steps is not None else cfg.minutes * 60 - (time.time() - start) - SAVE_MARGIN_S
    modules = train_modules(work, data, latents, vae.config.scaling_factor, _alphas_cumprod(vae_source), cfg, mcfg,
                            budget_s, progress, reference_latents)
    return save_zero123_prior(out, modules, mcfg, vae_source)


def export_checkpoint(out_dir: str | Path, seed: int = 0, cache_dir: str | Path = "/tmp/scorelift-cache",
                      cfg: Zero123TrainConfig | None = None, vae_source: Path = TEXT_PRIOR) -> Path:
    """Save the EMA weights of the latest checkpoint of a run (finished or not) to `out_dir`."""
    from core.training.zero123_model import Zero123PriorConfig

    out = Path(out_dir)
    mcfg = Zero123PriorConfig(**(cfg or Zero123TrainConfig()).model)
    state = torch.load(_work_dir(out, seed, cache_dir, mcfg.resolution, vae_source) / "zero123.pt",
                       weights_only=False)
    modules = Zero123Modules(mcfg)
    modules.load_state_dict(state["ema"])
    print(f"exporting step {state['step']} of {state['total']}")
    return save_zero123_prior(out, modules.eval(), mcfg, vae_source)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="scorelift train-prior zero123",
                                description="Train the built-in Zero123 prior on pairs of views of procedural objects.")
    p.add_argument("--out", default=str(ZERO123_PRIOR), help="where the prior is saved "
                   "(default: the package's built-in zero123 folder)")
    p.add_argument("--cache-dir", default="/tmp/scorelift-cache")
    p.add_argument("--objects", type=int, default=Zero123TrainConfig.objects)
    p.add_argument("--views", type=int, default=Zero123TrainConfig.views, help="views rendered per object (>= 2)")
    p.add_argument("--minutes", type=float, default=Zero123TrainConfig.minutes,
                   help="wall time of the whole command, rendering included")
    p.add_argument("--steps", type=int, default=None, help="fixed UNet steps instead of --minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-from", type=Path, default=TEXT_PRIOR,
                   help="a prior folder whose vae/ and scheduler/ are used frozen and copied into --out (default: "
                        "the built-in text prior; the shipped zero123 folder holds the VAE it was trained with)")
    p.add_argument("--no-resume", action="store_true", help="delete checkpoints and start over")
    p.add_argument("--render-only", action="store_true", help="only render the pair cache")
    p.add_argument("--export", action="store_true", help="save the latest checkpoint's EMA weights to --out")
    a = p.parse_args(argv)
    if a.views < 2:
        p.error("--views must be at least 2: a training pair is two views of one object")
    torch.set_num_threads(1)
    cfg = Zero123TrainConfig(objects=a.objects, views=a.views, minutes=a.minutes, steps=a.steps, seed=a.seed)
    if a.render_only:
        render_pair_cache(a.cache_dir, a.objects, a.views)
        return
    if a.export:
        print(export_checkpoint(a.out, a.seed, a.cache_dir, cfg, a.vae_from))
        return
    t0, cpu0 = time.time(), time.process_time()
    out = train_zero123_prior(a.out, cfg, not a.no_resume, a.cache_dir, a.vae_from)
    print(f"saved {out} after {(time.time() - t0) / 60:.1f} min wall, {(time.process_time() - cpu0) / 60:.1f} min "
          "process CPU time")


if __name__ == "__main__":
    main()
