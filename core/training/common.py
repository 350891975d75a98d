"""What the built-in priors' trainers share (train.py: text, train_zero123.py: image + camera).

Render caches of uint8 shards (rendering costs about as much per image as a UNet step, so
images are rendered once and reused), atomic checkpoints that also hold the RNG state, the
learning-rate schedule, the v-prediction target and Min-SNR weight, EMA updates and the
VAE's latents.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.data.procedural import ProceduralWorldConfig
from core.io import save_torch
from core.runner import rng_state, set_rng_state

SHARD = 1024
SAVE_MARGIN_S = 60.0  # left of a trainer's time budget for the last checkpoint and the export


# -- render caches ----------------------------------------------------------------------------


def world_key(cfg: ProceduralWorldConfig) -> str:
    """A short hash of the world's config: caches of different worlds never mix."""
    from core.config import to_dict

    return hashlib.sha1(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:10]


def write_shards(paths: list[Path], make_shard: Callable[[int], dict], desc: str, progress: bool = True) -> None:
    """Write each missing shard `paths[i]` (named `<prefix>_<first seed>.pt`) as
    `make_shard(first seed)`; a shard appears whole or not at all, so a killed run resumes."""
    from tqdm import tqdm

    todo = [p for p in paths if not p.is_file()]
    for path in tqdm(todo, desc=desc, disable=not progress):
        shard = make_shard(int(path.stem.split("_")[-1]))
        tmp = path.with_suffix(".tmp")
        torch.save(shard, tmp)
        tmp.rename(path)


