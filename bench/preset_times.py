"""Wall time of every built-in preset on one prompt (or reference image), end to end as
`scorelift generate` runs it: all stages plus the preset's exports and turntable.

Text presets get "a red cube"; image presets a 64 px render of a procedural green cone
from their reference pose. Prints one row per preset (total seconds, seconds inside the
optimisation steps from metrics.jsonl, the rest = hand-offs, exports, turntable) and writes
them as JSON.

    OMP_NUM_THREADS=1 python bench/preset_times.py                    # every preset under configs/text_to_3d, image_to_3d
    OMP_NUM_THREADS=1 python bench/preset_times.py --preset text_to_3d/nerf_sds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def reference_image(path: Path, elevation: float, azimuth: float, size: int = 64) -> Path:
    """A procedural green cone rendered from (elevation, azimuth) at radius 2.5, fov 45, as PNG."""
    from core.cameras import spherical_cameras
    from core.data.procedural import ProceduralWorld
    from core.data.views import procedural_object
    from core.io import write_png

    cams = spherical_cameras(torch.tensor([elevation]), torch.tensor([azimuth]), torch.tensor([2.5]),
                             torch.tensor([45.0]), size, size)
    rgb, _ = ProceduralWorld().render_object(procedural_object("cone", "green"), cams)
    write_png(path, rgb[0].permute(1, 2, 0))
    return path


def step_seconds(metrics: Path) -> float:
    return sum(json.loads(line).get("time_s", 0.0) for line in metrics.read_text().splitlines() if line.strip())


def run(preset: str, out: Path, overrides: list[str] = ()) -> dict:
    from core.config import load_config, resolve_preset

    folder = out / preset.replace("/", "_")
    if preset.startswith("image_to_3d/"):
        from core.pipelines.image_to_3d import ImageTo3DConfig, image_to_3d

        cfg = load_config(ImageTo3DConfig, resolve_preset(preset), ["seed=0", *overrides])
        folder.mkdir(parents=True, exist_ok=True)
        cfg.image = str(reference_image(folder / "input.png", cfg.prior.reference_elevation_deg,
                                        cfg.prior.reference_azimuth_deg))
        job, what = image_to_3d, "green cone image"
    else:
        from core.pipelines.text_to_3d import TextTo3DConfig, generate

        cfg = load_config(TextTo3DConfig, resolve_preset(preset), ["seed=0", *overrides])
        cfg.prompt = "a red cube"
        job, what = generate, cfg.prompt
    tic = time.perf_counter()
    job(cfg, folder)
    total = time.perf_counter() - tic
    steps = step_seconds(folder / "metrics.jsonl")
    return {"preset": preset, "input": what, "steps": sum(s.steps for s in cfg.stages),
            "total_s": round(total, 1), "step_s": round(steps, 1), "other_s": round(total - steps, 1),
            "exports": list(cfg.export), "turntable_frames": cfg.turntable_frames}


def main() -> None:
    from core.config import list_presets

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", help="preset name, repeatable (default: all built-in)")
    parser.add_argument("--out", type=Path, default=Path("runs/preset_times"))
    parser.add_argument("--override", action="append", default=[], help="config override for every preset")
    args = parser.parse_args()
    presets = args.preset or [p for p in list_presets() if p.split("/")[0] in ("text_to_3d", "image_to_3d")]
    rows = []
    for preset in presets:
        row = run(preset, args.out, args.override)
        rows.append(row)
        print(f"{preset:28s} {row['steps']:5d} steps  total {row['total_s']:7.1f} s  steps {row['step_s']:7.1f} s  "
              f"exports+handoffs {row['other_s']:6.1f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "all" if not args.preset else "_".join(p.replace("/", "_") for p in args.preset)
    (args.out / f"{name}.json").write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
