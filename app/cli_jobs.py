"""The job subcommands: generate (text or image to 3D), batch, demo and reconstruct.
Each loads a preset with overrides, writes one run folder and prints what it wrote.

A user's mistake is a `core.errors.UserError` raised where it is detected; these commands let
it through to app/cli.py (one line, exit code 2) after removing a run folder the failed job
created (`fresh_run_folder`). Any other exception is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import contextlib
import shutil
from pathlib import Path
from typing import Iterator

from app.cli_options import (CLIError, check_run_folder, load_job_config, pick_device, positive_int, print_outputs,
                             run_folder_name)


@contextlib.contextmanager
def fresh_run_folder(out: Path, resume: bool) -> Iterator[None]:
    """On a UserError inside, remove `out` when this job created it (not on --resume, never a
    folder that existed before): a mistake leaves no half-written run folder behind."""
    from core.errors import UserError

    existed = out.exists()
    try:
        yield
    except UserError:
        if not existed and not resume and out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        raise


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


def run_reconstruct(args: argparse.Namespace) -> int:
    from core.data.nerf_synthetic import load_dataset
    from core.pipelines.reconstruct import ReconstructConfig, reconstruct

    cfg = load_job_config(ReconstructConfig, args.config, [*args.overrides, f"data={args.data}"])
    out = args.out or run_folder_name("reconstruct", args.data.resolve().name)
    check_run_folder(out, args.resume)
    dataset = load_dataset(cfg.data, "train", cfg.width or None, cfg.height or None, cfg.renderer.background)
    print(f"reconstructing {len(dataset)} views of {args.data} into {out}")
    with fresh_run_folder(out, args.resume):
        paths = reconstruct(cfg, out, dataset=dataset)
    print_outputs(paths)
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
    if args.prompt is not None and "=" in args.prompt and args.image is not None:
        args.overrides, args.prompt = [args.prompt, *args.overrides], None  # `generate --image x k=v`
    from_preset = args.prompt is not None and args.prompt.endswith((".yaml", ".yml")) and args.config is None
    if from_preset:  # `scorelift generate configs/x.yaml key=value ...`: the preset (or prompt=) holds the prompt
        args.config, args.prompt = args.prompt, None
    if args.image is None and not from_preset and (args.prompt is None or not args.prompt.strip()):
        raise CLIError('the prompt is empty: say what to generate, e.g. scorelift generate "a red cube" '
                       "(or give --image photo.png)")
    if args.device is not None:
        pick_device(args.device)
    if args.image is not None and not args.image.is_file():
        raise CLIError(f"--image {args.image}: file not found")
    cfg, name, job = build_generate_job(args.prompt, args.image, args.config, args.overrides, args.seed, args.steps,
                                        args.device)
    out = args.out or run_folder_name("generate", name)
    check_run_folder(out, args.resume)
    print(f"generating '{name}' with {args.config or 'the default preset'} into {out}")
    with fresh_run_folder(out, args.resume):
        paths = job(cfg, out)
    print_outputs(paths)
    return 0


def build_generate_job(prompt: str | None, image: Path | None, config: str | None, overrides, seed: int | None = None,
                       steps: int | None = None, device: str | None = None):
    """(cfg, name, job) for one text- or image-to-3D run, as `scorelift generate` and the web app
    (app/web.py) build it; `job(cfg, out_dir, callbacks=...)` runs it. UserError (ConfigError, CLIError) on a bad preset,
    override or an empty prompt."""
    from core.pipelines.image_to_3d import ImageTo3DConfig, image_to_3d
    from core.pipelines.text_to_3d import TextTo3DConfig, generate

    overrides = [*overrides, *([f"seed={seed}"] if seed is not None else []),
                 *([f"device={device}"] if device is not None else [])]
    if image is not None:
        cfg = load_job_config(ImageTo3DConfig, config or "image_to_3d/gaussian_zero123", overrides)
        cfg.image = str(image)
        name, job = image.stem, image_to_3d
    else:
        cfg = load_job_config(TextTo3DConfig, config or "text_to_3d/gaussian_sds", overrides)
        if prompt is not None:
            cfg.prompt = prompt
        if not cfg.prompt.strip():
            raise CLIError(f"{config} sets no prompt: add prompt=\"a red cube\" or give the prompt first")
        name, job = cfg.prompt, generate
    if steps is not None:
        for stage in cfg.stages:
            stage.steps = steps
    return cfg, name, job


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


def add_train_prior_command(subparsers) -> None:
    p = subparsers.add_parser(
        "train-prior", help="train the built-in procedural-world prior (CPU, resumable)",
        description="Train a built-in prior on the procedural world. text: render cache, VAE, text encoder + "
                    "UNet, decoder fine-tune; zero123: pair cache, image encoder + camera projection + UNet on the "
                    "text prior's VAE. One thread, checkpoints in --cache-dir, resumes by default. Options after "
                    "WHAT go to the trainer (see `scorelift train-prior text --help`, `... zero123 --help`).",
    )
    p.add_argument("what", choices=("text", "render", "export", "zero123"),
                   help="text: train the text prior; render: only its image cache; export: save its latest "
                        "checkpoint's weights; zero123: train the Zero123 prior (--export, --render-only)")
    p.add_argument("options", nargs=argparse.REMAINDER, help="trainer options (--minutes, --steps, --out, ...)")
    p.set_defaults(func=run_train_prior)


def run_train_prior(args: argparse.Namespace) -> int:
    from core.training.train import main as train_main

    train_main([args.what, *args.options])
    return 0


def add_demo_command(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the built-in demo: text-to-3D of 'a red cube' on the built-in prior (CPU, no download)",
        description="Runs the default text-to-3D preset (Gaussians + SDS) with the built-in prior on one prompt "
                    "and prints the output paths: model.ply, model.glb, turntable.mp4. With --reconstruct it "
                    "instead renders a procedural object (a shiny striped orange torus) from --views views with "
                    "the project's mesh renderer and fits 3D Gaussians to them.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo-<slug>-<time>)")
    p.add_argument("--prompt", default="a red cube", help="prompt (default 'a red cube')")
    p.add_argument("--steps", type=positive_int, default=None, help="steps of every stage (default: the preset's)")
    p.add_argument("--reconstruct", action="store_true", help="fit Gaussians to procedural views instead")
    p.add_argument("--views", type=positive_int, default=24, help="procedural views for --reconstruct (default 24)")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import time

    tic = time.perf_counter()
    if args.reconstruct:
        from core.data.views import procedural_object, write_procedural_views
        from core.pipelines.reconstruct import ReconstructConfig, reconstruct

        out = args.out or run_folder_name("demo", "torus")
        check_run_folder(out, resume=False)
        overrides = [*args.overrides, f"data={out / 'views'}"] + ([f"steps={args.steps}"] if args.steps else [])
        cfg = load_job_config(ReconstructConfig, "reconstruct/gaussian", overrides)
        spec = procedural_object("torus", "orange", "shiny", "striped")
        print(f"demo: rendering {args.views} views of '{spec.caption}' into {out / 'views'}")
        with fresh_run_folder(out, resume=False):
            write_procedural_views(out / "views", spec, args.views, size=max(cfg.width, cfg.height, 32))
            paths = reconstruct(cfg, out)
    else:
        from core.pipelines.text_to_3d import TextTo3DConfig, generate

        cfg = load_job_config(TextTo3DConfig, "text_to_3d/gaussian_sds", args.overrides)
        cfg.prompt = args.prompt
        if args.steps is not None:
            for stage in cfg.stages:
                stage.steps = args.steps
        out = args.out or run_folder_name("demo", args.prompt)
        check_run_folder(out, resume=False)
        print(f"demo: text-to-3D of '{args.prompt}' (text_to_3d/gaussian_sds, prior {cfg.prior.model}) into {out}")
        with fresh_run_folder(out, resume=False):
            paths = generate(cfg, out)
    print_outputs(paths)
    print(f"demo: done in {time.perf_counter() - tic:.0f} s; open {out / 'turntable' / 'turntable.mp4'}")
    return 0
