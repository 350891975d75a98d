"""Image-to-3D quality on the built-in Zero123, judged like text-to-3D (issue #15's protocol).

Twelve reference pictures of procedural-world objects (every shape, several colours), each
rendered at 15 degrees elevation from a random azimuth, the camera aimed beside the object so
it is not centred in the picture, 96 px, RGBA. Each goes through `scorelift generate --image`
(preset `image_to_3d/gaussian_zero123`, `prior.reference_elevation_deg=15`: the elevation is
known here), and each final asset (model.ply, and model.glb with --formats ply glb) is judged
by `bench/text_to_3d_quality.judge_asset`: 8 views around it, the back included, over white,
black and grey, colour and shape by majority vote of the classifier over each (right when
right over all three), the leak over black, tori's holes.

    OMP_NUM_THREADS=1 python bench/image_to_3d_quality.py --out runs/quality_image [--formats ply glb]
    # only some references; judge finished runs again without generating:
    OMP_NUM_THREADS=1 python bench/image_to_3d_quality.py --out runs/quality_image --only red_cube orange_torus
    OMP_NUM_THREADS=1 python bench/image_to_3d_quality.py --out runs/quality_image --judge-only
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from core.errors import UserError

# (colour, shape): every shape, every colour at least once
REFERENCES = [
    ("red", "cube"), ("yellow", "cylinder"), ("blue", "sphere"), ("green", "cone"), ("orange", "torus"),
    ("purple", "pyramid"), ("white", "capsule"), ("black", "cube"), ("blue", "cylinder"), ("red", "cone"),
    ("yellow", "torus"), ("green", "pyramid"),
]


def reference_picture(colour: str, shape: str, index: int, path: Path, size: int = 96) -> Path:
    """An RGBA picture of the object at 15 deg elevation, off-centre (module docstring)."""
    from core.cameras import Cameras, intrinsics, look_at, spherical_to_position
    from core.data.procedural import ProceduralWorld, ProceduralWorldConfig
    from core.data.views import procedural_object
    from core.io import write_png

    g = torch.Generator().manual_seed(index)
    azimuth = float(torch.rand(1, generator=g)) * 360.0 - 180.0
    eye = spherical_to_position(torch.tensor([15.0]), torch.tensor([azimuth]), torch.tensor([2.5]))
    aim = (torch.rand(1, 3, generator=g) - 0.5) * 0.5          # up to 0.25 units beside the object
    cams = Cameras(look_at(eye, aim), intrinsics(45.0, size, size).clone(), size, size)
    world = ProceduralWorld(ProceduralWorldConfig(resolution=size))
    rgb, alpha = world.render_object(procedural_object(shape, colour, seed=index), cams)
    return write_png(path, torch.cat([rgb[0], alpha[0]], 0).permute(1, 2, 0))


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from text_to_3d_quality import failed_verdict, judge_asset, summarise, timed_run

    from core.config import load_config, resolve_preset
    from core.pipelines.image_to_3d import ImageTo3DConfig, image_to_3d

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/quality_image"))
    p.add_argument("--formats", nargs="+", choices=["ply", "glb"], default=["ply"])
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--judge-only", action="store_true",
                   help="judge the run folders already under --out; generate nothing (times: those the runs kept)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only these references (colour_shape, e.g. red_cube); the others are skipped")
    args = p.parse_args()
    names = [f"{c}_{s}" for c, s in REFERENCES]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        p.error(f"unknown reference(s) {unknown}; choose from {names}")
    rows = []
    for index, (colour, shape) in enumerate(REFERENCES):
        name = f"{colour}_{shape}"
        if args.only and name not in args.only:
            continue
        picture = reference_picture(colour, shape, index, args.out / "references" / f"{name}.png")
        cfg = load_config(ImageTo3DConfig, resolve_preset("image_to_3d/gaussian_zero123"),
                          [*args.override, f"image={picture}", "prior.reference_elevation_deg=15.0",
                           f"export=[{', '.join(args.formats)}]", "turntable_frames=0"])
        folder = args.out / "runs" / name
        row = {"reference": name, "seconds": None, "cpu_seconds": None}
        try:
            row.update(timed_run(lambda: image_to_3d(cfg, folder), folder, args.judge_only))
            for fmt in args.formats:
                row[fmt] = judge_asset(folder / f"model.{fmt}", colour, shape)
        except UserError as e:
            row["error"] = str(e)
            for fmt in args.formats:
                row[fmt] = failed_verdict(shape)
        rows.append(row)
        cells = "  ".join(f"{fmt}: {row[fmt]['colour_vote']:7s}{'ok' if row[fmt]['colour_ok'] else '--'} "
                          f"{row[fmt]['shape_vote']:8s}{'ok' if row[fmt]['shape_ok'] else '--'} "
                          f"leak {'n/a' if row[fmt]['leak'] is None else format(row[fmt]['leak'], '.1%')}"
                          for fmt in args.formats)
        print(f"{name:16s} {cells}  {row['seconds']} s ({row['cpu_seconds']} s CPU) {row.get('error', '')}", flush=True)
        (args.out / "results.json").write_text(json.dumps({"rows": rows}, indent=1))
    summary = {fmt: summarise(rows, fmt) for fmt in args.formats}
    times = sorted(r["seconds"] for r in rows if r["seconds"] is not None)
    summary["median_seconds"] = times[len(times) // 2] if times else None
    (args.out / "results.json").write_text(json.dumps({**summary, "rows": rows}, indent=1))
    for fmt in args.formats:
        s = summary[fmt]
        per = "  ".join(f"{k} {v['colour_accuracy']:.0%}/{v['shape_accuracy']:.0%}" for k, v in s["by_background"].items())
        print(f"{fmt}: colour {s['colour_accuracy']:.0%}  shape {s['shape_accuracy']:.0%} (right over all three; {per})"
              f"  leak max {s['leak_max']}  ({s['runs']} references)")
    print(f"median {summary['median_seconds']} s per image; {math.nan if not times else times[-1]} s max")


if __name__ == "__main__":
    main()
