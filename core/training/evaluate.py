"""How good is the built-in text prior? Sample it, and let the procedural classifier judge.

For every (colour, shape) pair the prompt "a <colour> <shape>" is sampled with DDIM and
classifier-free guidance at a few camera azimuths (the prior adds its view suffix), and
`core.data.classifier` (trained on seeds the prior never saw) names the colour and shape
of each sample. The same classifier on real renders of the same prompts and cameras gives
the ceiling the numbers should be read against.

    python -m core.training.evaluate --model core/priors/builtin/text \
        --out docs/builtin_text_samples.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.cameras import Cameras, spherical_cameras
from core.priors.builtin import TEXT_PRIOR
from core.data.procedural import (COLOR_RGB, COLORS, SHAPES, ProceduralWorld, ProceduralWorldConfig, make_caption,
                                  sample_spec)

AZIMUTHS = (0.0, 90.0, 180.0, 270.0)


@torch.no_grad()
def ddim_sample(prior, prompts: list[str], cameras: Cameras, steps: int = 40, guidance_scale: float = 6.0,
                generator: torch.Generator | None = None, batch: int = 64) -> Tensor:
    """Images [B,3,H,W] in [0,1] for B prompts and B cameras (`ddim_sample_cond` in batches)."""
    out = []
    for i in range(0, len(prompts), batch):
        cams = Cameras(cameras.c2w[i:i + batch], cameras.K[i:i + batch], cameras.width, cameras.height)
        out.append(ddim_sample_cond(prior, prior.condition(prompts[i:i + batch], cameras=cams), steps,
                                    guidance_scale, generator))
    return torch.cat(out)


@torch.no_grad()
def ddim_sample_cond(prior, cond, steps: int = 40, guidance_scale: float = 6.0,
                     generator: torch.Generator | None = None) -> Tensor:
    """Images [B,3,H,W] in [0,1] for a conditioning of batch B, through the Prior contract
    only (predict_noise, decode): DDIM (Song et al. 2021, eta 0) on the prior's training
    schedule with "trailing" timesteps, CFG eps_u + s (eps_c - eps_u)."""
    from diffusers import DDIMScheduler

    B = len(cond.embeds)
    scheduler = DDIMScheduler(num_train_timesteps=len(prior.alphas_cumprod), trained_betas=_betas(prior),
                              prediction_type="epsilon", timestep_spacing="trailing", set_alpha_to_one=False,
                              clip_sample=False)
    scheduler.set_timesteps(steps)
    h, w = (r // prior.vae_scale_factor for r in prior.resolution)
    x = torch.randn((B, prior.latent_channels, h, w), generator=generator).to(prior.device)
    for t in scheduler.timesteps:
        eps_c, eps_u = prior.predict_noise(x, t.to(prior.device), cond)
        x = scheduler.step(eps_u + guidance_scale * (eps_c - eps_u), t, x).prev_sample
    return prior.decode(x).cpu()


def _betas(prior) -> np.ndarray:
    ac = prior.alphas_cumprod.double().cpu()
    return (1 - ac / torch.cat([ac.new_ones(1), ac[:-1]])).numpy()


def eval_cameras(n_per_prompt: int, elevation: float = 15.0, radius: float = 2.5,
                 fov: float = 45.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(elevation, azimuth, radius, fov_y) [n] of the first n of AZIMUTHS, inside the training ranges."""
    az = torch.tensor(AZIMUTHS[:n_per_prompt])
    n = len(az)
    return torch.full((n,), elevation), az, torch.full((n,), radius), torch.full((n,), fov)


