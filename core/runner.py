"""The one loop (DESIGN.md): every job is stages of
    batch = batches(step) -> out = scene.render(cameras) -> loss = loss_fn(out, batch) -> backward
    -> optimizer step -> scene.update(step, out) -> progress, previews, checkpoint.

The runner owns seeds, checkpoints, resume, NaN handling, progress and cancellation, for
the CLI, the batch runner and the web app alike. Pipelines only build `Stage`s.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import Tensor

from core.cameras import Cameras
from core.io import append_jsonl, save_torch, write_png, write_text
from renderers.base import RenderOutput, Scene


class RunError(RuntimeError):
    """A run stopped for a reason the user should read (the message names stage and step)."""


class Cancelled(RuntimeError):
    """The caller asked the run to stop; the last checkpoint is kept."""


@dataclass
class Batch:
    """What one step renders and compares against: cameras, background [3] or [B,3], and
    anything the loss needs (targets, conditioning) in `data`."""

    cameras: Cameras
    background: Tensor | None = None
    data: dict[str, Any] = field(default_factory=dict)


LossFn = Callable[[RenderOutput, Batch, int, float], "tuple[Tensor, dict[str, float]]"]


@dataclass
class Stage:
    """One stage of a pipeline. `batches(step)` and `loss(out, batch, step, progress)` must
    draw randomness only from generators whose state `stateful` exposes (or from the global
    torch RNG, which the runner checkpoints), so a resumed run repeats an uninterrupted one."""

    name: str
    scene: Scene
    steps: int
    batches: Callable[[int], Batch]
    loss: LossFn
    optimizer: torch.optim.Optimizer
    stateful: dict[str, Any] = field(default_factory=dict)
    preview_every: int = 0
    checkpoint_every: int = 0
    max_bad_steps: int = 5
    preview: Callable[[RenderOutput], Tensor] | None = None  # [H,W,3] image; default preview_strip
    # What else steps with the optimizer (e.g. VSD's LoRA): called right after it, never on a
    # step skipped for NaN/Inf; its stats join the step's metrics record.
    after_step: Callable[[], dict[str, float]] | None = None


class Callbacks(Protocol):
    """How a door (CLI, web app, batch) watches and steers a run."""

    def on_step(self, stage: str, step: int, total: int, stats: dict[str, float]) -> None: ...

    def on_preview(self, stage: str, step: int, path: Path) -> None: ...

    def should_stop(self) -> bool: ...


class SilentCallbacks:
    """Watch nothing, never stop: for benches and tests that run a stage quietly (and the base
    of callbacks that only watch steps)."""

    def on_step(self, stage, step, total, stats):
        pass

    def on_preview(self, stage, step, path):
        pass

    def should_stop(self):
        return False


class TqdmCallbacks(SilentCallbacks):
    """Terminal progress bar with ETA and the latest loss."""

    def __init__(self) -> None:
        self._bar = None
        self._stage = None

    def on_step(self, stage, step, total, stats):
        from tqdm.auto import tqdm

        if self._stage != stage:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, desc=stage, initial=step - 1, dynamic_ncols=True)
            self._stage = stage
        self._bar.update(1)
        if "loss" in stats:
            self._bar.set_postfix(loss=f"{stats['loss']:.4g}", refresh=False)
        if step >= total:
            self._bar.close()
            self._bar, self._stage = None, None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global torch, numpy and Python RNG states (for exact resume)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class RunFolder:
    """A job's folder: metrics.jsonl, previews/, checkpoints/ (one per stage, latest only)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "previews").mkdir(exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def checkpoint(self, stage: str) -> Path:
        return self.path / "checkpoints" / f"{stage}.pt"

    def log(self, record: dict) -> None:
        append_jsonl(self.metrics, record)

    def truncate_metrics(self, stage: str, step: int) -> None:
        """Drop the records of `stage` after `step` (and a line a crash cut short): a stage
        resumed from its checkpoint at `step` logs those steps again, once."""
        import json

        if not self.metrics.is_file():
            return
        kept = []
        for line in self.metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("stage") == stage and int(record.get("step", 0)) > step:
                continue
            kept.append(line + "\n")
        write_text(self.metrics, "".join(kept))


