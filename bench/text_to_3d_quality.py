"""Quality and wall time of text-to-3D presets on the built-in prior, judged by the
procedural-world classifier (core/data/classifier.py, trained on held-out objects).

For each prompt "a <colour> <shape>" the preset runs to the end; the final asset is
rendered from 8 views around it (elevation 15 deg, the training cameras' middle) and each
view is classified; a prompt's colour (shape) is right when the majority vote of its
views names the prompt's colour (shape). Prints per-prompt rows, accuracies and time per
prompt, and writes them as JSON.

    OMP_NUM_THREADS=1 python bench/text_to_3d_quality.py --preset text_to_3d/gaussian_sds
    OMP_NUM_THREADS=1 python bench/text_to_3d_quality.py --preset text_to_3d/gaussian_sds \\
        --override stages.0.objective.kind=dsd --override stages.0.objective.pgc.enabled=true
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

# 12 prompts: every colour and shape of the world at least once (plus the capsule).
PROMPTS = [
    ("red", "cube"), ("green", "sphere"), ("blue", "cylinder"), ("yellow", "cone"),
    ("white", "torus"), ("black", "pyramid"), ("orange", "cube"), ("purple", "sphere"),
    ("red", "cone"), ("blue", "torus"), ("green", "pyramid"), ("yellow", "capsule"),
]


def weights_fingerprint(model: str) -> str:
    """First 12 hex digits of the SHA-1 over a prior folder's weight files (which weights a
    table was measured on); the model name itself for a hub id."""
    import hashlib

    from core.priors.loading import BUILTIN_PREFIX, builtin_path

    folder = builtin_path(model[len(BUILTIN_PREFIX):]) if model.startswith(BUILTIN_PREFIX) else Path(model)
    if not folder.is_dir():
        return model
    digest = hashlib.sha1()
    for f in sorted(folder.rglob("*.safetensors")):
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def judge(scene, views: int = 8, size: int = 64) -> tuple[list[str], list[str]]:
    from core.cameras import orbit_cameras
    from core.data.classifier import classify
    from core.data.procedural import COLORS, SHAPES

    cams = orbit_cameras(views, elevation_deg=15.0, radius=2.5, fov_y_deg=45.0, width=size, height=size)
    with torch.no_grad():
        out = scene.render(cams, torch.ones(3))
        color, shape, _ = classify(out.chw().clamp(0, 1))
    return [COLORS[i] for i in color.tolist()], [SHAPES[i] for i in shape.tolist()]


def main() -> None:
    from core.config import load_config, resolve_preset
    from core.export.assets import load_scene
    from core.pipelines.text_to_3d import TextTo3DConfig, generate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="text_to_3d/gaussian_sds")
    parser.add_argument("--override", action="append", default=[], help="config override, repeatable")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    name = args.preset.replace("/", "_") + ("_" + "_".join(o.split(".")[-1] for o in args.override) if args.override else "")
    rows = []
    for colour, shape in PROMPTS[: args.prompts]:
        prompt = f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"
        cfg = load_config(TextTo3DConfig, resolve_preset(args.preset),
                          [*args.override, f"seed={args.seed}", "export=[ply]", "turntable_frames=0"])
        cfg.prompt = prompt
        folder = args.out / name / prompt.replace(" ", "_")   # one folder per preset + overrides: no resuming another's run
        tic = time.perf_counter()
        paths = generate(cfg, folder)
        seconds = time.perf_counter() - tic
        colours, shapes = judge(load_scene(paths["model_ply"]))
        colour_vote, shape_vote = Counter(colours).most_common(1)[0][0], Counter(shapes).most_common(1)[0][0]
        rows.append({"prompt": prompt, "colour_ok": colour_vote == colour, "shape_ok": shape_vote == shape,
                     "colour_votes": colours, "shape_votes": shapes, "seconds": round(seconds, 1)})
        print(f"{prompt:22s} colour {colour_vote:7s} {'ok' if rows[-1]['colour_ok'] else '--'}  "
              f"shape {shape_vote:8s} {'ok' if rows[-1]['shape_ok'] else '--'}  {seconds:6.1f} s", flush=True)
    n = len(rows)
    summary = {
        "preset": args.preset, "overrides": args.override, "prompts": n,
        "prior": cfg.prior.model, "prior_weights_sha1": weights_fingerprint(cfg.prior.model),
        "colour_accuracy": sum(r["colour_ok"] for r in rows) / n,
        "shape_accuracy": sum(r["shape_ok"] for r in rows) / n,
        "median_seconds_per_prompt": sorted(r["seconds"] for r in rows)[n // 2],
        "rows": rows,
    }
    print(f"colour {summary['colour_accuracy']:.0%}  shape {summary['shape_accuracy']:.0%}  "
          f"median {summary['median_seconds_per_prompt']} s per prompt ({n} prompts, {args.preset} "
          f"{' '.join(args.override)})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
