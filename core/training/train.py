"""Training the built-in text-and-camera prior on the procedural world.

    python -m core.training.train text --out core/priors/builtin/text --minutes 60

(`python -m core.training.train zero123 ...` trains the Zero123 prior: train_zero123.py.)

Four phases, each resumable from checkpoints in the cache folder (never committed);
re-running the command continues where a killed run stopped (docs/builtin_prior.md).
The whole command fits in `--minutes` of wall time: phases 3 and 4 run at once, the decoder
fine-tune in a second process (one thread each, the machine's two cores), and the UNet gets
what rendering and the VAE left, its step count fixed after 20 timed steps.

1. render: procedural objects (seeds PRIOR_SEED_START + i) into a cache of uint8 shards.
   Rendering measured ~16 ms an image on one thread, about 1 s per batch of 64, the same
   order as a UNet step, so images are rendered once and reused rather than per step.
2. vae: a small AutoencoderKL (32 px -> 8x8x8), reconstruction + tiny KL.
3. unet: text encoder + UNet trained jointly on the VAE's latents, v-prediction with Min-SNR
   weighting, caption dropout for classifier-free guidance, EMA weights.
4. decoder: the VAE decoder alone, sharpened on the frozen encoder's latents (which the
   UNet learns from, so the two are independent).

The output folder is a Stable-Diffusion-format repo loaded by `core.priors.load` as is.
One CPU thread per process: two busy processes with two threads each ran 20-30x slower.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from core.data.procedural import PRIOR_BACKGROUND_MIX, PRIOR_SEED_START, ProceduralWorld, ProceduralWorldConfig
from core.priors.builtin import TEXT_PRIOR
from core.training.common import (SAVE_MARGIN_S, SHARD, DiffusionTrainConfig, StepTracker, encode_latents,
                                          load_checkpoint, lr_at_step, optimizer_step, restore, resume_schedule,
                                          save_checkpoint, v_prediction_loss, world_key, write_shards)


# -- phase 1: the image cache ---------------------------------------------------------------


def prior_world_config(resolution: int) -> ProceduralWorldConfig:
    """The world the text prior trains on: objects over PRIOR_BACKGROUND_MIX backgrounds."""
    return ProceduralWorldConfig(resolution=resolution, background_mix=PRIOR_BACKGROUND_MIX)


def work_dir(cache_dir: str | Path, out_dir: str | Path, seed: int, world_cfg: ProceduralWorldConfig) -> Path:
    """A run's checkpoint folder, keyed by its world so a changed world never resumes an old run."""
    return Path(cache_dir) / f"work_{Path(out_dir).name}_seed{seed}_{world_key(world_cfg)}"


def render_cache(cache_dir: str | Path, n_images: int, world: ProceduralWorld | None = None,
                 first_seed: int = PRIOR_SEED_START, progress: bool = True, workers: int = 1) -> list[Path]:
    """Render objects first_seed.. first_seed+n_images-1 into shards of SHARD images (missing
    shards only) and return the shard paths. A shard holds images uint8 [n,3,H,W],
    cameras [n,4] (elevation, azimuth, radius, fov_y in degrees), captions, colour/shape labels.
    workers > 1: that many processes (one thread each) share the missing shards.
    """
    world = world or ProceduralWorld()
    root = Path(cache_dir) / f"world_{world_key(world.cfg)}"
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"shard_{first_seed + i}.pt" for i in range(0, n_images, SHARD)]
    todo = [p for p in paths if not p.is_file()]
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        helpers = [ctx.Process(target=_render_shards, args=(todo[w::workers], world.cfg, False), daemon=True)
                   for w in range(1, workers)]
        for h in helpers:
            h.start()
        try:
            _render_shards(todo[0::workers], world.cfg, progress)
        finally:
            for h in helpers:
                h.join()
    _render_shards(paths, world.cfg, progress)  # whatever a helper left (none unless it failed)
    return paths


