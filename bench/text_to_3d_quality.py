"""Quality and wall time of text-to-3D presets on the built-in prior, judged by the
procedural-world classifier (core/data/classifier.py, trained on held-out objects), and how
clean the assets are (core/export/cleanliness.py).

For each prompt "a <colour> <shape>" and seed the preset runs to the end; each final asset
(--formats: the splat model.ply and/or the mesh model.glb) is

- rendered from 8 views around it (elevation 15 deg, the training cameras' middle) over
  white, over black and over mid grey, and each view classified (the classifier is trained
  over those backgrounds and random colours); over each background the majority vote of the
  8 views is that background's verdict, and a run's colour (shape) is right when the verdicts
  over all three name the prompt's colour (shape): a filler of the white training
  background's colour that hides over white shows over black and grey;
- rendered over black (the opposite of the white training background) from those 8 views and
  8 more at 60 deg: the leak is the share of covered pixels that are near-white (skipped for
  white prompts, whose object is near-white itself);
- for tori: whether the top view's centre is open (alpha < 0.5).

Prints per-run rows and per-format accuracies, leak and torus figures, the time per run, and
writes them as JSON.

    OMP_NUM_THREADS=1 python bench/text_to_3d_quality.py --preset text_to_3d/gaussian_sds
    OMP_NUM_THREADS=1 python bench/text_to_3d_quality.py --prompt-set issue24 --seeds 0 1 --formats ply glb
    OMP_NUM_THREADS=1 python bench/text_to_3d_quality.py --prompt-set issue15 --seeds 3 --formats ply glb
    # judge run folders written earlier (e.g. by another version of the code), without generating:
    OMP_NUM_THREADS=1 python bench/text_to_3d_quality.py --prompt-set issue15 --seeds 3 --formats ply glb --judge-only
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

from core.errors import UserError

# 12 prompts: every colour and shape of the world at least once (plus the capsule).
PROMPTS = [
    ("red", "cube"), ("green", "sphere"), ("blue", "cylinder"), ("yellow", "cone"),
    ("white", "torus"), ("black", "pyramid"), ("orange", "cube"), ("purple", "sphere"),
    ("red", "cone"), ("blue", "torus"), ("green", "pyramid"), ("yellow", "capsule"),
]
# Issue 15's protocol: six shapes with four colours each, every colour exactly three times.
ISSUE24 = [
    ("red", "torus"), ("orange", "torus"), ("white", "torus"), ("blue", "torus"),
    ("blue", "pyramid"), ("red", "pyramid"), ("yellow", "pyramid"), ("black", "pyramid"),
    ("purple", "cone"), ("green", "cone"), ("orange", "cone"), ("white", "cone"),
    ("red", "cube"), ("green", "cube"), ("black", "cube"), ("purple", "cube"),
    ("blue", "sphere"), ("yellow", "sphere"), ("orange", "sphere"), ("white", "sphere"),
    ("yellow", "cylinder"), ("black", "cylinder"), ("purple", "cylinder"), ("green", "cylinder"),
]
# The prompts issue 15 found wrong (default preset, seed 3).
ISSUE15 = [("red", "torus"), ("orange", "torus"), ("blue", "pyramid"), ("red", "pyramid"), ("purple", "cone")]
PROMPT_SETS = {"table12": PROMPTS, "issue24": ISSUE24, "issue15": ISSUE15}
TRAINING_BACKGROUND = (1.0, 1.0, 1.0)
LEAK_TARGET = 0.02
TIMES_FILE = "bench_times.json"   # in each run folder: the wall and CPU seconds of the run that made it


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


def judge(scene, views: int = 8, size: int = 64, background=(1.0, 1.0, 1.0)) -> tuple[list[str], list[str]]:
    """Colour and shape the classifier names in each of `views` renders over `background` [3]."""
    from core.data.classifier import classify
    from core.data.procedural import COLORS, SHAPES
    from core.export.cleanliness import judge_cameras, scene_device

    cams = judge_cameras(views, size).to(scene_device(scene))
    with torch.no_grad():
        out = scene.render(cams, torch.tensor(background, dtype=torch.float32, device=cams.device))
        color, shape, _ = classify(out.chw().clamp(0, 1))
    return [COLORS[i] for i in color.tolist()], [SHAPES[i] for i in shape.tolist()]


def judge_asset(path: Path, colour: str, shape: str) -> dict:
    """The row of one asset file: votes and majority verdicts over each of the classifier's
    JUDGING_BACKGROUNDS (white, black, grey: a filler of the white training background's colour
    hides over white only) in `by_background`; the run's colour/shape is right when it is right
    over all three; the top-level votes are white's. Then leak and torus openness."""
    from core.data.classifier import JUDGING_BACKGROUNDS
    from core.data.procedural import COLOR_RGB
    from core.export.assets import load_scene
    from core.export.cleanliness import background_leak, colour_near_background, hole_alpha

    scene = load_scene(path)
    by_background = {}
    for name, background in JUDGING_BACKGROUNDS.items():
        colours, shapes = judge(scene, background=background)
        colour_vote, shape_vote = Counter(colours).most_common(1)[0][0], Counter(shapes).most_common(1)[0][0]
        by_background[name] = {"colour_ok": colour_vote == colour, "shape_ok": shape_vote == shape,
                               "colour_vote": colour_vote, "shape_vote": shape_vote,
                               "colour_votes": colours, "shape_votes": shapes}
    white = by_background["white"]
    row = {"colour_ok": all(v["colour_ok"] for v in by_background.values()),
           "shape_ok": all(v["shape_ok"] for v in by_background.values()),
           **{k: white[k] for k in ("colour_vote", "shape_vote", "colour_votes", "shape_votes")},
           "by_background": by_background, "leak": None}
    if not colour_near_background(COLOR_RGB[colour], TRAINING_BACKGROUND):
        row["leak"] = round(background_leak(scene, TRAINING_BACKGROUND).leak, 4)
    if shape == "torus":
        row["hole_alpha"] = round(hole_alpha(scene), 3)
        row["hole_open"] = row["hole_alpha"] < 0.5
    return row


