"""What a text prior does with the background behind an object: keep it, or repaint it.

Clean procedural objects (held-out classifier test seeds, their captions and cameras) are
rendered over white, black, grey and random solid colours, noised at t/T in {0.2, 0.5, 0.8}
and denoised in one step with CFG (the decoded target of `target_space: image`:
x0_hat = (x_t - sqrt(1 - a_t) eps_cfg) / sqrt(a_t), decoded). Printed per background and t:

- bg_pull: mean over background pixels (alpha < 0.05) of |x0_hat - background| (0: the
  prior keeps the background it is given; large: it repaints it, e.g. to white);
- bg_rgb: the mean colour it paints there;
- object_err: mean |x0_hat - render| over object pixels (alpha > 0.95);
- colour/shape: how often the classifier names the object's colour/shape in x0_hat.

A prior that repaints other backgrounds white (the built-in text prior trained over white
only did) turns random backgrounds during distillation into a pull toward white where the
object is not, i.e. a request for white geometry; one trained over varied backgrounds (the
shipped one) keeps them (docs/builtin_prior.md, "Backgrounds").

    OMP_NUM_THREADS=1 python bench/prior_backgrounds.py [--objects 16]
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    from core.data.classifier import classify
    from core.data.procedural import CLASSIFIER_TEST_SEEDS, ProceduralWorld
    from core.priors import PriorConfig, load
    from core.priors.base import add_noise

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=16)
    ap.add_argument("--guidance", type=float, default=10.0)
    ap.add_argument("--model", default="builtin:text")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    prior = load(PriorConfig(model=a.model, view_dependent_prompt=False))
    world = ProceduralWorld()
    batch = world.sample(CLASSIFIER_TEST_SEEDS[0], a.objects)
    g = torch.Generator().manual_seed(0)
    backgrounds = {"white": torch.ones(3), "black": torch.zeros(3), "grey": torch.full((3,), 0.5),
                   "random": torch.rand(a.objects, 3, generator=g)}
    T = prior.alphas_cumprod.shape[0]
    rows = []
    for name, bg in backgrounds.items():
        bg = bg.expand(a.objects, 3) if bg.ndim == 1 else bg
        images = torch.stack([world.render_object(s, batch.cameras[i:i + 1], bg[i])[0][0]
                              for i, s in enumerate(batch.specs)])
        alpha = batch.alpha
        cond = prior.condition(batch.captions, "", batch.cameras)
        with torch.no_grad():
            x0 = prior.encode(images)
            for frac in (0.2, 0.5, 0.8):
                t = torch.full((a.objects,), int(frac * T), dtype=torch.long)
                noise = torch.randn(x0.shape, generator=g)
                x_t = add_noise(x0, noise, t, prior.alphas_cumprod)
                eps_c, eps_u = prior.predict_noise(x_t, t, cond)
                eps = eps_u + a.guidance * (eps_c - eps_u)
                ac = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
                x0_hat = prior.decode((x_t - (1 - ac).sqrt() * eps) / ac.sqrt()).clamp(0, 1)
                background = (alpha < 0.05).expand_as(images)
                obj = (alpha > 0.95).expand_as(images)
                bg_map = bg[:, :, None, None].expand_as(images)
                pull = float((x0_hat - bg_map).abs()[background].mean())
                bg_rgb = [round(float(x0_hat[:, c][background[:, c]].mean()), 3) for c in range(3)]
                err = float((x0_hat - images).abs()[obj].mean())
                colour, shape, _ = classify(x0_hat)
                row = {"background": name, "t": frac, "bg_pull": round(pull, 3), "bg_rgb": bg_rgb,
                       "object_err": round(err, 3),
                       "colour": float((colour == batch.labels["color"]).float().mean()),
                       "shape": float((shape == batch.labels["shape"]).float().mean())}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
