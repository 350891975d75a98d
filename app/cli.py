"""The `scorelift` command line.

Each subcommand is one `add_<name>_command(subparsers)` that declares its options and
sets `func`, the function that runs it (app/cli_jobs.py: generate, batch, demo,
reconstruct; app/cli_relight.py: relight; app/cli_video.py: animate, track; app/cli_assets.py: render, export;
app/cli_web.py: web). A new subcommand
is one more such pair, added to `COMMANDS`. Errors a user can cause (missing or wrong file, bad config,
unknown prompt word, impossible size) raise `core.errors.UserError` (CLIError is one) where they are
detected and end as one line on stderr with exit code 2; any other exception is a bug and keeps its
traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from app.cli_assets import add_export_command, add_render_command
from app.cli_jobs import (add_batch_command, add_demo_command, add_generate_command, add_reconstruct_command,
                          add_train_prior_command)
from app.cli_relight import add_relight_command
from app.cli_video import add_video_commands
from app.cli_web import add_web_command
from core.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (the full usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- entry point --------------------------------------------------------------------------------

# Subcommands in --help order.
COMMANDS: list[Callable] = [add_generate_command, add_batch_command, add_demo_command, add_reconstruct_command,
                             add_relight_command, add_video_commands, add_render_command, add_export_command, add_train_prior_command, add_web_command]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scorelift", description="Lift 2D diffusion priors into 3D assets by score distillation.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `scorelift ARGS` and return the exit code: 0 done, 2 a user error (one line on stderr).
    Anything but a UserError propagates with its traceback (the interpreter exits with 1)."""
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
    except UserError as e:  # CLIError included; a bare ValueError is a bug and keeps its traceback
        message = " ".join(str(e).split("\n"))
        print(f"scorelift {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