def timed_run(make, folder: Path, judge_only: bool = False) -> dict:
    """{"seconds", "cpu_seconds"} of `make()`, which writes the run folder `folder`: wall time
    and this process's CPU time (on a shared machine wall time counts other processes' turns;
    CPU time does not), also kept in folder/TIMES_FILE. With `judge_only` nothing runs and the
    times kept there by the run that made the folder come back (None when there are none)."""
    if judge_only:
        times = folder / TIMES_FILE
        return json.loads(times.read_text()) if times.is_file() else {"seconds": None, "cpu_seconds": None}
    tic, cpu = time.perf_counter(), time.process_time()
    make()
    out = {"seconds": round(time.perf_counter() - tic, 1), "cpu_seconds": round(time.process_time() - cpu, 1)}
    (folder / TIMES_FILE).write_text(json.dumps(out))
    return out


def failed_verdict(shape: str) -> dict:
    """The judge's row for an asset that could not be judged (e.g. it vanished): wrong on every count."""
    return {"colour_ok": False, "shape_ok": False, "colour_vote": "-", "shape_vote": "-", "leak": None,
            **({"hole_alpha": None, "hole_open": False} if shape == "torus" else {})}


def summarise(rows: list[dict], fmt: str) -> dict:
    from core.data.classifier import JUDGING_BACKGROUNDS

    judged = [r[fmt] for r in rows if fmt in r]
    leaks = [j["leak"] for j in judged if j["leak"] is not None]
    tori = [j["hole_open"] for j in judged if "hole_open" in j]
    n = len(judged)
    def right(j: dict, name: str, what: str) -> bool:   # a failed run has no by_background: wrong
        return j.get("by_background", {}).get(name, {}).get(what, False)

    return {"runs": n, "colour_accuracy": sum(j["colour_ok"] for j in judged) / n,
            "shape_accuracy": sum(j["shape_ok"] for j in judged) / n,
            "by_background": {name: {"colour_accuracy": sum(right(j, name, "colour_ok") for j in judged) / n,
                                     "shape_accuracy": sum(right(j, name, "shape_ok") for j in judged) / n}
                              for name in JUDGING_BACKGROUNDS},
            "leak_max": max(leaks) if leaks else None, "leak_mean": sum(leaks) / len(leaks) if leaks else None,
            "leak_within_target": sum(x <= LEAK_TARGET for x in leaks), "leak_judged": len(leaks),
            "tori_open": sum(tori), "tori": len(tori)}


