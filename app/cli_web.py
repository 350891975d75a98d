"""`scorelift web`: serve the Gradio app (app/web.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli_options import CLIError


def add_web_command(subparsers) -> None:
    p = subparsers.add_parser(
        "web", help="the web app: text-to-3D and image-to-3D in the browser",
        description="Serve a Gradio page with a text-to-3D and an image-to-3D tab (preset, seed, steps, "
                    "overrides; live status and previews; the mesh, turntable and files when done). Runs go "
                    "one at a time into RUNS/generate-<slug>-<time>/, as with `scorelift generate`.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="where run folders go (default runs/)")
    p.set_defaults(func=run_web)


def run_web(args: argparse.Namespace) -> int:
    from app.web import launch

    if not 1 <= args.port <= 65535:
        raise CLIError(f"--port {args.port} is not a port number in 1..65535")
    if args.runs.exists() and not args.runs.is_dir():
        raise CLIError(f"--runs {args.runs} is a file; give a folder")
    print(f"scorelift web: serving on http://{args.host}:{args.port} (runs in {args.runs}); Ctrl+C stops")
    launch(args.host, args.port, args.share, args.runs)
    return 0
