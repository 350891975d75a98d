"""`scorelift web`: serve the Gradio app (app/web.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli_options import CLIError


def add_web_command(subparsers) -> None:
    p = subparsers.add_parser(
        "web", help="the web app: text-to-3D, image-to-3D, relight and video-to-4D in the browser, and the past runs",
        description="Serve a Gradio page with a tab per pipeline (text to 3D, image to 3D, relight, video to 4D: "
                    "preset, seed, steps, overrides; progress with ETA and previews; the mesh and splat in 3D "
                    "viewers and the turntable, or the novel-view video and re-rendered frames, the files and key "
                    "metrics when done) and a Runs tab (past run folders; resume a stopped one). Jobs run one at a "
                    "time, in order, into RUNS/<command>-<name>-<time>/. It listens on 127.0.0.1 only unless "
                    "--host says otherwise, and serves no file outside RUNS.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides applied to every job the page starts (before the page's own)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link (off by default)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="where run folders go (default runs/)")
    p.set_defaults(func=run_web)


def run_web(args: argparse.Namespace) -> int:
    from app.web import launch

    if not 1 <= args.port <= 65535:
        raise CLIError(f"--port {args.port} is not a port number in 1..65535")
    if args.runs.exists() and not args.runs.is_dir():
        raise CLIError(f"--runs {args.runs} is a file; give a folder")
    bad = [o for o in args.overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise CLIError(f"'{bad[0]}' is not a KEY=VALUE override")
    print(f"scorelift web: serving on http://{args.host}:{args.port} (runs in {args.runs}); Ctrl+C stops")
    launch(args.host, args.port, args.share, args.runs, job_overrides=list(args.overrides))
    return 0