def evaluate_prior(model: str, steps: int = 40, guidance_scale: float = 6.0, seed: int = 0,
                   grid_path: str | Path | None = None, views: int = 4) -> dict:
    """Colour and shape accuracy of DDIM samples of every "a <colour> <shape>" at `views`
    azimuths, judged by the shipped classifier, beside its accuracy on real renders.
    Writes a grid (rows: shapes, columns: colours, each cell 2x2 views) to `grid_path`."""
    from core.data.classifier import classify
    from core.priors import PriorConfig, load

    torch.set_num_threads(1)
    t0 = time.time()
    prior = load(PriorConfig(model=model, device="cpu"))
    res = prior.resolution[0]
    el, az, r, fov = eval_cameras(views)
    pairs = [(c, s) for s in SHAPES for c in COLORS]
    prompts = [make_caption(s, c, "matte", "plain", material_word=False) for c, s in pairs for _ in range(len(az))]
    n = len(pairs)
    cams = spherical_cameras(el.repeat(n), az.repeat(n), r.repeat(n), fov.repeat(n), res, res)
    g = torch.Generator().manual_seed(seed)
    images = ddim_sample(prior, prompts, cams, steps, guidance_scale, g)
    color_true = torch.tensor([COLORS.index(c) for c, _ in pairs]).repeat_interleave(len(az))
    shape_true = torch.tensor([SHAPES.index(s) for _, s in pairs]).repeat_interleave(len(az))
    color_pred, shape_pred, _ = classify(images)
    real = _real_renders(pairs, cams, res)
    real_color, real_shape, _ = classify(real)
    with torch.no_grad():  # the VAE alone: encode (posterior mean) -> decode the same renders
        recon = (prior.vae.decode(prior.vae.encode(real * 2 - 1).latent_dist.mean).sample / 2 + 0.5).clamp(0, 1)
    recon_color, recon_shape, _ = classify(recon)
    shape_hit = (shape_pred == shape_true).float()
    color_hit = (color_pred == color_true).float()
    metrics = {
        "color_accuracy": float(color_hit.mean()),
        "shape_accuracy": float(shape_hit.mean()),
        "color_accuracy_by_color": {c: float(color_hit[color_true == i].mean()) for i, c in enumerate(COLORS)},
        "color_mistakes": _mistakes(color_true, color_pred, COLORS),
        "shape_accuracy_by_shape": {s: float(shape_hit[shape_true == i].mean()) for i, s in enumerate(SHAPES)},
        "real_render_color_accuracy": float((real_color == color_true).float().mean()),
        "real_render_shape_accuracy": float((real_shape == shape_true).float().mean()),
        "vae_round_trip_mse": float(F.mse_loss(recon, real)),
        "vae_round_trip_color_accuracy": float((recon_color == color_true).float().mean()),
        "vae_round_trip_shape_accuracy": float((recon_shape == shape_true).float().mean()),
        "samples": len(prompts), "ddim_steps": steps, "guidance_scale": guidance_scale, "seed": seed,
        "seconds": round(time.time() - t0, 1),
    }
    if grid_path is not None:
        write_grid(grid_path, images, len(SHAPES), len(COLORS), len(az))
    return metrics


def _mistakes(true: Tensor, pred: Tensor, names: list[str]) -> dict[str, int]:
    """{"orange->yellow": count} over the misclassified samples."""
    out: dict[str, int] = {}
    for t, p in zip(true.tolist(), pred.tolist()):
        if t != p:
            key = f"{names[t]}->{names[p]}"
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _real_renders(pairs, cams: Cameras, res: int) -> Tensor:
    """Plain matte renders of each (colour, shape) at the same cameras: [B,3,H,W] in [0,1]."""
    from dataclasses import replace

    world = ProceduralWorld(ProceduralWorldConfig(resolution=res))
    views = len(cams) // len(pairs)
    specs = []
    for k, (c, s) in enumerate(pairs):
        base = sample_spec(10_000 + k, world.cfg)  # a classifier-training seed: proportions only
        spec = replace(base, shape=s, color=c, material="matte", pattern="plain", rgb=COLOR_RGB[c])
        specs += [spec] * views
    return world.render(specs, cams)[0]


def write_grid(path: str | Path, images: Tensor, rows: int, cols: int, views: int, scale: int = 2) -> Path:
    """images [rows*cols*views,3,H,W] -> one PNG; each cell shows its views 2 per row."""
    from core.io import write_png

    _, _, H, W = images.shape
    per_row = 2 if views > 1 else 1
    vr = (views + per_row - 1) // per_row
    cell_h, cell_w, pad = vr * H, per_row * W, 2
    canvas = torch.ones(3, rows * (cell_h + pad), cols * (cell_w + pad))
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        for v in range(views):
            y = r * (cell_h + pad) + (v // per_row) * H
            x = c * (cell_w + pad) + (v % per_row) * W
            canvas[:, y:y + H, x:x + W] = images[k * views + v]
    canvas = canvas.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return write_png(path, canvas.permute(1, 2, 0).numpy())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Sample the built-in text prior and judge it with the classifier.")
    p.add_argument("--model", default=str(TEXT_PRIOR))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--guidance", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--out", default=None, help="sample grid PNG")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    a = p.parse_args(argv)
    metrics = evaluate_prior(a.model, a.steps, a.guidance, a.seed, a.out, a.views)
    if a.json:
        Path(a.json).write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
