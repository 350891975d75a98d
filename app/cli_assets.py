"""`scorelift render` and `scorelift export`: any asset or run folder, every backend."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from app.cli_options import CLIError, image_size, parse_colour, pick_device, positive_int

# --- scorelift render ---------------------------------------------------------------------------

def add_render_command(subparsers) -> None:
    p = subparsers.add_parser(
        "render", help="render an asset or run folder (splats, mesh, NeRF) to PNGs and a turntable video",
        description="Render an asset (3DGS .ply or .splat, mesh .glb/.obj/.ply, NeRF or DMTet .pt) or a run "
                    "folder's model on an orbit around the origin (PNGs + turntable.mp4) or from the cameras of "
                    "a NeRF-synthetic transforms.json (PNGs named after each frame).",
    )
    p.add_argument("scene", type=Path, help="asset file (.ply, .splat, .glb, .obj, .pt) or run folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    views = p.add_mutually_exclusive_group()
    views.add_argument("--orbit", type=positive_int, default=None, metavar="N",
                       help="N cameras evenly spaced in azimuth (default 24)")
    views.add_argument("--cameras", type=Path, default=None, metavar="TRANSFORMS_JSON",
                       help="render the frames of a NeRF-synthetic camera file instead of an orbit")
    p.add_argument("--elevation", type=float, default=15.0, help="orbit elevation in degrees (default 15)")
    p.add_argument("--radius", type=float, default=2.5, help="orbit radius in world units (default 2.5)")
    p.add_argument("--fov", type=float, default=45.0, help="orbit vertical field of view in degrees (default 45)")
    p.add_argument("--width", type=image_size, default=None,
                   help="image width (orbit default 512; --cameras default: the file's size)")
    p.add_argument("--height", type=image_size, default=None, help="image height (as --width)")
    p.add_argument("--background", type=parse_colour, default=(1.0, 1.0, 1.0),
                   help="white | black | gray | #rrggbb | r,g,b in [0,1] (default white)")
    p.add_argument("--fps", type=float, default=24.0, help="turntable video frame rate (default 24)")
    p.add_argument("--chunk", type=positive_int, default=4, help="cameras rendered per batch (default 4)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    # Relight runs (model_pbr.ply): app/cli_relight.py renders them, with these two options.
    p.add_argument("--passes", default=None, metavar="P1,P2",
                   help="relight run only: write DIR/<pass>/<name>.png for rgb,albedo,roughness,metallic,normal,progress")
    p.add_argument("--envmap", type=Path, default=None, metavar="ENV",
                   help="relight run only: light with this .hdr/.exr/.npy equirect map (default: the learned one)")
    p.set_defaults(func=run_render)


def frame_names(file_paths: Sequence[str]) -> list[str]:
    """PNG names from NeRF-synthetic `file_path`s ('./test/r_0' -> 'r_0.png'), unique."""
    stems = [Path(fp).stem if Path(fp).suffix.lower() in (".png", ".jpg", ".jpeg") else Path(fp).name
             for fp in file_paths]
    if len(set(stems)) != len(stems):  # e.g. train/r_0 and test/r_0 in one file
        stems = [f"{i:04d}_{stem}" for i, stem in enumerate(stems)]
    return [f"{stem}.png" for stem in stems]


def run_render(args: argparse.Namespace) -> int:
    import torch

    from core.cameras import load_nerf_synthetic, orbit_cameras
    from core.export.assets import load_scene
    from core.export.video import turntable

    if not 0 < args.fov < 180:
        raise CLIError(f"--fov must be in (0, 180) degrees, got {args.fov}")
    if args.radius <= 0:
        raise CLIError(f"--radius must be positive, got {args.radius}")
    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"--out {args.out} is a file; give a folder")
    if args.passes or args.envmap or (args.scene / "model_pbr.ply").is_file():
        from app.cli_relight import run_render_passes

        return run_render_passes(args)
    device = pick_device(args.device)
    scene = load_scene(args.scene)  # missing, unreadable or unknown files: UserError
    scene.to(device).eval()

    if args.cameras is not None:
        cameras, file_paths = load_nerf_synthetic(args.cameras, args.width, args.height)  # UserError names the file
        names, video = frame_names(file_paths), None
    else:
        n = args.orbit or 24
        width, height = args.width or 512, args.height or args.width or 512
        cameras = orbit_cameras(n, args.elevation, args.radius, args.fov, width, height)
        names, video = [f"frame_{i:04d}.png" for i in range(n)], "turntable.mp4"

    with torch.no_grad():
        result = turntable(scene, cameras, args.out, names=names, background=torch.tensor(args.background),
                           chunk=args.chunk, video_name=video, fps=args.fps)
    print(f"wrote {len(result.frames)} frames ({cameras.width}x{cameras.height}) to {args.out}"
          + (f" and {result.video}" if result.video else ""))
    return 0


# --- scorelift export ---------------------------------------------------------------------------

def add_export_command(subparsers) -> None:
    from core.export.assets import FORMATS

    p = subparsers.add_parser(
        "export", help="convert an asset or run folder to glb, obj, ply or splat",
        description="Write a run's model or an asset as glb/obj (a mesh with a baked texture: Gaussians and "
                    "NeRFs are meshed first), ply (splats stay splats, other sources become a vertex-coloured "
                    "mesh) or splat (Gaussians only).",
    )
    p.add_argument("asset", type=Path, help="asset file (.ply, .splat, .glb, .obj, .pt) or run folder")
    p.add_argument("--format", choices=FORMATS, required=True, help="output format")
    p.add_argument("--out", type=Path, default=None,
                   help="output file (default: beside the model file, named after it)")
    p.add_argument("--resolution", type=positive_int, default=128,
                   help="iso-surface grid nodes along the object's longest side (default 128)")
    p.add_argument("--texture-size", type=image_size, default=1024, help="baked texture side (default 1024)")
    p.add_argument("--faces", type=positive_int, default=50_000,
                   help="decimate meshes extracted from splats or NeRFs to at most this many faces (default 50000)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from core.export.assets import ExportOptions, export_scene, load_scene, resolve_asset

    if args.resolution < 8:
        raise CLIError(f"--resolution must be at least 8, got {args.resolution}")
    if args.texture_size < 8:
        raise CLIError(f"--texture-size must be at least 8, got {args.texture_size}")
    if args.faces is not None and args.faces < 4:
        raise CLIError(f"--faces must be at least 4, got {args.faces}")
    scene = load_scene(args.asset)
    scene.to(pick_device(args.device)).eval()
    source = resolve_asset(args.asset)  # the model file itself, also for a run folder
    out = args.out or source.with_suffix(f".{args.format}")
    if args.out is None and out.exists():  # a default name never replaces a file (e.g. the model itself)
        raise CLIError(f"{out} exists; pass --out to choose the output file")
    if out.suffix.lower() != f".{args.format}":
        out = out.with_name(out.name + f".{args.format}")
    if out.exists() and out.resolve() == source.resolve():
        raise CLIError(f"--out {out} is the input itself; choose another path")
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give a file path")
    options = ExportOptions(resolution=args.resolution, texture_size=args.texture_size, target_faces=args.faces)
    written = export_scene(scene, out, args.format, options)  # an empty scene: UserError from extract
    print(f"wrote {written}")
    return 0