# -- checkpoints ------------------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict) -> None:
    save_torch(path, {**state, "rng": rng_state()})  # atomic: a kill mid-write keeps the previous one


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at `path` (restoring the global RNG state it holds), None if there is none."""
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=False)
    set_rng_state(state["rng"])
    return state


def restore(state: dict | None, model, optimizer, generator: torch.Generator) -> tuple[int, float]:
    """Load a phase's model, optimiser and data generator from its checkpoint `state`;
    returns (step, elapsed seconds), (0, 0.0) when there is none."""
    if state is None:
        return 0, 0.0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["opt"])
    generator.set_state(state["generator"])
    return state["step"], state["elapsed"]


# -- diffusion training -----------------------------------------------------------------------


@dataclass
class DiffusionTrainConfig:
    """Optimiser settings of a diffusion phase (AdamW, `lr_at_step`, Min-SNR gamma, EMA),
    its checkpoint interval, seed and model sizes (the prior's architecture config)."""

    batch: int = 64
    lr: float = 5e-4
    warmup_steps: int = 100
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.997
    checkpoint_minutes: float = 3.0
    seed: int = 0
    model: dict = field(default_factory=dict)


def lr_at_step(step: int, total: int, cfg) -> float:
    """Linear warm-up over cfg.warmup_steps to cfg.lr, flat, cosine decay to 10% over the
    last 40% of the steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    start = int(0.6 * total)
    if step < start:
        return cfg.lr
    frac = min(1.0, (step - start) / max(1, total - start))
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))


def warmup_cosine_lr(step: int, total: int, lr: float, warmup_steps: int) -> float:
    """Linear warm-up over `warmup_steps` to `lr`, then a cosine down to 5% of it at `total`
    (the built-in normal and depth networks' schedule)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total - warmup_steps)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def load_shards(paths: list[Path], keys: tuple[str, ...]) -> dict[str, Tensor]:
    """The tensors `keys` of every shard at `paths`, concatenated along the first axis."""
    parts = [torch.load(p) for p in paths]
    return {key: torch.cat([p[key] for p in parts]) for key in keys}


def v_target(x0: Tensor, noise: Tensor, a: Tensor) -> Tensor:
    # Salimans & Ho 2022, v = sqrt(a) eps - sqrt(1-a) x0
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def min_snr_weight(a: Tensor, gamma: float) -> Tensor:
    # Hang et al. 2023 (Min-SNR), for a v-prediction loss: min(SNR, gamma) / (SNR + 1)
    snr = a / (1 - a)
    return snr.clamp(max=gamma) / (snr + 1)


def v_prediction_loss(out: Tensor, x0: Tensor, noise: Tensor, a: Tensor, gamma: float) -> Tensor:
    """Min-SNR-weighted MSE of the UNet's v prediction `out` [B,C,h,w] for clean latents x0,
    noise and alphas_cumprod a [B,1,1,1] of the sampled timesteps -> a scalar."""
    per_sample = ((out - v_target(x0, noise, a)) ** 2).mean(dim=(1, 2, 3))
    return (min_snr_weight(a.flatten(), gamma) * per_sample).mean()


def optimizer_step(loss: Tensor, opt: torch.optim.Optimizer, params: list[Tensor], lr: float,
                   ema_params: list[Tensor], step: int, ema_decay: float) -> None:
    """One AdamW step at learning rate `lr` with the gradient norm clipped to 1, then the EMA."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    ema_update(ema_params, params, step, ema_decay)


def resume_schedule(state: dict | None, steps: int | None, budget_s: float | None
                    ) -> tuple[int, float, int | None, float | None]:
    """(step, elapsed seconds, total steps, budget seconds) a phase starts from: `steps` and
    `budget_s` when fresh; a checkpoint's own when resumed (a resumed run keeps its first
    budget and its fixed total), except that an explicit `steps` wins, e.g. to end a run
    early. Raises when neither a step count nor a budget is known."""
    step, elapsed, total = 0, 0.0, steps
    if state is not None:
        step, elapsed, total = state["step"], state["elapsed"], state["total"]
        budget_s = state.get("budget_s", budget_s)
        if steps is not None:
            total, budget_s = max(steps, step), None
    if total is None and budget_s is None:
        raise ValueError("give a step count or a time budget")
    return step, elapsed, total, budget_s


class StepTracker:
    """What follows each optimiser step of a diffusion phase: the progress bar, the loss log
    (`log_path`, jsonl, mean of every 10 steps), the schedule's length fixed after 20 timed
    steps when only a wall-time budget is given, and a checkpoint every `checkpoint_minutes`.

    step, total, elapsed: where a resumed run stands (0, cfg's steps or None, 0.0 when fresh).
    """

    def __init__(self, log_path: Path, desc: str, step: int, total: int | None, elapsed: float,
                 checkpoint_minutes: float, progress: bool = True):
        from tqdm import tqdm

        self.log = log_path.open("a")
        self.bar = tqdm(desc=desc, initial=step, total=total, disable=not progress)
        self.total, self.checkpoint_minutes = total, checkpoint_minutes
        self.t0, self.last_checkpoint, self.window = time.time() - elapsed, time.time(), []

    def elapsed(self) -> float:
        """Seconds of this phase so far, earlier runs of it included."""
        return time.time() - self.t0

    def out_of_time(self, budget_s: float | None) -> bool:
        """Whether the phase has used its budget (the machine slowed down after the schedule
        was fixed): the loop stops there, inside the budget."""
        return budget_s is not None and self.elapsed() > budget_s

    def after_step(self, step: int, loss: float, lr: float, budget_s: float | None,
                   checkpoint: Callable[[], None]) -> int | None:
        """Record step `step` (counted from 1); returns the schedule's total steps."""
        self.bar.update()
        self.window.append(loss)
        if step == 20 and self.total is None:
            # fix the schedule's length from the measured step time (stored in checkpoints)
            per_step = self.elapsed() / 20
            self.total = max(step + 1, int(budget_s / per_step))
            self.bar.total = self.total
        if step % 10 == 0:
            self.bar.set_postfix(loss=f"{np.mean(self.window):.4f}")
            self.log.write(json.dumps({"step": step, "loss": float(np.mean(self.window)), "lr": lr,
                                       "seconds": round(self.elapsed(), 1)}) + "\n")
            self.log.flush()
            self.window = []
        if time.time() - self.last_checkpoint > self.checkpoint_minutes * 60:
            checkpoint()
            self.last_checkpoint = time.time()
        return self.total


@torch.no_grad()
def ema_update(ema_params: list[Tensor], params: list[Tensor], step: int, decay: float) -> None:
    """EMA with a warm-up: the decay is (1 + step) / (10 + step) until it reaches `decay`."""
    torch._foreach_lerp_(ema_params, params, 1 - min(decay, (1 + step) / (10 + step)))


@torch.no_grad()
def encode_latents(vae, images: Tensor, batch: int = 256) -> tuple[Tensor, Tensor]:
    """Posterior mean and std of uint8 images [N,3,H,W] -> each [N,C,h,w], unscaled."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        post = vae.encode(images[i:i + batch].float() / 127.5 - 1).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)
