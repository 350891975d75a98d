"""The `scorelift` command line.

Each subcommand is one `add_<name>_command(subparsers)` that declares its options and
sets `func`, the function that runs it. A new subcommand is one more such pair, added
to `COMMANDS`. Errors a user can cause (missing or wrong file, impossible size) raise
`CLIError` or a known exception and end as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

MAX_IMAGE_SIZE = 8192


class CLIError(Exception):
    """A problem with the user's input; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (the full usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- shared option parsing ----------------------------------------------------------------------

NAMED_COLOURS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5), "grey": (0.5, 0.5, 0.5)}


def parse_colour(text: str) -> tuple[float, float, float]:
    """'white' | '#rrggbb' | 'r,g,b' with components in [0,1] -> (r, g, b)."""
    text = text.strip().lower()
    if text in NAMED_COLOURS:
        return NAMED_COLOURS[text]
    try:
        if text.startswith("#") and len(text) == 7:
            return tuple(int(text[i:i + 2], 16) / 255 for i in (1, 3, 5))
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a colour; use a name ({', '.join(NAMED_COLOURS)}), #rrggbb or r,g,b in [0,1]")
    return values


def image_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of pixels") from None
    if not 1 <= value <= MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{value} is not an image size in 1..{MAX_IMAGE_SIZE}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA GPU is available; use --device cpu")
    return torch.device(name)


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
    from core.export.video import turntable

    if not 0 < args.fov < 180:
        raise CLIError(f"--fov must be in (0, 180) degrees, got {args.fov}")
    if args.radius <= 0:
        raise CLIError(f"--radius must be positive, got {args.radius}")
    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"--out {args.out} is a file; give a folder")
    device = pick_device(args.device)
    scene = load_asset(args.scene)
    scene.to(device).eval()

    if args.cameras is not None:
        try:
            cameras, file_paths = load_nerf_synthetic(args.cameras, args.width, args.height)
        except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
            raise CLIError(f"{args.cameras}: {e}" if str(args.cameras) not in str(e) else str(e)) from None
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


def load_asset(path: Path):
    """load_scene with the user's mistakes (missing, unreadable or unknown files) as CLIError."""
    from core.export.assets import AssetError, load_scene
    from renderers.gaussian.ply import SplatFormatError

    try:
        return load_scene(path)
    except (FileNotFoundError, SplatFormatError, AssetError) as e:
        raise CLIError(str(e)) from None


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
    from core.export.assets import AssetError, ExportOptions, export_scene, resolve_asset

    if args.resolution < 8:
        raise CLIError(f"--resolution must be at least 8, got {args.resolution}")
    if args.texture_size < 8:
        raise CLIError(f"--texture-size must be at least 8, got {args.texture_size}")
    if args.faces is not None and args.faces < 4:
        raise CLIError(f"--faces must be at least 4, got {args.faces}")
    scene = load_asset(args.asset)
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
    try:
        written = export_scene(scene, out, args.format, options)
    except (AssetError, ValueError) as e:  # ValueError: e.g. an empty scene has no surface to extract
        raise CLIError(str(e)) from None
    print(f"wrote {written}")
    return 0


def add_reconstruct_command(subparsers) -> None:
    p = subparsers.add_parser(
        "reconstruct", help="fit 3D Gaussians to posed images (a NeRF-synthetic folder)",
        description="Fit 3D Gaussians to the images of a NeRF-synthetic/Blender folder (transforms_train.json "
                    "or transforms.json + images) and write model.ply, previews, metrics and a turntable. "
                    "Config keys can be overridden as key=value (e.g. steps=500 renderer.sh_degree=1).",
    )
    p.add_argument("data", type=Path, help="folder with transforms_train.json (or transforms.json) and images")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    p.add_argument("--config", default="reconstruct/gaussian", help="preset name or YAML file")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/reconstruct-<name>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.set_defaults(func=run_reconstruct)


