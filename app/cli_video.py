"""`scorelift animate` (video + instance masks -> 4D scene, DreamScene4D) and `scorelift track`
(TAP-Vid-style point tracks from an animate run)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from app.cli_options import check_run_folder, load_job_config, positive_int, print_outputs, run_folder_name
from core.errors import UserError


def add_video_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "animate", help="a monocular video with instance masks -> a 4D scene of moving objects (DreamScene4D)",
        description="Decompose-recompose 4D (Chu et al. 2024): the objects are removed and the background "
                    "fitted with the camera motion, each object is lifted from its first visible frame with "
                    "Zero123 SDS, its motion fitted as deformation + object-to-world motion, and the scene "
                    "recomposed with monocular depth. Writes frames/*.ply, objects/<id>/, background.ply, "
                    "cameras.json, reconstruction/, novel_view.mp4, previews, metrics and checkpoints. Config "
                    "keys can be overridden as key=value (e.g. motion.steps=100 max_resolution=96).",
    )
    p.add_argument("video", type=Path, help="an .mp4 (or .mov/.avi/.mkv/.webm) or a folder of PNG/JPEG frames")
    p.add_argument("--masks", type=Path, required=True,
                   help="folder of per-frame PNG masks whose values are object ids (0 = background)")
    p.add_argument("--fov", type=float, default=None, metavar="DEG",
                   help="horizontal field of view of the video in degrees (default 60)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/animate-<name>-<time>)")
    p.add_argument("--config", default="video4d/dreamscene4d", help="preset name or YAML file")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    p.set_defaults(func=run_animate)

    q = subparsers.add_parser(
        "track", help="point tracks (TAP-Vid layout) from an animate run",
        description="Lift each query (t, x, y) onto the surface visible at frame t, follow it through its "
                    "Gaussians' deformation, object motion and camera motion, and project it into every "
                    "frame. Q.npz holds query_points [N,3] (t, x, y; OpenCV pixels of the input video); "
                    "P.npz gets tracks [N,T,2] and occluded [N,T].",
    )
    q.add_argument("run", type=Path, help="a finished `scorelift animate` run folder")
    q.add_argument("--queries", type=Path, required=True, help="Q.npz with query_points [N,3] as (t, x, y)")
    q.add_argument("--out", type=Path, required=True, help="P.npz to write (tracks, occluded)")
    q.add_argument("--neighbours", type=positive_int, default=4, help="Gaussians an object point rides on (4)")
    q.set_defaults(func=run_track)


def run_animate(args: argparse.Namespace) -> int:
    from core.pipelines.video4d.animate import AnimateConfig, animate, load_clip

    if args.fov is not None and not 1.0 <= args.fov <= 179.0:
        raise UserError(f"--fov must be a field of view in degrees in [1, 179], got {args.fov}")
    out = args.out or run_folder_name("animate", args.video.resolve().name)
    check_run_folder(out, args.resume)
    overrides = [*args.overrides, f"video={args.video}", f"masks={args.masks}"]
    if args.fov is not None:
        overrides.append(f"fov={args.fov}")
    cfg = load_job_config(AnimateConfig, args.config, overrides)
    clip = load_clip(cfg)  # every input check, before anything is written
    created = not out.exists()
    try:
        print(f"animating {len(clip.frames)} frames ({clip.width}x{clip.height}), objects "
              f"{', '.join(map(str, clip.object_ids))} into {out}")
        paths = animate(cfg, out)
    except UserError:
        if created and out.exists():  # nothing half-written stays behind
            shutil.rmtree(out)
        raise
    print_outputs(paths)
    return 0


def run_track(args: argparse.Namespace) -> int:
    import numpy as np

    from core.pipelines.video4d.animate import load_scene4d
    from core.pipelines.video4d.tracks import QueryError, check_queries, track_points

    try:
        with np.load(args.queries) as q:
            if "query_points" not in q:
                raise QueryError(f"{args.queries} has no 'query_points' array (keys: {', '.join(q.files)})")
            queries = q["query_points"]
    except FileNotFoundError:
        raise UserError(f"query file not found: {args.queries}") from None
    except (ValueError, OSError) as e:
        raise UserError(f"{args.queries} is not a readable .npz file ({e})") from None
    scene = load_scene4d(args.run)
    q = check_queries(queries, scene.n_frames, scene.width, scene.height)
    tracks, occluded = track_points(scene, q, neighbours=args.neighbours)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".part.npz")
    np.savez(tmp, tracks=tracks.numpy().astype(np.float32), occluded=occluded.numpy())
    tmp.replace(args.out)
    visible = float((~occluded).float().mean())
    print(f"{len(q)} tracks over {scene.n_frames} frames ({visible:.0%} of points visible) -> {args.out}")
    return 0
