"""At which diffusion timesteps does the built-in text prior tell one shape from another?

For a prompt "a <colour> <shape A>", clean procedural renders of shape A and of a rival
shape B (same colour, same cameras, matte, plain) are noised at t/T in {0.1, ..., 0.9}; the
CFG noise prediction's error ||eps_cfg(x_t) - eps||^2 (the quantity SDS descends) is
averaged over views and noise draws. error(B) - error(A) > 0 means the prior prefers the
prompted shape at that t: SDS at that t pulls a B-like asset toward A. Where the gap is ~0
the prior cannot see the difference and SDS there does not fix a confusion.

    OMP_NUM_THREADS=1 python bench/prior_shape_preference.py --pairs purple:cone:cylinder blue:pyramid:cone
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch


def main() -> None:
    from core.data.procedural import COLOR_RGB, ProceduralWorld, sample_camera_params, sample_spec
    from core.priors import PriorConfig, load
    from core.priors.base import add_noise

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=["purple:cone:cylinder", "blue:pyramid:cone", "red:pyramid:cone"])
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=10.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    prior = load(PriorConfig(model="builtin:text", view_dependent_prompt=False))
    world = ProceduralWorld()
    T = prior.alphas_cumprod.shape[0]
    base = sample_spec(2_000_000, world.cfg)
    cams = world.cameras([sample_camera_params(3_000_000 + v, world.cfg) for v in range(a.views)])
    results = []
    for pair in a.pairs:
        colour, shape_a, shape_b = pair.split(":")
        prompt = f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape_a}"
        cond = prior.condition([prompt] * a.views, "", cams)
        x0 = {}
        for shape in (shape_a, shape_b):
            spec = dataclasses.replace(base, shape=shape, color=colour, rgb=COLOR_RGB[colour], pattern="plain",
                                       material="matte", roughness=0.8, size=0.55)
            images = world.render([spec] * a.views, cams)[0]
            with torch.no_grad():
                x0[shape] = prior.encode(images)
        g = torch.Generator().manual_seed(0)
        row = {"prompt": prompt, "rival": shape_b, "gap": {}}
        for frac in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]:
            t = torch.full((a.views,), int(frac * T), dtype=torch.long)
            err = {s: 0.0 for s in x0}
            for _ in range(a.draws):
                noise = torch.randn(x0[shape_a].shape, generator=g)
                for s in x0:
                    with torch.no_grad():
                        eps_c, eps_u = prior.predict_noise(add_noise(x0[s], noise, t, prior.alphas_cumprod), t, cond)
                    err[s] += float(((eps_u + a.guidance * (eps_c - eps_u) - noise) ** 2).mean()) / a.draws
            row["gap"][frac] = round(err[shape_b] - err[shape_a], 4)
        results.append(row)
        print(json.dumps(row), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
