"""Training the built-in monocular depth network on procedural scenes (docs/builtin_depth.md).

    python -m core.training.train_depth --out core/priors/builtin/depth --minutes 14

Two phases, both resumable from the cache folder (never committed); re-running the
command continues where a killed run stopped:

1. render: scenes DEPTH_TRAIN_SEED_START + i (core.data.depth_scenes) into shards holding
   images uint8, depth float16 (world units) and the valid mask, rendered once and reused.
2. train: `DepthNet` with AdamW and a cosine learning-rate decay, loss the
   scale-and-shift-invariant MSE (depth_alignment.py) against depth normalised per image
   to [0,1]; images are mirrored left-right half the time (depth mirrors with them). The
   step count is fixed after 20 timed steps so that the whole run, rendering included,
   fits `--minutes`; checkpoints every few minutes; loss log as JSON lines.

One CPU thread throughout (the machine's other cores belong to other jobs).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from core.data.depth_scenes import DEPTH_TRAIN_SEED_START, DepthSceneConfig, render_depth_scenes
from core.priors.builtin import DEPTH_PRIOR
from core.priors.builtin.depth_model import DepthNet, DepthNetConfig, save_depth_net
from core.training.common import (SAVE_MARGIN_S, StepTracker, load_checkpoint, load_shards, restore,
                                  resume_schedule, save_checkpoint, warmup_cosine_lr, write_shards)
from core.training.depth_alignment import normalise_depth, scale_shift_invariant_loss

DEFAULT_OUT = DEPTH_PRIOR
DEFAULT_CACHE = "/tmp/scorelift-cache"
DEPTH_SHARD = 256


@dataclass
class DepthTrainConfig:
    """images: training scenes (whole shards of DEPTH_SHARD); batch images a step; lr: peak
    learning rate, decayed to lr/20 by a cosine after `warmup_steps`; minutes: wall budget
    of the whole run (rendering, training, export)."""

    images: int = 8 * DEPTH_SHARD
    batch: int = 16
    lr: float = 2e-3
    warmup_steps: int = 30
    weight_decay: float = 1e-4
    checkpoint_minutes: float = 2.0
    seed: int = 0
    channels: tuple[int, int, int] = (24, 48, 96)
    minutes: float = 14.0


def render_depth_cache(cache_dir: str | Path, n_images: int, progress: bool = True) -> list[Path]:
    """Render the missing training shards; returns all shard paths. A shard holds images
    uint8 [n,3,H,W], depth float16 [n,1,H,W], valid bool [n,1,H,W], seeds [n]."""
    from core.training.common import world_key
    from core.data.procedural import ProceduralWorldConfig

    cfg = DepthSceneConfig()
    root = Path(cache_dir) / f"depth_{world_key(ProceduralWorldConfig())}_{cfg.resolution}px"
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"shard_{DEPTH_TRAIN_SEED_START + i}.pt" for i in range(0, n_images, DEPTH_SHARD)]

    def make_shard(first_seed: int) -> dict:
        batch = render_depth_scenes(first_seed, DEPTH_SHARD, cfg)
        return {"images": (batch.images * 255).round().to(torch.uint8), "depth": batch.depth.half(),
                "valid": batch.valid, "seeds": torch.tensor(batch.seeds)}

    write_shards(paths, make_shard, "rendering depth scenes", progress)
    return paths


def _minibatch(data: dict[str, Tensor], batch: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    idx = torch.randint(len(data["images"]), (batch,), generator=g)
    images = data["images"][idx].float() / 255
    depth = data["depth"][idx].float()
    valid = data["valid"][idx]
    flip = (torch.rand(batch, generator=g) < 0.5)[:, None, None, None]
    images = torch.where(flip, images.flip(-1), images)
    depth = torch.where(flip, depth.flip(-1), depth)
    valid = torch.where(flip, valid.flip(-1), valid)
    return images, normalise_depth(depth, valid), valid


def train_depth_net(out_dir: str | Path = DEFAULT_OUT, cfg: DepthTrainConfig | None = None,
                    cache_dir: str | Path = DEFAULT_CACHE, resume: bool = True, progress: bool = True,
                    steps: int | None = None) -> Path:
    """Render (missing shards), train (or resume) and write the network to `out_dir`
    (model.safetensors fp16 + config.json). `steps` fixes the step count instead of the
    time budget. Checkpoints and the loss log live in `<cache_dir>/depth_seed<seed>/`."""
    cfg = cfg or DepthTrainConfig()
    t_start = time.time()
    torch.set_num_threads(1)
    work = Path(cache_dir) / f"depth_seed{cfg.seed}"
    ckpt = work / "checkpoint.pt"
    if not resume:
        for stale in (ckpt, work / "loss.jsonl"):
            stale.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    data = load_shards(render_depth_cache(cache_dir, cfg.images, progress), ("images", "depth", "valid"))
    render_seconds = time.time() - t_start

    torch.manual_seed(cfg.seed)
    model = DepthNet(DepthNetConfig(channels=cfg.channels))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    state = load_checkpoint(ckpt)
    # --minutes may differ on resume: a resumed run keeps its first budget (resume_schedule)
    if state is not None and {**state["config"], "minutes": cfg.minutes} != asdict(cfg):
        raise ValueError(f"{ckpt} was written with another training config; pass --no-resume to start over")
    # A fresh run's training budget is what rendering left of the whole run's minutes.
    budget_s = None if steps else max(60.0, cfg.minutes * 60 - render_seconds - SAVE_MARGIN_S)
    step, _, total, budget_s = resume_schedule(state, steps, budget_s)
    restore(state, model, opt, g)
    elapsed = state["elapsed"] if state else 0.0

    def save() -> None:
        save_checkpoint(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "generator": g.get_state(),
                               "step": step, "elapsed": tracker.elapsed(), "total": tracker.total,
                               "budget_s": budget_s, "config": asdict(cfg)})

    model.train()
    tracker = StepTracker(work / "loss.jsonl", "depth network", step, total, elapsed, cfg.checkpoint_minutes,
                          progress)
    while (tracker.total is None or step < tracker.total) and not tracker.out_of_time(budget_s):
        images, depth, valid = _minibatch(data, cfg.batch, g)
        lr = warmup_cosine_lr(step, tracker.total or 10**9, cfg.lr, cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = scale_shift_invariant_loss(model.relative_depth(images), depth, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        tracker.after_step(step, loss.item(), lr, budget_s, save)
    save()
    tracker.bar.close()
    return save_depth_net(model.eval(), out_dir, {
        "training": {**asdict(cfg), "steps": step, "train_seconds": round(tracker.elapsed(), 1),
                     "render_seconds_this_run": round(render_seconds, 1),
                     "wall_seconds_this_run": round(time.time() - t_start, 1),
                     "first_seed": DEPTH_TRAIN_SEED_START, "scenes": "core.data.depth_scenes.DepthSceneConfig()",
                     "command": "python -m core.training.train_depth"}})


def main(argv: list[str] | None = None) -> Path:
    defaults = DepthTrainConfig()
    p = argparse.ArgumentParser(prog="python -m core.training.train_depth",
                                description="Train the built-in monocular depth network (builtin:depth).")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where model.safetensors and config.json go")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="rendered shards, checkpoints, loss log")
    p.add_argument("--minutes", type=float, default=defaults.minutes, help="wall budget of the whole run")
    p.add_argument("--steps", type=int, default=None, help="a fixed step count instead of the budget")
    p.add_argument("--images", type=int, default=defaults.images, help="training scenes (rounded up to shards)")
    p.add_argument("--batch", type=int, default=defaults.batch)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--no-resume", action="store_true", help="delete the checkpoint and start over")
    a = p.parse_args(argv)
    if a.images < 1 or a.batch < 1 or a.minutes <= 0 or (a.steps is not None and a.steps < 1):
        p.error("--images, --batch, --minutes and --steps must be positive")
    cfg = DepthTrainConfig(images=a.images, batch=a.batch, seed=a.seed, minutes=a.minutes)
    try:
        out = train_depth_net(a.out, cfg, a.cache_dir, resume=not a.no_resume, steps=a.steps)
    except ValueError as e:  # a checkpoint of another config: say what to do, no traceback
        p.error(str(e))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
