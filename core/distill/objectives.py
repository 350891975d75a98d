"""Score distillation objectives (SDS, VSD, DSD) on one gradient path.

Every objective does the same thing and differs only in the direction g:

    x0 = prior.encode(images)                       images [B,3,H,W] in [0,1], the render
    t ~ schedule(progress); eps ~ N(0, I); x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps
    eps_cond, eps_uncond = prior.predict_noise(x_t, t, cond)       (no grad, one 2B batch)
    eps_cfg = eps_uncond + s * (eps_cond - eps_uncond)
    g = w(t) * direction;  g = nan_to_num(g);  optional element-wise clamp of g
    loss = 0.5 * ||x0 - (x0 - g).detach()||^2 / B          so that d loss / d x0 = g / B

That last line is `target_space="latent"`, the original SDS: g reaches the image through
the VAE encoder's Jacobian. `target_space="image"` decodes the same latent target instead,

    loss = 0.5 * ||images - D(x0 - g)||^2 / B              d loss / d images = (images - D(x0 - g)) / B

an image-space target as HIFA (Zhu et al. 2024) and DreamGaussian's refinement use: the
encoder is never differentiated. With the built-in prior's small VAE this is what keeps
colours right: its encoder's Jacobian turns a latent step toward "green" into a grid of
mixed colours (2D probe: a green sphere came out pink through the encoder and green
through the decoder). The direction g, its schedule and weighting are the same either way.

The loss value itself means nothing; the objectives log gradient norms instead
(core.distill.diagnostics). PGC hooks the rendered image, whichever way g reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from core.distill.diagnostics import step_stats
from core.distill.lora import LoraConfig, LoraVariational
from core.distill.pgc import PGCConfig, PixelGradientClipper
from core.distill.schedules import ScalarSchedule, ScheduleConfig, as_schedule, sample_timesteps, timestep_weight
from core.priors.base import Cond, add_noise

Kind = Literal["sds", "vsd", "dsd"]


@dataclass
class ObjectiveConfig:
    """kind: "sds" | "vsd" | "dsd".
    guidance_scale: CFG scale s (number or ScalarSchedule over progress).
    schedule: timestep sampling and w(t).
    latent_grad_clip: bound c of the element-wise clamp of g on x0 (None: no clamp).
    dsd_unconditional, dsd_variational: DSD's weights l_u, l_v of the unconditional-domain
      and variational-domain terms (DreamPolish, Cheng et al. 2024). The paper's own values were
      not available to us, so they are config values (numbers or schedules) and the 0.5 / 0.5
      defaults are ours; (1, 0) is SDS and (0, 1) is VSD, bit for bit.
    target_space: "latent" (g applied to the encoded latents, through the encoder) or
      "image" (the latent target decoded and compared with the render; see the module doc).
    lora: the variational branch of VSD / DSD. pgc: pixel-wise gradient clipping.
    """

    kind: Kind = "sds"
    guidance_scale: float | ScalarSchedule = 7.5
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    latent_grad_clip: float | ScalarSchedule | None = None
    dsd_unconditional: float | ScalarSchedule = 0.5
    dsd_variational: float | ScalarSchedule = 0.5
    target_space: Literal["latent", "image"] = "latent"
    lora: LoraConfig = field(default_factory=LoraConfig)
    pgc: PGCConfig = field(default_factory=PGCConfig)


class VariationalScore(Protocol):
    """The score of the current renders' distribution (VSD's eps_phi): a LoRA in practice
    (core.distill.lora), an exact Gaussian fit in analytic tests (core.distill.analytic)."""

    def predict(self, x_t: Tensor, t: Tensor, cond: Cond, camera: Tensor | None) -> Tensor:
        """eps [B,C,h,w] for x_t [B,C,h,w], t [B]; camera features [B,k] or None. No grad."""

    def update(self, x0: Tensor, cond: Cond, camera: Tensor | None) -> dict[str, float]:
        """Show it this step's detached renders x0 [B,C,h,w]; returns stats. An exact fit may
        refit at once; a trained one (the LoRA) queues them and trains in an optional
        `step() -> dict`, which ScoreDistillation.step runs after the scene's optimizer step
        (so a step the runner skips for NaN never trains it), and frees the prior in an
        optional `close()` when its stage ends."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def camera_features(cond: Cond, cameras=None) -> Tensor | None:
    """[B,k] camera features for the variational branch: the prior's own (`cond.camera`), else
    the flattened c2w [B,16] of `cameras` (ProlificDreamer's camera condition), else None."""
    if cond.camera is not None:
        return cond.camera
    if cameras is not None:
        return cameras.c2w.reshape(len(cameras), 16)
    return None