def save_checkpoint(folder: RunFolder, stage: Stage, step: int) -> Path:
    state = {
        "stage": stage.name,
        "step": step,
        "scene": stage.scene.state_dict(),
        "optimizer": stage.optimizer.state_dict(),
        "stateful": {k: v.state_dict() for k, v in stage.stateful.items()},
        "rng": rng_state(),
    }
    return save_torch(folder.checkpoint(stage.name), state)


def load_checkpoint(folder: RunFolder, stage: Stage) -> int:
    """Restore a stage from its checkpoint; returns the last completed step (0 if none)."""
    path = folder.checkpoint(stage.name)
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    stage.scene.load_state_dict(state["scene"])
    rebind = getattr(stage.scene, "rebind_optimizer", None)
    if rebind is not None:
        rebind(stage.optimizer)
    stage.optimizer.load_state_dict(state["optimizer"])
    for k, v in stage.stateful.items():
        v.load_state_dict(state["stateful"][k])
    set_rng_state(state["rng"])
    return int(state["step"])


def _grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and not torch.isfinite(p.grad).all():
                return False
    return True


def run_stage(stage: Stage, folder: RunFolder, callbacks: Callbacks | None = None, resume: bool = True) -> int:
    """Run `stage` from its checkpoint (when `resume`) to `stage.steps`; returns steps done.

    A step whose loss or gradients are not finite is skipped and counted; more than
    `stage.max_bad_steps` in a row raise RunError naming the stage and step, with the
    last good checkpoint left in place. `callbacks.should_stop()` checkpoints and raises
    Cancelled. metrics.jsonl keeps each step of the stage once: records after the step the
    stage starts from are dropped first (they were logged after the checkpoint, before a kill).
    """
    callbacks = callbacks or TqdmCallbacks()
    start = load_checkpoint(folder, stage) if resume else 0
    folder.truncate_metrics(stage.name, start)  # steps after the checkpoint are run (and logged) again
    bad_in_row = 0
    before_backward = getattr(stage.scene, "before_backward", None)
    for step in range(start + 1, stage.steps + 1):
        if callbacks.should_stop():
            save_checkpoint(folder, stage, step - 1)
            raise Cancelled(f"stopped in stage '{stage.name}' before step {step}")
        tic = time.perf_counter()
        progress = (step - 1) / max(1, stage.steps - 1)
        batch = stage.batches(step)
        out = stage.scene.render(batch.cameras, batch.background)
        loss, stats = stage.loss(out, batch, step, progress)
        stage.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            ok = False
        else:
            if before_backward is not None:
                before_backward(step, out)
            loss.backward()
            ok = _grads_finite(stage.optimizer)
        if not ok:
            bad_in_row += 1
            stage.optimizer.zero_grad(set_to_none=True)
            folder.log({"stage": stage.name, "step": step, "skipped": "non-finite loss or gradient"})
            if bad_in_row > stage.max_bad_steps:
                raise RunError(
                    f"stage '{stage.name}' step {step}: {bad_in_row} steps in a row had NaN/Inf loss or "
                    f"gradients; stopped. The last good checkpoint is {folder.checkpoint(stage.name)}"
                )
            continue
        bad_in_row = 0
        stage.optimizer.step()
        if stage.after_step is not None:
            stats = {**stats, **stage.after_step()}
        stage.scene.update(step, out)
        record = {"stage": stage.name, "step": step, "loss": float(loss.detach()), **stats,
                  "time_s": time.perf_counter() - tic}
        folder.log(record)
        callbacks.on_step(stage.name, step, stage.steps, record)
        if stage.preview_every and (step % stage.preview_every == 0 or step == stage.steps):
            image = stage.preview(out) if stage.preview is not None else preview_strip(out)
            path = write_png(folder.path / "previews" / f"{stage.name}_{step:06d}.png", image)
            callbacks.on_preview(stage.name, step, path)
        if stage.checkpoint_every and step % stage.checkpoint_every == 0:
            save_checkpoint(folder, stage, step)
    save_checkpoint(folder, stage, stage.steps)
    return stage.steps - start


def preview_strip(out: RenderOutput, max_views: int = 4) -> Tensor:
    """[H, W*n, 3] image of the first renders side by side."""
    rgb = out.rgb[:max_views].detach().clamp(0, 1)
    return torch.cat(list(rgb), dim=1)


