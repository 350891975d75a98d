"""Option types and helpers shared by the `scorelift` subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from core.errors import UserError

MAX_IMAGE_SIZE = 8192


class CLIError(UserError):
    """A problem with the user's input found by the command line itself (an option out of
    range, an --out that is a file); a UserError, so printed as one line, exit code 2."""


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


def run_folder_name(kind: str, name: str) -> Path:
    import re
    import time

    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or kind
    return Path("runs") / f"{kind}-{slug}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_job_config(schema, preset: str, overrides: Sequence[str]):
    from core.config import ConfigError, load_config, resolve_preset

    try:
        return load_config(schema, resolve_preset(preset), overrides)
    except ConfigError as e:  # a UserError already; as CLIError for doors that catch that (app/web_job.py)
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