def run_folder_name(kind: str, name: str) -> Path:
    import re
    import time

    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or kind
    return Path("runs") / f"{kind}-{slug}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_job_config(schema, preset: str, overrides: Sequence[str]):
    from core.config import ConfigError, load_config, resolve_preset

    try:
        return load_config(schema, resolve_preset(preset), overrides)
    except ConfigError as e:
        raise CLIError(str(e)) from None


def check_run_folder(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a folder")
    if resume and not (out / "checkpoints").is_dir():
        raise CLIError(f"--resume: {out} has no checkpoints/ to resume from")
    if not resume and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise CLIError(f"{out} already holds a run; pass --resume to continue it or choose another --out")


def print_outputs(paths: dict) -> None:
    for key, path in paths.items():
        if path is not None:
            print(f"{key}: {path}")


def run_reconstruct(args: argparse.Namespace) -> int:
    from core.data.nerf_synthetic import load_dataset
    from core.pipelines.reconstruct import ReconstructConfig, reconstruct

    cfg = load_job_config(ReconstructConfig, args.config, [*args.overrides, f"data={args.data}"])
    out = args.out or run_folder_name("reconstruct", args.data.resolve().name)
    check_run_folder(out, args.resume)
    try:
        dataset = load_dataset(cfg.data, "train", cfg.width or None, cfg.height or None, cfg.renderer.background)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
    print(f"reconstructing {len(dataset)} views of {args.data} into {out}")
    print_outputs(reconstruct(cfg, out, dataset=dataset))
    return 0


def add_generate_command(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="text-to-3D or image-to-3D: distil a prompt or a picture into a 3D asset",
        description="Run a text-to-3D preset on a prompt (or, with --image, an image-to-3D preset on a picture) "
                    "and write runs/<slug>-<time>/ with model.ply, model.glb, a turntable, previews and metrics. "
                    "The built-in priors run on a CPU with no download; prior.model=<hub id or folder> switches "
                    "to a real Stable Diffusion (or Zero123) checkpoint.",
    )
    p.add_argument("prompt", nargs="?", default=None, help='what to generate, e.g. "a red cube"')
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    p.add_argument("--image", type=Path, default=None, help="image-to-3D from this picture (RGBA or plain background)")
    p.add_argument("--config", default=None,
                   help="preset name or YAML file (default text_to_3d/gaussian_sds; with --image "
                        "image_to_3d/gaussian_zero123)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<slug>-<time>)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's)")
    p.add_argument("--steps", type=positive_int, default=None, help="steps of every stage (default: the preset's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from core.data.reference import ReferenceImageError
    from core.pipelines.image_to_3d import ImageTo3DConfig, image_to_3d
    from core.pipelines.text_to_3d import TextTo3DConfig, generate
    from core.priors.loading import PriorLoadError

    if args.prompt is not None and "=" in args.prompt and args.image is not None:
        args.overrides, args.prompt = [args.prompt, *args.overrides], None  # `generate --image x k=v`
    if args.image is None and (args.prompt is None or not args.prompt.strip()):
        raise CLIError('the prompt is empty: say what to generate, e.g. scorelift generate "a red cube" '
                       "(or give --image photo.png)")
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device is not None:
        pick_device(args.device)
        overrides.append(f"device={args.device}")
    if args.image is not None:
        if not args.image.is_file():
            raise CLIError(f"--image {args.image}: file not found")
        cfg = load_job_config(ImageTo3DConfig, args.config or "image_to_3d/gaussian_zero123", overrides)
        cfg.image = str(args.image)
        name, job = args.image.stem, image_to_3d
    else:
        cfg = load_job_config(TextTo3DConfig, args.config or "text_to_3d/gaussian_sds", overrides)
        cfg.prompt = args.prompt
        name, job = args.prompt, generate
    if args.steps is not None:
        for stage in cfg.stages:
            stage.steps = args.steps
    out = args.out or run_folder_name("generate", name)
    check_run_folder(out, args.resume)
    print(f"generating '{name}' with {args.config or 'the default preset'} into {out}")
    try:
        paths = job(cfg, out)
    except (PriorLoadError, ReferenceImageError, ValueError) as e:
        raise CLIError(str(e)) from None
    print_outputs(paths)
    return 0


def add_batch_command(subparsers) -> None:
    p = subparsers.add_parser(
        "batch", help="text-to-3D for every prompt in a .txt or .jsonl file",
        description="One run per prompt (a .txt file with a prompt per line, or .jsonl lines like "
                    '{"prompt": "a red cube", "seed": 1, "config": "text_to_3d/polish", "overrides": ["..."]}) '
                    "into OUT/<nnn>-<slug>/, with OUT/manifest.jsonl recording status, time, paths and "
                    "metrics. Re-running skips finished prompts and resumes interrupted ones; a failing "
                    "prompt is recorded and the rest go on.",
    )
    p.add_argument("prompts", type=Path, help="prompts.txt or prompts.jsonl")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every job")
    p.add_argument("--config", default="text_to_3d/gaussian_sds", help="preset for jobs that name none")
    p.add_argument("--out", type=Path, default=None, help="batch folder (default runs/batch-<file name>)")
    p.set_defaults(func=run_batch_command)


def run_batch_command(args: argparse.Namespace) -> int:
    from app.jobs import BatchFileError, read_jobs, run_batch
    from core.pipelines.text_to_3d import TextTo3DConfig, generate

    try:
        jobs = read_jobs(args.prompts)
    except BatchFileError as e:
        raise CLIError(str(e)) from None
    load_job_config(TextTo3DConfig, args.config, args.overrides)  # bad shared overrides fail before any job
    out = args.out or Path("runs") / f"batch-{args.prompts.stem}"
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a folder")

    def run_job(job, config, overrides, folder):
        cfg = load_job_config(TextTo3DConfig, config, overrides)
        cfg.prompt = job.prompt
        print(f"[{job.prompt}] -> {folder}")
        return generate(cfg, folder)

    counts = run_batch(jobs, out, args.config, list(args.overrides), run_job)
    print(f"batch: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} already done; "
          f"manifest: {out / 'manifest.jsonl'}")
    return 1 if counts["failed"] else 0


def add_demo_command(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the built-in demo: fit a splat to procedural views and write its turntable",
        description="Until text-to-3D lands, the demo renders a procedural object (a shiny striped orange torus) "
                    "from 24 views with the project's mesh renderer, fits 3D Gaussians to them and writes "
                    "model.ply and turntable.mp4. No download, CPU is enough.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="reconstruct config overrides")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo-<time>)")
    p.add_argument("--views", type=positive_int, default=24, help="number of procedural views (default 24)")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import time

    from core.data.views import procedural_object, write_procedural_views
    from core.pipelines.reconstruct import ReconstructConfig, reconstruct

    out = args.out or run_folder_name("demo", "torus")
    check_run_folder(out, resume=False)
    cfg = load_job_config(ReconstructConfig, "reconstruct/gaussian", [*args.overrides, f"data={out / 'views'}"])
    spec = procedural_object("torus", "orange", "shiny", "striped")
    print(f"demo: rendering {args.views} views of '{spec.caption}' into {out / 'views'}")
    write_procedural_views(out / "views", spec, args.views, size=max(cfg.width, cfg.height, 32))
    tic = time.perf_counter()
    print_outputs(reconstruct(cfg, out))
    print(f"demo: done in {time.perf_counter() - tic:.0f} s; open {out / 'turntable' / 'turntable.mp4'}")
    return 0


# --- entry point --------------------------------------------------------------------------------

# Subcommands in --help order.
COMMANDS: list[Callable] = [add_generate_command, add_batch_command, add_demo_command, add_reconstruct_command,
                             add_render_command,
                             add_export_command]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scorelift", description="Lift 2D diffusion priors into 3D assets by score distillation.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `scorelift ARGS` and return the exit code: 0 done, 2 a user error (one line on stderr)."""
    parser = build_parser()
    try:
        # Overrides (key=value) may sit anywhere among the options: argparse leaves the ones
        # after an option as unknown, and commands that take overrides collect them here.
        args, extra = parser.parse_known_args(argv)
        if extra:
            if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.overrides = [*args.overrides, *extra]
    except SystemExit as e:  # --help, or a usage error argparse has already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"scorelift {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