def main() -> None:
    from core.config import load_config, resolve_preset
    from core.pipelines.text_to_3d import TextTo3DConfig, generate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="text_to_3d/gaussian_sds")
    parser.add_argument("--override", action="append", default=[], help="config override, repeatable")
    parser.add_argument("--prompt-set", choices=sorted(PROMPT_SETS), default="table12")
    parser.add_argument("--prompts", type=int, default=None, help="use the first N prompts of the set")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds per prompt (default: --seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", nargs="+", choices=["ply", "glb"], default=["ply"],
                        help="assets to write and judge: ply (the splats), glb (the mesh)")
    parser.add_argument("--judge-only", action="store_true",
                        help="judge the run folders already under --out; generate nothing")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    args = parser.parse_args()

    seeds = args.seeds or [args.seed]
    prompts = PROMPT_SETS[args.prompt_set][: args.prompts]
    name = args.preset.replace("/", "_") + ("_" + "_".join(o.split(".")[-1] for o in args.override) if args.override else "")
    rows = []
    for colour, shape in prompts:
        prompt = f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"
        for seed in seeds:
            cfg = load_config(TextTo3DConfig, resolve_preset(args.preset),
                              [*args.override, f"seed={seed}", f"export=[{', '.join(args.formats)}]",
                               "turntable_frames=0"])
            cfg.prompt = prompt
            # one folder per preset + overrides + seed: no resuming another's run
            folder = args.out / name / f"{prompt.replace(' ', '_')}_seed{seed}"
            row = {"prompt": prompt, "seed": seed, "seconds": None, "cpu_seconds": None}
            try:
                row.update(timed_run(lambda: generate(cfg, folder), folder, args.judge_only))
                for fmt in args.formats:
                    row[fmt] = judge_asset(folder / f"model.{fmt}", colour, shape)
            except UserError as e:   # e.g. an asset that vanished: a failed run, counted wrong on every count
                row["error"] = str(e)
                for fmt in args.formats:
                    row[fmt] = failed_verdict(shape)
            rows.append(row)
            cells = "  ".join(
                f"{fmt}: {row[fmt]['colour_vote']:7s}{'ok' if row[fmt]['colour_ok'] else '--'} "
                f"{row[fmt]['shape_vote']:8s}{'ok' if row[fmt]['shape_ok'] else '--'} "
                f"leak {'n/a' if row[fmt]['leak'] is None else format(row[fmt]['leak'], '.1%'):>5s}"
                + (f" hole {'open' if row[fmt]['hole_open'] else 'SHUT'}" if shape == "torus" else "")
                for fmt in args.formats) + (f"  FAILED: {row['error']}" if "error" in row else "")
            seconds = "" if row["seconds"] is None else f"{row['seconds']:6.1f} s ({row['cpu_seconds']:.1f} s CPU)"
            print(f"{prompt:20s} seed {seed}  {cells}  {seconds}", flush=True)
    times = sorted(r["seconds"] for r in rows if r["seconds"] is not None)
    cpu_times = sorted(r["cpu_seconds"] for r in rows if r.get("cpu_seconds") is not None)
    summary = {
        "preset": args.preset, "overrides": args.override, "prompt_set": args.prompt_set, "seeds": seeds,
        "runs": len(rows), "prior": cfg.prior.model, "prior_weights_sha1": weights_fingerprint(cfg.prior.model),
        "median_seconds_per_prompt": times[len(times) // 2] if times else None,
        "max_seconds_per_prompt": times[-1] if times else None,
        "median_cpu_seconds_per_prompt": cpu_times[len(cpu_times) // 2] if cpu_times else None,
        "max_cpu_seconds_per_prompt": cpu_times[-1] if cpu_times else None,
        # the first format's accuracies at the top level, as the 12-prompt tables read them
        "colour_accuracy": summarise(rows, args.formats[0])["colour_accuracy"],
        "shape_accuracy": summarise(rows, args.formats[0])["shape_accuracy"],
        **{fmt: summarise(rows, fmt) for fmt in args.formats},
        "rows": rows,
    }
    for fmt in args.formats:
        s = summary[fmt]
        leak = "n/a" if s["leak_max"] is None else f"max {s['leak_max']:.1%}, {s['leak_within_target']}/{s['leak_judged']} <= 2%"
        per = "  ".join(f"{k} {v['colour_accuracy']:.0%}/{v['shape_accuracy']:.0%}" for k, v in s["by_background"].items())
        print(f"{fmt}: colour {s['colour_accuracy']:.0%}  shape {s['shape_accuracy']:.0%} (right over all three; "
              f"{per})  leak {leak}  tori open {s['tori_open']}/{s['tori']}")
    print(f"median {summary['median_seconds_per_prompt']} s, max {summary['max_seconds_per_prompt']} s per run "
          f"(CPU: median {summary['median_cpu_seconds_per_prompt']} s, max {summary['max_cpu_seconds_per_prompt']} s; "
          f"{len(rows)} runs, {args.preset} {' '.join(args.override)})")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.prompt_set == "table12" else f"_{args.prompt_set}"
    (args.out / f"{name}{suffix}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
