"""`scorelift relight` (progressive radiance distillation) and the relight side of `scorelift render`
(--passes, --envmap), which app/cli_assets.py dispatches here."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from app.cli_options import check_run_folder, load_job_config, positive_int, print_outputs, run_folder_name
from core.errors import UserError


def add_relight_command(subparsers) -> None:
    p = subparsers.add_parser(
        "relight", help="relightable PBR Gaussians (albedo, roughness, metallic + an HDR environment) from photos",
        description="Progressive radiance distillation (Ye et al. 2024): fit radiance Gaussians to a Blender/"
                    "NeRF-synthetic folder (--data) or to renders of a generated run (--from), then distil light "
                    "and materials from them. Writes model_pbr.ply, environment.hdr/.npy, model.glb, a relit "
                    "turntable, previews, metrics and checkpoints. Config keys can be overridden as key=value "
                    "(e.g. progressive=false stages.0.steps=500).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, default=None,
                        help="Blender folder: transforms_train.json (+ _test) + RGBA PNGs")
    source.add_argument("--from", dest="from_run", type=Path, default=None, metavar="RUN",
                        help="a generated run (or asset): render it from --views views and relight those")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/relight-<name>-<time>)")
    p.add_argument("--config", default="relight/progressive", help="preset name or YAML file")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    p.add_argument("--views", type=positive_int, default=48, help="--from: views rendered of the run (default 48)")
    p.add_argument("--size", type=positive_int, default=128, help="--from: size of those renders (default 128)")
    p.set_defaults(func=run_relight)


def run_relight(args: argparse.Namespace) -> int:
    from core.data.nerf_synthetic import check_blender_folder, load_dataset
    from core.pipelines.relight import RelightConfig, relight

    name = (args.data or args.from_run).resolve().name
    out = args.out or run_folder_name("relight", name)
    check_run_folder(out, args.resume)
    created = not out.exists()
    try:
        if args.from_run is not None:
            data = out / "views"
            if not (args.resume and (data / "transforms_train.json").is_file()):
                from core.export.assets import AssetError, load_scene

                try:
                    source = load_scene(args.from_run)
                except (FileNotFoundError, AssetError) as e:
                    raise UserError(f"--from {args.from_run}: {e}") from None
                print(f"rendering {args.views} views of {args.from_run} into {data}")
                write_views(source, data, args.views, args.size)
        else:
            data = args.data
        cfg = load_job_config(RelightConfig, args.config, [*args.overrides, f"data={data}"])
        check_blender_folder(data)
        dataset = load_dataset(cfg.data, "train", cfg.width or None, cfg.height or None,
                               cfg.renderer.gaussian.background)  # UserError names the file
        method = "progressive" if cfg.progressive else "PBR only"
        print(f"relighting {len(dataset)} views of {data} into {out} ({method})")
        paths = relight(cfg, out, dataset=dataset)
    except UserError:  # CLIError included; app/cli prints it as one line
        if created and out.exists():  # nothing half-written stays behind
            shutil.rmtree(out)
        raise
    print_outputs(paths)
    return 0


def write_views(scene, out_dir: Path, n_views: int, size: int, radius: float = 2.6, fov: float = 40.0) -> Path:
    """Render any Scene from `n_views` cameras on a spiral (elevations -10..60 degrees, golden-angle
    azimuths) into a Blender folder (RGBA PNGs, transforms_train.json; every 8th view also in
    transforms_test.json); returns the train transforms file."""
    import math

    import torch

    from core.cameras import save_nerf_synthetic, spherical_cameras
    from core.export.video import write_png

    n = torch.arange(n_views, dtype=torch.float32)
    azimuth = (n * 180.0 * (3 - math.sqrt(5))) % 360.0 - 180.0
    elevation = -10.0 + 70.0 * (n + 0.5) / n_views
    cams = spherical_cameras(elevation, azimuth, torch.full_like(n, radius), torch.full_like(n, fov), size, size)
    names = [f"./train/r_{i:03d}" for i in range(n_views)]
    device = getattr(scene, "device", torch.device("cpu"))
    with torch.no_grad():
        for start in range(0, n_views, 4):
            out = scene.render(cams[start:start + 4].to(device), torch.zeros(3, device=device))
            straight = (out.rgb / out.alpha.clamp_min(1e-6)).clamp(0, 1) * (out.alpha > 0)
            for i, (rgb, alpha) in enumerate(zip(straight, out.alpha)):
                write_png(out_dir / f"{names[start + i]}.png", torch.cat([rgb, alpha], -1).cpu())
    path = out_dir / "transforms_train.json"
    save_nerf_synthetic(path, cams, names)
    test = list(range(0, n_views, 8))
    save_nerf_synthetic(out_dir / "transforms_test.json", cams[torch.tensor(test)], [names[i] for i in test])
    return path


def run_render_passes(args: argparse.Namespace) -> int:
    """`scorelift render RUN [--cameras FILE] [--envmap ENV] [--passes a,b] --out DIR` for a relight run."""
    import torch

    from app.cli_assets import frame_names
    from core.cameras import load_nerf_synthetic, orbit_cameras
    from core.export.passes import environment_light, load_relight_run, parse_passes, render_passes
    from renderers.shading.envmap_files import read_envmap

    passes = parse_passes(args.passes) if args.passes else None
    scene, envmap = load_relight_run(args.scene)
    if args.envmap is not None:
        envmap = read_envmap(args.envmap)
    if args.cameras is not None:
        cameras, file_paths = load_nerf_synthetic(args.cameras, args.width, args.height)  # UserError names the file
        names = frame_names(file_paths)
    else:
        n = args.orbit or 24
        width, height = args.width or 512, args.height or args.width or 512
        cameras = orbit_cameras(n, args.elevation, args.radius, args.fov, width, height)
        names = [f"frame_{i:04d}.png" for i in range(n)]
    from app.cli_options import pick_device

    device = pick_device(args.device)
    scene.to(device).eval()
    light = environment_light(envmap, levels=scene.environment.levels, samples=scene.environment.samples,
                              device=device)
    with torch.no_grad():
        count = render_passes(scene, cameras.to(device), names, args.out, passes, light, args.background, args.chunk)
    print(f"wrote {count} images ({cameras.width}x{cameras.height}) to {args.out}")
    return 0