class ScoreDistillation:
    """SDS, VSD or DSD as `cfg.kind` says; call it once per step.

    prior: a core.priors.base.Prior. variational: VSD/DSD's variational score (default: a
    LoRA on `prior.unet`). grad_scale: the AMP loss scale getter (e.g. GradScaler.get_scale)
    for PGC, or None. After a call, `last_grad` holds that step's g on x0 [B,C,h,w] and
    `pgc.pixel_norms[name]` (after backward) the per-pixel image-gradient norms [B,1,H,W].
    """

    def __init__(self, cfg: ObjectiveConfig, prior, variational: VariationalScore | None = None,
                 grad_scale=None) -> None:
        self.cfg, self.prior = cfg, prior
        self.guidance_scale = as_schedule(cfg.guidance_scale)
        self.latent_grad_clip = as_schedule(cfg.latent_grad_clip)
        self.l_u = as_schedule(cfg.dsd_unconditional)
        self.l_v = as_schedule(cfg.dsd_variational)
        self.pgc = PixelGradientClipper(cfg.pgc, grad_scale)
        self.variational = None
        if cfg.kind in ("vsd", "dsd"):
            self.variational = variational if variational is not None else LoraVariational(prior, cfg.lora)

    def __call__(self, images, cond: Cond, progress: float = 0.0, cameras=None,
                 generator: torch.Generator | None = None, name: str = "image") -> tuple[Tensor, dict[str, float]]:
        """One distillation step.

        images: [B,3,H,W] in [0,1] (or a RenderOutput, whose `.chw()` is used), differentiable.
        cond: the prior's conditioning for these B views. progress: training progress in [0,1].
        cameras: the B cameras (camera features for VSD's LoRA when `cond.camera` is None).
        generator: source of t and noise (default: the global torch RNG).
        name: prefix of the PGC/image-gradient stats; a normal-map objective passes its
            rendered normals mapped to [0,1] as `images` with name="normal", so PGC hooks them too.
        Returns (loss, stats); stats gains the image-gradient entries during backward.
        """
        if hasattr(images, "chw"):
            images = images.chw()
        stats: dict[str, float] = {}
        if images.requires_grad:
            self.pgc.attach(images, stats, name=name)
        image_space = self.cfg.target_space == "image"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not image_space):
            x0 = self.prior.encode(images)
        B, ac = x0.shape[0], self.prior.alphas_cumprod
        t = sample_timesteps(self.cfg.schedule, progress, B, ac.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype,
                            device=x0.device if generator is None else generator.device).to(x0.device)
        s = self.guidance_scale(progress)
        camera = camera_features(cond, cameras)
        if camera is not None:
            camera = camera.to(x0.device)
        with torch.no_grad():
            x_t = add_noise(x0.detach(), noise, t, ac)
            eps_cond, eps_uncond = self.prior.predict_noise(x_t, t, cond)
            eps_var = self.variational.predict(x_t, t, cond, camera) if self.variational is not None else None
            direction, terms, extra = self._direction(eps_cond, eps_uncond, noise, eps_var, s, progress)
            w = timestep_weight(ac, t, self.cfg.schedule.weighting).to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
            terms = {k: w * v for k, v in terms.items()}
            grad = torch.nan_to_num(w * direction)
            if self.latent_grad_clip is not None:
                c = self.latent_grad_clip(progress)
                extra["latent_grad_clip"] = c
                extra["latent_clipped_fraction"] = float((grad.abs() > c).float().mean())
                grad = grad.clamp(-c, c)
            if image_space:
                target = self.prior.decode(x0 - grad)
                if target.shape[-2:] != images.shape[-2:]:
                    target = F.interpolate(target, images.shape[-2:], mode="bilinear", align_corners=False)
        if image_space:
            loss = 0.5 * ((images - target.to(images)) ** 2).sum() / B
        else:
            loss = 0.5 * ((x0 - (x0 - grad).detach()) ** 2).sum() / B
        if self.variational is not None:
            extra.update(self.variational.update(x0.detach(), cond, camera))
        stats.update(step_stats(t, ac.shape[0], w.flatten(), s, terms, grad, **extra))
        self.last_grad = grad
        return loss, stats

    def _direction(self, eps_cond: Tensor, eps_uncond: Tensor, noise: Tensor, eps_var: Tensor | None,
                   s: float, progress: float) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        """The unweighted direction [B,C,h,w], its terms as logged separately, and scalars to log."""
        eps_cfg = eps_uncond + s * (eps_cond - eps_uncond)
        kind = self.cfg.kind
        if kind == "sds":
            direction = eps_cfg - noise  # DreamFusion (Poole et al. 2023) eq. 3
            return direction, {"sds": direction}, {}
        if kind == "vsd":
            direction = eps_cfg - eps_var  # ProlificDreamer (Wang et al. 2023) eq. 9
            return direction, {"vsd": direction}, {}
        l_u, l_v = self.l_u(progress), self.l_v(progress)
        terms = {
            "cfg": s * (eps_cond - eps_uncond),
            "unconditional": l_u * (eps_uncond - noise),
            "variational": l_v * (eps_uncond - eps_var),
        }
        # DreamPolish (Cheng et al. 2024, arXiv:2411.01602) DSD: s(e_c - e_u) + l_u(e_u - eps) + l_v(e_u - e_lora),
        # regrouped around eps_cfg so that (l_u, l_v) = (1, 0) / (0, 1) give SDS / VSD bit for bit.
        direction = eps_cfg - l_u * noise - l_v * eps_var + (l_u + l_v - 1.0) * eps_uncond
        return direction, terms, {"dsd_lambda_u": l_u, "dsd_lambda_v": l_v}

    def step(self) -> dict[str, float]:
        """After the scene's optimizer step (core.runner.Stage.after_step): train the
        variational branch on the renders of the step just taken. Returns its stats."""
        step = getattr(self.variational, "step", None)
        return step() if step is not None else {}

    def close(self) -> None:
        """The stage is over: take the variational branch (the LoRA adapter and its hook) off
        the prior, which the next stage may share."""
        close = getattr(self.variational, "close", None)
        if close is not None:
            close()

    def state_dict(self) -> dict:
        return {"variational": self.variational.state_dict() if self.variational is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.variational is not None and state.get("variational") is not None:
            self.variational.load_state_dict(state["variational"])


def build(cfg: ObjectiveConfig, prior, variational: VariationalScore | None = None,
          grad_scale=None) -> ScoreDistillation:
    """The objective `cfg.kind` names, on `prior` (see ScoreDistillation)."""
    if cfg.kind not in ("sds", "vsd", "dsd"):
        raise ValueError(f"unknown objective '{cfg.kind}'; expected sds, vsd or dsd")
    if cfg.target_space not in ("latent", "image"):
        raise ValueError(f"unknown target_space '{cfg.target_space}'; expected latent or image")
    return ScoreDistillation(cfg, prior, variational=variational, grad_scale=grad_scale)
