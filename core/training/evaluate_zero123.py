"""How good is the built-in Zero123 prior? Novel views of objects it never saw, against the truth.

For each held-out object (seeds from CLASSIFIER_TEST_SEEDS: outside the prior's training
range) a reference view at elevation 15 deg and a random azimuth is rendered; the prior
samples the object at relative azimuth +45, -45, +90, -90 deg (same elevation and radius)
and at +30 deg elevation (same azimuth) with DDIM and classifier-free guidance, and each
sample is compared with the true render of that view:

- PSNR over the whole image, and over the true object's pixels (foreground PSNR);
- IoU of the silhouettes (pixels away from the background, in the sample and the truth);
- colour and shape accuracy of `core.data.classifier` on the samples.

The prior's targets were drawn over varied backgrounds (white half the time; the reference
is always over white), so a sample's background is the prior's own draw: each image's
background is read off its one-pixel border (the per-channel median; the objects are
centred and span 50-70% of the frame), the truth is re-composited over the sample's
background (I_w - (1 - alpha)(1 - b), exact: compositing is linear) before PSNR, and a
silhouette is the pixels away from the image's own background. Over white this is the
white-background comparison of the earlier reports.

The baseline is the trivial novel-view synthesis: copy the reference image to every view.
The world's key light follows the camera's azimuth, so an object that is symmetric about
its vertical axis (sphere, cylinder, cone, torus, capsule, unless checkered) looks the same
from every azimuth and copying is exact there; the metrics are also given over the views
that change (`changing_views`: copy-the-reference PSNR below 35 dB).

    python -m core.training.evaluate_zero123 --out docs/quality_builtin_zero123.json \
        --grid docs/builtin_zero123_samples.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from core.data.classifier import over_background
from core.data.procedural import CLASSIFIER_TEST_SEEDS, ProceduralWorld, ProceduralWorldConfig

# target views relative to the reference: (delta elevation, delta azimuth) in degrees
DELTAS = ((0.0, 45.0), (0.0, -45.0), (0.0, 90.0), (0.0, -90.0), (30.0, 0.0))
CHANGED_VIEW_PSNR_DB = 35.0
# a pixel belongs to the silhouette when a channel is this far from the white background
# (white objects are shaded to <= ~0.93, so they still count)
SILHOUETTE_THRESHOLD = 0.05


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """PSNR in dB of images a, b [B,3,H,W] in [0,1], over the pixels of mask [B,1,H,W] if given -> [B]."""
    se = (a - b) ** 2
    if mask is None:
        mse = se.mean(dim=(1, 2, 3))
    else:
        m = mask.expand_as(se)
        mse = (se * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp(min=1)
    return -10 * torch.log10(mse.clamp(min=1e-10))


def border_background(images: Tensor) -> Tensor:
    """[B,3,H,W] -> [B,3]: the per-channel median of each image's one-pixel border."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], -1)
    return border.median(dim=-1).values


def silhouette(images: Tensor, background: Tensor | None = None) -> Tensor:
    """[B,3,H,W] in [0,1] over background [B,3] (None: white) -> bool [B,1,H,W]: pixels
    that are not background."""
    bg = torch.ones(len(images), 3) if background is None else background
    return ((images - bg[:, :, None, None]).abs().amax(dim=1, keepdim=True) > SILHOUETTE_THRESHOLD)


def iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of bool masks [B,1,H,W] -> [B]."""
    inter = (a & b).sum(dim=(1, 2, 3)).float()
    union = (a | b).sum(dim=(1, 2, 3)).float()
    return inter / union.clamp(min=1)


def held_out_views(n_objects: int, seed: int = 0, elevation: float = 15.0, radius: float = 2.5,
                   fov: float = 45.0, resolution: int = 32, first_object: int = 0) -> dict:
    """Renders of held-out objects CLASSIFIER_TEST_SEEDS[0] + first_object + i: reference [n,3,H,W] at a
    random azimuth, targets [n,V,3,H,W] and their alpha [n,V,1,H,W] at DELTAS from it,
    colour/shape labels [n]."""
    world = ProceduralWorld(ProceduralWorldConfig(resolution=resolution))
    g = torch.Generator().manual_seed(seed)
    ref_azimuth = torch.rand(n_objects, generator=g) * 360 - 180
    first_seed = CLASSIFIER_TEST_SEEDS[0] + first_object
    specs = [world.spec(first_seed + i) for i in range(n_objects)]
    offsets = ((0.0, 0.0),) + DELTAS
    params = [(elevation + d_el, float(az) + d_az, radius, fov) for az in ref_azimuth for d_el, d_az in offsets]
    rgb, alpha = world.render([s for s in specs for _ in offsets], world.cameras(params))
    rgb = rgb.reshape(n_objects, len(offsets), *rgb.shape[1:])
    alpha = alpha.reshape(n_objects, len(offsets), *alpha.shape[1:])
    return {"reference": rgb[:, 0], "targets": rgb[:, 1:], "target_alpha": alpha[:, 1:],
            "color": torch.tensor([s.labels["color"] for s in specs]),
            "shape": torch.tensor([s.labels["shape"] for s in specs])}


@torch.no_grad()
def sample_novel_views(prior, references: Tensor, deltas: Tensor, steps: int = 40, guidance_scale: float = 3.0,
                       generator: torch.Generator | None = None) -> Tensor:
    """references [n,3,H,W] in [0,1], deltas [V,3] (elevation deg, azimuth deg, radius) of
    the target views -> samples [n,V,3,H,W] in [0,1] from the prior's DDIM sampler, all n*V
    in one batch (one UNet call a step is cheaper than n small ones on a CPU)."""
    from core.priors.base import Cond
    from core.training.evaluate import ddim_sample_cond

    conds = [prior.condition(references[i:i + 1], cameras=deltas) for i in range(len(references))]
    cond = Cond(torch.cat([c.embeds for c in conds]), torch.cat([c.uncond_embeds for c in conds]),
                extras={"concat": torch.cat([c.extras["concat"] for c in conds])})
    samples = ddim_sample_cond(prior, cond, steps, guidance_scale, generator)
    return samples.reshape(len(references), len(deltas), *samples.shape[1:])


def _summary(values: Tensor) -> float:
    return round(float(values.mean()), 3)


def evaluate_zero123(model: str = "builtin:zero123", n_objects: int = 64, steps: int = 40,
                     guidance_scale: float = 3.0, seed: int = 0, grid_path: str | Path | None = None,
                     batch: int = 8, first_object: int = 0, progress: bool = True) -> dict:
    """Novel-view metrics of the prior at `model` on `n_objects` held-out objects against the
    copy-the-reference baseline, sampling `batch` objects at a time; writes a sample grid to
    `grid_path` (first 8 objects). first_object: skip that many held-out objects (e.g. to
    choose the guidance scale on objects the reported numbers do not use)."""
    from tqdm import tqdm

    from core.data.classifier import classify
    from core.priors import PriorConfig, load

    torch.set_num_threads(1)
    t0 = time.time()
    prior = load(PriorConfig(kind="zero123", model=model, device="cpu"))
    data = held_out_views(n_objects, seed, resolution=prior.resolution[0], first_object=first_object)
    deltas = torch.tensor([(d_el, d_az, 0.0) for d_el, d_az in DELTAS])
    g = torch.Generator().manual_seed(seed)
    samples = torch.cat([sample_novel_views(prior, data["reference"][i:i + batch], deltas, steps, guidance_scale, g)
                         for i in tqdm(range(0, n_objects, batch), desc="novel views", disable=not progress)])
    V = len(DELTAS)
    flat = lambda x: x.flatten(0, 1)  # noqa: E731  [n,V,...] -> [n*V,...]
    truth_white, truth_alpha = flat(data["targets"]), flat(data["target_alpha"])
    fg = truth_alpha > 0.5
    methods = {"prior": flat(samples), "copy_reference": data["reference"].repeat_interleave(V, 0)}
    color, shape = data["color"].repeat_interleave(V), data["shape"].repeat_interleave(V)
    view = torch.arange(V).repeat(n_objects)
    changing = psnr(methods["copy_reference"], truth_white) < CHANGED_VIEW_PSNR_DB
    names = [f"el{d_el:+.0f}" if d_el else f"az{d_az:+.0f}" for d_el, d_az in DELTAS]
    metrics: dict = {}
    for name, images in {**methods, "true_render": truth_white}.items():
        bg = border_background(images)
        truth = over_background(truth_white, truth_alpha, bg)
        p, p_fg = psnr(images, truth), psnr(images, truth, fg)
        sil = iou(silhouette(images, bg), silhouette(truth, bg))
        color_pred, shape_pred, _ = classify(images)
        color_hit, shape_hit = (color_pred == color).float(), (shape_pred == shape).float()
        metrics[name] = {
            "psnr_db": _summary(p), "foreground_psnr_db": _summary(p_fg), "silhouette_iou": _summary(sil),
            "color_accuracy": _summary(color_hit), "shape_accuracy": _summary(shape_hit),
            "white_background_share": _summary(((1 - bg).amax(dim=1) < SILHOUETTE_THRESHOLD).float()),
            "changing_views": {"psnr_db": _summary(p[changing]), "foreground_psnr_db": _summary(p_fg[changing]),
                               "silhouette_iou": _summary(sil[changing]),
                               "shape_accuracy": _summary(shape_hit[changing])},
            "by_view": {n: {"psnr_db": _summary(p[view == k]), "silhouette_iou": _summary(sil[view == k]),
                            "changing_views": int((changing & (view == k)).sum()),
                            "changing_psnr_db": _summary(p[changing & (view == k)]),
                            "changing_silhouette_iou": _summary(sil[changing & (view == k)])}
                        for k, n in enumerate(names)},
        }
    for key in ("psnr_db", "foreground_psnr_db", "silhouette_iou", "changing_views", "by_view"):  # exact: the truth
        metrics["true_render"].pop(key)
    metrics["setup"] = {
        "model": model, "objects": n_objects, "views_per_object": V,
        "object_seeds": [CLASSIFIER_TEST_SEEDS[0] + first_object, CLASSIFIER_TEST_SEEDS[0] + first_object + n_objects],
        "target_views": names, "changing_views": int(changing.sum()),
        "changing_view_threshold_db": CHANGED_VIEW_PSNR_DB,
        "reference_elevation_deg": 15.0, "radius": 2.5, "fov_deg": 45.0,
        "ddim_steps": steps, "guidance_scale": guidance_scale, "seed": seed,
        "silhouette_threshold": SILHOUETTE_THRESHOLD, "seconds": round(time.time() - t0, 1)}
    if grid_path is not None:
        write_sample_grid(grid_path, data["reference"][:8], data["targets"][:8], samples[:8])
    return metrics


def write_sample_grid(path: str | Path, reference: Tensor, targets: Tensor, samples: Tensor, scale: int = 3) -> Path:
    """One row an object: [reference | true view 1 | sample view 1 | true view 2 | ...] (DELTAS).
    reference [n,3,H,W], targets and samples [n,V,3,H,W], all in [0,1]."""
    from core.io import write_png

    n, V, _, H, W = targets.shape
    pad = 2
    cols = 1 + 2 * V
    canvas = torch.ones(3, n * (H + pad), cols * (W + pad) + pad)
    for i in range(n):
        tiles = [reference[i]] + [t for v in range(V) for t in (targets[i, v], samples[i, v])]
        for c, tile in enumerate(tiles):
            x = c * (W + pad) + (pad if c > 0 else 0)  # a gap after the reference column
            canvas[:, i * (H + pad):i * (H + pad) + H, x:x + W] = tile
    canvas = canvas.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return write_png(path, canvas.permute(1, 2, 0).numpy())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Novel views of held-out objects from the built-in Zero123 prior, "
                                            "against the truth and the copy-the-reference baseline.")
    p.add_argument("--model", default="builtin:zero123")
    p.add_argument("--objects", type=int, default=64)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first-object", type=int, default=0, help="skip this many held-out objects")
    p.add_argument("--out", default=None, help="metrics JSON")
    p.add_argument("--grid", default=None, help="sample grid PNG")
    a = p.parse_args(argv)
    if a.objects < 1 or a.steps < 1 or a.first_object < 0 or not math.isfinite(a.guidance):
        p.error("--objects and --steps must be positive, --first-object >= 0 and --guidance finite")
    metrics = evaluate_zero123(a.model, a.objects, a.steps, a.guidance, a.seed, a.grid, first_object=a.first_object)
    text = json.dumps(metrics, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