def _render_shards(paths: list[Path], world_cfg: ProceduralWorldConfig, progress: bool) -> None:
    torch.set_num_threads(1)
    world = ProceduralWorld(world_cfg)

    def make_shard(start: int) -> dict:
        images, cams, captions, colors, shapes = [], [], [], [], []
        for s in range(start, start + SHARD, 256):
            b = world.sample(s, 256)
            images.append((b.images * 255).round().to(torch.uint8))
            cams.append(torch.stack([b.elevation, b.azimuth, b.radius, b.fov], -1))
            captions += b.captions
            colors.append(b.labels["color"])
            shapes.append(b.labels["shape"])
        return {"images": torch.cat(images), "cameras": torch.cat(cams), "captions": captions,
                "color": torch.cat(colors), "shape": torch.cat(shapes)}

    write_shards(paths, make_shard, "rendering shards", progress)


def load_cache(paths: list[Path]) -> dict:
    """All shards concatenated: images uint8 [N,3,H,W], cameras [N,4], captions (N), color/shape [N]."""
    parts = [torch.load(p) for p in paths]
    return {"images": torch.cat([p["images"] for p in parts]), "cameras": torch.cat([p["cameras"] for p in parts]),
            "captions": [c for p in parts for c in p["captions"]],
            "color": torch.cat([p["color"] for p in parts]), "shape": torch.cat([p["shape"] for p in parts])}


@dataclass
class TrainConfig(DiffusionTrainConfig):
    """Budgets and settings. `minutes`: wall time of the whole command. `unet_steps` None:
    as many UNet steps as fit in what rendering and the VAE left of it, fixed after 20 timed
    steps and stored in the checkpoint (so a resumed run keeps its schedule); pass steps to
    reproduce a run exactly. The decoder fine-tune runs beside the UNet for
    `decoder_minutes` (at most what is left)."""

    images: int = 32 * SHARD
    minutes: float = 60.0
    vae_minutes: float = 7.0
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-4
    decoder_minutes: float = 16.0
    unet_steps: int | None = None
    p_drop_caption: float = 0.1
    p_view_suffix: float = 0.8


# -- phase 2: VAE -----------------------------------------------------------------------------


def train_vae(work: Path, images: Tensor, cfg: TrainConfig, mcfg, progress: bool = True):
    """Train (or resume) the AutoencoderKL on uint8 images [N,3,32,32] for `cfg.vae_minutes`
    of wall time; returns the VAE with `scaling_factor` set to 1/std of the latents."""
    from tqdm import tqdm

    from core.training.text_model import build_vae

    ckpt = work / "vae.pt"
    torch.manual_seed(cfg.seed)
    vae = build_vae(mcfg)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    g = torch.Generator().manual_seed(cfg.seed)
    state = load_checkpoint(ckpt)
    step, elapsed = restore(state, vae, opt, g)
    log = (work / "vae_loss.jsonl").open("a")
    bar = tqdm(desc="vae", initial=step, disable=not progress)
    t0, last_ckpt = time.time() - elapsed, time.time()
    while not state or not state.get("done"):
        if time.time() - t0 > cfg.vae_minutes * 60:
            break
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=g)
        x = images[idx].float() / 127.5 - 1
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=g)).sample
        mse = F.mse_loss(recon, x)
        kl = 0.5 * (posterior.mean ** 2 + posterior.var - 1 - posterior.logvar).mean()
        loss = mse + (recon - x).abs().mean() + cfg.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update()
        if step % 10 == 0:
            bar.set_postfix(mse=f"{mse.item():.4f}")
            log.write(json.dumps({"step": step, "mse": mse.item(), "kl": kl.item(),
                                  "seconds": round(time.time() - t0, 1)}) + "\n")
            log.flush()
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            save_checkpoint(ckpt, {"model": vae.state_dict(), "opt": opt.state_dict(), "generator": g.get_state(),
                                   "step": step, "elapsed": time.time() - t0})
            last_ckpt = time.time()
    vae.eval()
    with torch.no_grad():
        mean = vae.encode(images[:1024].float() / 127.5 - 1).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / mean.std()))
    save_checkpoint(ckpt, {"model": vae.state_dict(), "opt": opt.state_dict(), "generator": g.get_state(),
                           "step": step, "elapsed": time.time() - t0, "done": True,
                           "scaling_factor": vae.config.scaling_factor})
    return vae


