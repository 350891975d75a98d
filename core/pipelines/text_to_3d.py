"""Text-to-3D: score distillation from a text prior in stages, as presets describe them
(DreamGaussian-like Gaussians + SDS; DreamPolish-like field -> mesh -> polish -> texture).
The stage engine is core/pipelines/distillation.py; this module adds the prompt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.pipelines.distillation import DistillationConfig, check_memory, run_distillation
from core.priors import load
from core.runner import Callbacks


@dataclass
class TextTo3DConfig(DistillationConfig):
    prompt: str = ""
    negative_prompt: str = ""


def generate(cfg: TextTo3DConfig, out_dir: str | Path, callbacks: Callbacks | None = None,
             prior=None) -> dict[str, Path]:
    """Distil `cfg.prompt` into `out_dir` (see run_distillation); returns the written paths."""
    if not cfg.prompt.strip():
        raise UserError('the prompt is empty: say what to generate, e.g. "a red cube"')
    check_memory(cfg)   # before loading the prior: a job that cannot fit stops at once
    prior = prior if prior is not None else load(cfg.prior)
    check_vocabulary = getattr(prior, "check_vocabulary", None)
    if check_vocabulary is not None:  # words the prior does not know stop the job before the run folder exists
        for prompt in (cfg.prompt, cfg.negative_prompt):
            check_vocabulary(prompt)

    def condition(cameras):
        return prior.condition(cfg.prompt, cfg.negative_prompt, cameras)

    return run_distillation(cfg, out_dir, prior, condition, callbacks)
