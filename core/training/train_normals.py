"""Training the built-in image-to-normal network on the procedural world's normal maps.

    python -m core.training.train_normals            # render, train, write normals/
    python -m core.training.train_normals --no-resume

Two phases, both resumable from the cache folder (never committed); re-running the command
continues where a killed run stopped (docs/builtin_normals.md):

1. render: objects NORMALS_TRAIN_SEED_START + i (core.data.normals) into shards holding
   images uint8, camera-space normals float16 and alpha uint8, rendered once and reused:
   measured 9-18 ms an image and 0.3-0.5 s a training step of 32 images on one busy thread.
2. train: `NormalNet` with AdamW and a cosine learning-rate decay for a fixed number of
   steps, loss 1 - cos(predicted, true normal) averaged over foreground pixels (alpha >
   0.5); images are mirrored left-right half the time (normal x negated), which also shows
   the network light from the left. Checkpoints every few minutes; loss log as JSON lines.

One CPU thread throughout (the machine's other cores belong to other jobs).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from core.data.normals import NORMALS_TRAIN_SEED_START, normals_world_config, render_normal_maps
from core.data.procedural import ProceduralWorld
from core.priors.builtin import NORMALS_PRIOR
from core.priors.builtin.normal_model import NormalNet, NormalNetConfig, save_normal_net
from core.training.common import (SHARD, StepTracker, load_checkpoint, load_shards, restore, save_checkpoint,
                                  warmup_cosine_lr, world_key, write_shards)

DEFAULT_OUT = NORMALS_PRIOR
DEFAULT_CACHE = "/tmp/scorelift-cache"


@dataclass
class NormalTrainConfig:
    """images: training images (whole shards); steps at `batch` images each; lr: peak
    learning rate, decayed to lr/20 by a cosine after `warmup_steps`."""

    images: int = 8 * SHARD
    steps: int = 1400
    batch: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    checkpoint_minutes: float = 2.0
    seed: int = 0
    channels: tuple[int, int, int] = (24, 48, 96)


def render_normal_cache(cache_dir: str | Path, n_images: int, progress: bool = True) -> list[Path]:
    """Render the training shards that are missing; returns all shard paths. A shard holds
    images uint8 [n,3,H,W], normals float16 [n,3,H,W], alpha uint8 [n,1,H,W], seeds [n]."""
    world = ProceduralWorld(normals_world_config())
    root = Path(cache_dir) / f"normals_{world_key(world.cfg)}"
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"shard_{NORMALS_TRAIN_SEED_START + i}.pt" for i in range(0, n_images, SHARD)]

    def make_shard(first_seed: int) -> dict:
        batch = render_normal_maps(first_seed, SHARD, world=world)
        return {"images": (batch.images * 255).round().to(torch.uint8), "normals": batch.normals.half(),
                "alpha": (batch.alpha * 255).round().to(torch.uint8), "seeds": torch.tensor(batch.seeds)}

    write_shards(paths, make_shard, "rendering normal maps", progress)
    return paths


def foreground_cosine_loss(pred: Tensor, target: Tensor, alpha: Tensor, min_alpha: float = 0.5) -> Tensor:
    """Mean 1 - cos over pixels with alpha > min_alpha. pred, target [B,3,H,W] unit; alpha [B,1,H,W]."""
    mask = (alpha > min_alpha).to(pred)
    return ((1 - (pred * target).sum(1, keepdim=True)) * mask).sum() / mask.sum().clamp_min(1.0)


def _minibatch(data: dict[str, Tensor], batch: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    idx = torch.randint(len(data["images"]), (batch,), generator=g)
    images = data["images"][idx].float() / 255
    normals = data["normals"][idx].float()
    alpha = data["alpha"][idx].float() / 255
    flip = torch.rand(batch, generator=g) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    alpha = torch.where(flip[:, None, None, None], alpha.flip(-1), alpha)
    mirrored = normals.flip(-1) * torch.tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1)
    normals = torch.where(flip[:, None, None, None], mirrored, normals)
    return images, normals, alpha


def train_normal_net(out_dir: str | Path = DEFAULT_OUT, cfg: NormalTrainConfig | None = None,
                     cache_dir: str | Path = DEFAULT_CACHE, resume: bool = True, progress: bool = True) -> Path:
    """Render (missing shards), train (or resume) and write the network to `out_dir`
    (model.safetensors + config.json). Checkpoints and the loss log live in
    `<cache_dir>/normals_seed<seed>/`."""
    cfg = cfg or NormalTrainConfig()
    torch.set_num_threads(1)
    work = Path(cache_dir) / f"normals_seed{cfg.seed}"
    ckpt = work / "checkpoint.pt"
    if not resume:
        for stale in (ckpt, work / "loss.jsonl"):
            stale.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t_render = time.time()
    data = load_shards(render_normal_cache(cache_dir, cfg.images, progress), ("images", "normals", "alpha"))
    render_seconds = time.time() - t_render

    torch.manual_seed(cfg.seed)
    model = NormalNet(NormalNetConfig(channels=cfg.channels))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    state = load_checkpoint(ckpt)
    if state is not None and state["config"] != asdict(cfg):
        raise ValueError(f"{ckpt} was written with another training config; pass --no-resume to start over")
    step, elapsed = restore(state, model, opt, g)

    def save() -> None:
        save_checkpoint(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "generator": g.get_state(),
                               "step": step, "elapsed": tracker.elapsed(), "config": asdict(cfg)})

    model.train()
    tracker = StepTracker(work / "loss.jsonl", "normal network", step, cfg.steps, elapsed, cfg.checkpoint_minutes,
                          progress)
    while step < cfg.steps:
        images, normals, alpha = _minibatch(data, cfg.batch, g)
        lr = warmup_cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = foreground_cosine_loss(model(images), normals, alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        tracker.after_step(step, loss.item(), lr, None, save)
    save()
    tracker.bar.close()
    train_seconds = tracker.elapsed()
    return save_normal_net(model.eval(), out_dir, {
        "training": {**asdict(cfg), "train_seconds": round(train_seconds, 1),
                     "render_seconds_this_run": round(render_seconds, 1),
                     "first_seed": NORMALS_TRAIN_SEED_START, "world": "core.data.normals.normals_world_config()",
                     "command": "python -m core.training.train_normals"}})


def main(argv: list[str] | None = None) -> Path:
    defaults = NormalTrainConfig()
    p = argparse.ArgumentParser(prog="python -m core.training.train_normals",
                                description="Train the built-in image-to-normal network (builtin:normals).")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where model.safetensors and config.json go")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="rendered shards, checkpoints, loss log")
    p.add_argument("--images", type=int, default=defaults.images, help="training images (rounded up to shards)")
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch", type=int, default=defaults.batch)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--no-resume", action="store_true", help="delete the checkpoint and start over")
    a = p.parse_args(argv)
    if a.images < 1 or a.steps < 1 or a.batch < 1:
        p.error("--images, --steps and --batch must be positive")
    cfg = NormalTrainConfig(images=a.images, steps=a.steps, batch=a.batch, seed=a.seed)
    try:
        out = train_normal_net(a.out, cfg, a.cache_dir, resume=not a.no_resume)
    except ValueError as e:  # a checkpoint of another config: say what to do, no traceback
        p.error(str(e))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