def finetune_decoder(work: Path, vae, latents: tuple[Tensor, Tensor], images: Tensor, cfg: TrainConfig,
                     progress: bool = True):
    """Train the VAE decoder alone on the frozen encoder's latents for `cfg.decoder_minutes`.

    The encoder (and so every latent the UNet learns) stays as it is, so this runs beside
    the UNet phase (`start_decoder_process`) and only sharpens what samples decode to; the
    short first VAE phase leaves blurry edges, and edges are what tell a cone from a pyramid
    at 32 px.
    """
    from tqdm import tqdm

    ckpt = work / "decoder.pt"
    decoder = [vae.post_quant_conv, vae.decoder]
    params = [p for m in decoder for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.vae_lr / 2)
    g = torch.Generator().manual_seed(cfg.seed + 3)
    state = load_checkpoint(ckpt)
    step, elapsed = restore(state, vae, opt, g)
    mean, std = latents
    log = (work / "decoder_loss.jsonl").open("a")
    bar = tqdm(desc="decoder", initial=step, disable=not progress)
    t0, last_ckpt = time.time() - elapsed, time.time()
    vae.decoder.train()
    while time.time() - t0 < cfg.decoder_minutes * 60:  # a larger budget continues a finished run
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=g)
        x = images[idx].float() / 127.5 - 1
        z = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)
        recon = vae.decode(z).sample
        mse = F.mse_loss(recon, x)
        loss = mse + (recon - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update()
        if step % 10 == 0:
            bar.set_postfix(mse=f"{mse.item():.4f}")
            log.write(json.dumps({"step": step, "mse": mse.item(), "seconds": round(time.time() - t0, 1)}) + "\n")
            log.flush()
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
            save_checkpoint(ckpt, {"model": vae.state_dict(), "opt": opt.state_dict(), "generator": g.get_state(),
                                   "step": step, "elapsed": time.time() - t0})
            last_ckpt = time.time()
    save_checkpoint(ckpt, {"model": vae.state_dict(), "opt": opt.state_dict(), "generator": g.get_state(),
                           "step": step, "elapsed": time.time() - t0, "done": True})
    return vae.eval()


def trained_vae(work: Path, mcfg, decoder: bool = True):
    """The VAE of a run's finished phase 2 (`scaling_factor` set), with the fine-tuned
    decoder of phase 4 loaded over it when `decoder` and there is one (finished or not)."""
    from core.training.text_model import build_vae

    vae_state = torch.load(work / "vae.pt", weights_only=False)
    if not vae_state.get("done"):
        raise RuntimeError(f"the VAE of {work} is still training; export once the UNet phase has begun")
    vae = build_vae(mcfg)
    vae.load_state_dict(vae_state["model"])
    if decoder and (work / "decoder.pt").is_file():
        vae.load_state_dict(torch.load(work / "decoder.pt", weights_only=False)["model"])
    vae.register_to_config(scaling_factor=vae_state["scaling_factor"])
    return vae.eval()


def _decoder_process(work: Path, shards: list[Path], cfg: TrainConfig, mcfg) -> None:
    torch.set_num_threads(1)
    images = load_cache(shards)["images"]
    vae = trained_vae(work, mcfg, decoder=False)  # finetune_decoder resumes its own checkpoint
    finetune_decoder(work, vae, tuple(torch.load(work / "latents.pt")), images, cfg, progress=False)


def start_decoder_process(work: Path, shards: list[Path], cfg: TrainConfig, mcfg):
    """Phase 4 in a second process (spawned, one thread), so it runs while this one trains
    the UNet; its loss log is `<work>/decoder_loss.jsonl`. Returns the started process."""
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(target=_decoder_process, args=(work, shards, cfg, mcfg),
                                                         name="scorelift-decoder", daemon=True)
    proc.start()
    return proc


# -- phase 3: text encoder + UNet ----------------------------------------------------------------


class CaptionSampler:
    """Training prompts as the prior will see them: the world's caption (colour, shape and
    material words already dropped at random by the world), plus the prior's view suffix for
    the camera with probability p_view_suffix, or "" with probability p_drop_caption (the
    unconditional prompt of classifier-free guidance: `condition` encodes negative_prompt "")."""

    def __init__(self, captions: list[str], cameras: Tensor, tokenizer, max_tokens: int, cfg: TrainConfig):
        from core.priors import PriorConfig
        from core.priors.stable_diffusion import view_names

        pc = PriorConfig()
        names = view_names(cameras[:, 0], cameras[:, 1], pc.front_azimuth_deg, pc.back_azimuth_deg,
                           pc.overhead_elevation_deg)
        self.captions, self.suffixes = captions, [pc.view_suffixes[n] for n in names]
        self.tokenizer, self.max_tokens, self.cfg = tokenizer, max_tokens, cfg
        self._ids: dict[str, Tensor] = {}

    def prompt(self, i: int, u: float) -> str:
        if u < self.cfg.p_drop_caption:
            return ""
        if u < self.cfg.p_drop_caption + (1 - self.cfg.p_drop_caption) * self.cfg.p_view_suffix:
            return self.captions[i] + self.suffixes[i]
        return self.captions[i]

    def token_ids(self, prompts: list[str]) -> Tensor:
        """[B,max_tokens] ids, tokenised exactly as StableDiffusionPrior.text_embeddings does."""
        new = [p for p in set(prompts) if p not in self._ids]
        if new:
            ids = self.tokenizer(new, padding="max_length", max_length=self.max_tokens, truncation=True,
                                 return_tensors="pt").input_ids
            self._ids.update(zip(new, ids))
        return torch.stack([self._ids[p] for p in prompts])


def train_unet(work: Path, latents: tuple[Tensor, Tensor], data: dict, tokenizer, cfg: TrainConfig, mcfg,
               scaling_factor: float, budget_s: float | None = None, progress: bool = True):
    """Train (or resume) text encoder + UNet on latents (mean, std) [N,C,h,w] with the cache's
    captions and cameras, for cfg.unet_steps or as many steps as fit in `budget_s` wall
    seconds (fixed after 20 timed steps; the loop also stops if the machine slows down and
    the budget runs out first). Returns the EMA (text_encoder, unet) in eval mode."""
    import copy

    from core.training.text_model import build_scheduler, build_text_encoder, build_unet
    from core.priors.stable_diffusion import camera_features

    el, az, radius, fov = data["cameras"].unbind(-1)
    from core.cameras import spherical_cameras

    cams = spherical_cameras(el, az, radius, fov, mcfg.resolution, mcfg.resolution)
    camera = camera_features(cams, mcfg.camera_dim)  # [N,k], the layout the prior computes
    captions = CaptionSampler(data["captions"], data["cameras"], tokenizer, mcfg.max_tokens, cfg)
    alphas_cumprod = build_scheduler(mcfg).alphas_cumprod.float()
    mean, std = latents

    torch.manual_seed(cfg.seed + 1)
    text_encoder, unet = build_text_encoder(mcfg, len(tokenizer)), build_unet(mcfg)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    ema_te, ema_unet = copy.deepcopy(text_encoder).requires_grad_(False), copy.deepcopy(unet).requires_grad_(False)
    ema_params = list(ema_te.parameters()) + list(ema_unet.parameters())
    g = torch.Generator().manual_seed(cfg.seed + 2)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "unet.pt"
    state = load_checkpoint(ckpt)
    if state is not None:
        text_encoder.load_state_dict(state["text_encoder"])
        unet.load_state_dict(state["unet"])
        ema_te.load_state_dict(state["ema_text_encoder"])
        ema_unet.load_state_dict(state["ema_unet"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["generator"])
    step, elapsed, total, budget_s = resume_schedule(state, cfg.unet_steps, budget_s)

    def checkpoint():
        save_checkpoint(ckpt, {"text_encoder": text_encoder.state_dict(), "unet": unet.state_dict(),
                               "ema_text_encoder": ema_te.state_dict(), "ema_unet": ema_unet.state_dict(),
                               "opt": opt.state_dict(), "generator": g.get_state(), "step": step,
                               "elapsed": tracker.elapsed(), "total": total, "budget_s": budget_s})

    tracker = StepTracker(work / "unet_loss.jsonl", "unet", step, total, elapsed, cfg.checkpoint_minutes, progress)
    text_encoder.train()
    unet.train()
    while total is None or step < total:
        if tracker.out_of_time(budget_s):
            break
        idx = torch.randint(len(mean), (cfg.batch,), generator=g)
        x0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scaling_factor
        u = torch.rand(cfg.batch, generator=g).tolist()
        ids = captions.token_ids([captions.prompt(int(i), ui) for i, ui in zip(idx, u)])
        t = torch.randint(0, len(alphas_cumprod), (cfg.batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        out = unet(x_t, t, encoder_hidden_states=text_encoder(ids)[0], class_labels=camera[idx]).sample
        loss = v_prediction_loss(out, x0, noise, a, cfg.min_snr_gamma)
        lr = lr_at_step(step, total or 10**9, cfg)
        optimizer_step(loss, opt, params, lr, ema_params, step, cfg.ema_decay)
        step += 1
        total = tracker.after_step(step, loss.item(), lr, budget_s, checkpoint)
    checkpoint()
    return ema_te.eval(), ema_unet.eval()


def save_prior(out: Path, tokenizer, text_encoder, vae, unet, mcfg, fp16: bool = True) -> Path:
    """Write the Stable-Diffusion-format folder (safetensors; weights in fp16 to halve the size)."""
    import copy

    from core.training.text_model import build_scheduler

    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out / "tokenizer")
    for name, module in (("text_encoder", text_encoder), ("vae", vae), ("unet", unet)):
        module = copy.deepcopy(module)
        (module.half() if fp16 else module).save_pretrained(out / name, safe_serialization=True)
    build_scheduler(mcfg).save_pretrained(out / "scheduler")
    import diffusers

    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "text_encoder": ["transformers", "CLIPTextModel"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "DDPMScheduler"]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def train_text_prior(out_dir: str | Path, minutes: float | None = None, steps: int | None = None, seed: int = 0,
                     resume: bool = True, cache_dir: str | Path = "/tmp/scorelift-cache",
                     cfg: TrainConfig | None = None, progress: bool = True) -> Path:
    """Render, train the VAE, then text encoder + UNet with the decoder fine-tune beside it;
    save the EMA weights to `out_dir`.

    minutes: wall-time budget of the whole call (cfg.minutes); steps: a fixed number of UNet
    steps instead (exactly reproducible from `seed`; the VAE and decoder phases are bounded
    by their own minutes either way). Checkpoints and loss logs live in
    `<cache_dir>/work_<out name>_seed<seed>_<world key>/`, outside the repository; with resume=False
    they are deleted first.
    """
    from core.training.text_model import TextPriorConfig, build_tokenizer

    start = time.time()
    torch.set_num_threads(1)
    cfg = cfg or TrainConfig()
    cfg.seed = seed
    if minutes is not None:
        cfg.minutes = minutes
    if steps is not None:
        cfg.unet_steps = steps
    out = Path(out_dir)
    mcfg = TextPriorConfig(**cfg.model)
    world = ProceduralWorld(prior_world_config(mcfg.resolution))
    work = work_dir(cache_dir, out, seed, world.cfg)
    if not resume and work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    shards = render_cache(cache_dir, cfg.images, world, progress=progress, workers=2)
    data = load_cache(shards)
    vae = train_vae(work, data["images"], cfg, mcfg, progress)
    latents_path = work / "latents.pt"  # the encoder is frozen from here on: encode once
    if latents_path.is_file():
        latents = tuple(torch.load(latents_path))
    else:
        latents = encode_latents(vae, data["images"])
        torch.save(latents, latents_path)
    left_s = cfg.minutes * 60 - (time.time() - start) - SAVE_MARGIN_S
    decoder_cfg = replace(cfg, decoder_minutes=min(cfg.decoder_minutes, max(left_s, 0.0) / 60))
    decoder = start_decoder_process(work, shards, decoder_cfg, mcfg)
    if progress:
        print(f"decoder fine-tune running beside the UNet (pid {decoder.pid}, log {work / 'decoder_loss.jsonl'})",
              flush=True)
    tokenizer = build_tokenizer(max_tokens=mcfg.max_tokens)
    try:
        text_encoder, unet = train_unet(work, latents, data, tokenizer, cfg, mcfg, vae.config.scaling_factor,
                                        None if cfg.unet_steps is not None else left_s, progress)
        decoder.join()
    finally:
        if decoder.is_alive():  # the UNet phase failed or was interrupted: its checkpoints stay
            decoder.terminate()
    if decoder.exitcode != 0:
        raise RuntimeError(f"the decoder fine-tune (second process) failed with exit code {decoder.exitcode}; "
                           "re-run the same command to resume it")
    return save_prior(out, tokenizer, text_encoder, trained_vae(work, mcfg), unet, mcfg)


def export_checkpoint(out_dir: str | Path, seed: int = 0, cache_dir: str | Path = "/tmp/scorelift-cache",
                      cfg: TrainConfig | None = None) -> Path:
    """Save the EMA weights of the latest checkpoints of a run (finished or not) to `out_dir`."""
    from core.training.text_model import TextPriorConfig, build_text_encoder, build_tokenizer, build_unet

    out = Path(out_dir)
    mcfg = TextPriorConfig(**(cfg or TrainConfig()).model)
    work = work_dir(cache_dir, out, seed, prior_world_config(mcfg.resolution))
    tokenizer = build_tokenizer(max_tokens=mcfg.max_tokens)
    state = torch.load(work / "unet.pt", weights_only=False)
    text_encoder, unet = build_text_encoder(mcfg, len(tokenizer)), build_unet(mcfg)
    text_encoder.load_state_dict(state["ema_text_encoder"])
    unet.load_state_dict(state["ema_unet"])
    print(f"exporting step {state['step']} of {state['total']}")
    return save_prior(out, tokenizer, text_encoder.eval(), trained_vae(work, mcfg), unet.eval(), mcfg)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["zero123"]:  # the image prior has its own options
        from core.training.train_zero123 import main as zero123_main

        return zero123_main(argv[1:])
    p = argparse.ArgumentParser(prog="scorelift train-prior", description="Train the built-in procedural-world prior.")
    p.add_argument("what", choices=["text", "render", "export", "zero123"],
                   help="text: train the text prior; render: only its image cache; export: save its latest "
                        "checkpoint; zero123: train the Zero123 prior (`zero123 --help` for its options)")
    p.add_argument("--out", default=str(TEXT_PRIOR), help="where the prior is saved "
                   "(default: the package's built-in prior folder)")
    p.add_argument("--cache-dir", default="/tmp/scorelift-cache")
    p.add_argument("--images", type=int, default=32 * SHARD)
    p.add_argument("--minutes", type=float, default=TrainConfig.minutes,
                   help="wall time of the whole command (rendering included); the UNet gets what is left")
    p.add_argument("--steps", type=int, default=None, help="fixed UNet steps instead of filling --minutes")
    p.add_argument("--decoder-minutes", type=float, default=TrainConfig.decoder_minutes,
                   help="wall time of the decoder fine-tune beside the UNet (raise it to continue a finished one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="delete checkpoints and start over")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.what == "render":
        from core.training.text_model import TextPriorConfig

        render_cache(a.cache_dir, a.images, ProceduralWorld(prior_world_config(TextPriorConfig().resolution)),
                     workers=2)
        return
    if a.what == "export":
        print(export_checkpoint(a.out, a.seed, a.cache_dir))
        return
    t0 = time.time()
    out = train_text_prior(a.out, a.minutes, a.steps, a.seed, not a.no_resume, a.cache_dir,
                           TrainConfig(images=a.images, decoder_minutes=a.decoder_minutes))
    print(f"saved {out} after {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
