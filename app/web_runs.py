"""The run folders the web app has written, read back: a small `web_job.json` record per run
(what was asked, its state, its times, its outputs), the list the Runs tab shows (also for
folders the CLI wrote, and after a server restart), the key metrics of a finished run, and
what the page shows of a run: the splat copy its viewer frames, the enlarged previews, the
turntable re-timed to a watchable length.

A run's state is 'queued' | 'running' | 'done' | 'cancelled' | 'error'. The record carries the
id of the server process that wrote it; a run still marked running by a server that is no
longer this one was stopped when that server ended, and shows as 'stopped' (its checkpoints
let it resume).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path

# One id per server process: a 'running' record from another id is a run that server left.
SERVER_ID = uuid.uuid4().hex
RECORD = "web_job.json"
VIEW_SPLAT = "view/model_view.splat"


def write_record(folder: Path, record: dict) -> None:
    """Write `folder/web_job.json` atomically (a reader never sees half a record)."""
    tmp = folder / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, folder / RECORD)


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None


def has_checkpoint(folder: Path) -> bool:
    ckpt = folder / "checkpoints"
    return ckpt.is_dir() and any(ckpt.glob("*.pt"))


def model_files(folder: Path) -> list[Path]:
    """model.*, a relight run's model_pbr.ply and an animate run's novel_view.mp4."""
    return sorted(p for p in [*folder.glob("model.*"), folder / "model_pbr.ply", folder / "novel_view.mp4"]
                  if p.is_file())


def run_state(folder: Path, record: dict | None = None) -> str:
    """The state to show: the record's, with 'stopped' for a run its server left unfinished;
    for a folder without a record (a CLI run): done when it holds a model, else stopped."""
    record = read_record(folder) if record is None else record
    if record is None:
        if model_files(folder):
            return "done"
        return "stopped" if has_checkpoint(folder) else "empty"
    state = record.get("state", "unknown")
    if state in ("running", "queued") and record.get("server") != SERVER_ID:
        return "stopped"
    return state


def resumable(folder: Path, state: str | None = None) -> bool:
    """A run that stopped before its end and can continue from its checkpoints."""
    state = run_state(folder) if state is None else state
    return state in ("stopped", "cancelled") and has_checkpoint(folder) and (folder / "config.yaml").is_file()


def list_runs(runs_dir: Path, limit: int = 200) -> list[dict]:
    """One row per run folder under `runs_dir`, newest first: name, state, kind, subject
    (prompt or image name), when, and the model files it holds."""
    rows = []
    if not runs_dir.is_dir():
        return rows
    folders = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for folder in folders[:limit]:
        record = read_record(folder) or {}
        rows.append({
            "run": folder.name,
            "state": run_state(folder, record or None),
            "kind": record.get("kind", ""),
            "subject": record.get("prompt") or Path(record.get("image") or "").name,
            "preset": record.get("preset", ""),
            "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(folder.stat().st_mtime)),
            "files": " ".join(p.name for p in model_files(folder)),
        })
    return rows


def key_metrics(folder: Path, record: dict | None = None) -> dict:
    """What a finished run shows beside its viewers: steps and last loss per stage (from
    metrics.jsonl), training and export times (from the record), the Gaussian count and mesh
    size (read from the files), and each file's size."""
    record = read_record(folder) if record is None else record
    metrics: dict = {}
    stages: dict[str, dict] = {}
    try:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "stage" in row and "loss" in row:
            stages[row["stage"]] = {"steps": row.get("step"), "last loss": round(float(row["loss"]), 4)}
    if stages:
        metrics["stages"] = stages
    for key in ("train_s", "export_s", "total_s"):
        if record and record.get(key) is not None:
            metrics[key.replace("_s", " time (s)")] = round(float(record[key]), 1)
    ply = folder / "model.ply" if (folder / "model.ply").is_file() else folder / "model_pbr.ply"
    if ply.is_file():
        try:
            from renderers.gaussian.ply import load_gaussians

            metrics["gaussians"] = len(load_gaussians(ply))
        except ValueError:
            pass
    glb = folder / "model.glb"
    if glb.is_file():
        try:
            import trimesh

            mesh = trimesh.load(glb, force="mesh")
            metrics["mesh"] = f"{len(mesh.vertices)} vertices, {len(mesh.faces)} faces"
        except Exception:  # noqa: BLE001 - a summary line, not a check of the file
            pass
    metrics["files"] = {p.name: f"{p.stat().st_size / 1024:.0f} KiB" for p in model_files(folder)}
    return metrics


def write_view_splat(folder: Path, radius: float = 0.55, source: str = "model.ply") -> Path | None:
    """A copy of the run's Gaussians (model.ply) for the page's splat viewer, or None when
    the run's model is not Gaussians.

    The viewer (gsplat.js inside gr.Model3D) orbits the origin at distance 5 with a ~30
    degree field of view and a +Y-down world (the .splat convention). scorelift's world is
    +Z up, so x, y, z -> x, -z, y (a +90 degree turn about x: quaternion (cos 45, sin 45, 0, 0)
    composed on the left of every Gaussian's), then centred on the opacity-weighted mean and
    scaled so 95% of that weight lies within `radius` of the origin, each Gaussian counted out
    to its centre's distance plus two of its largest standard deviations.
    """
    ply = folder / source  # model.ply, or a relight run's model_pbr.ply (standard fields first)
    if not ply.is_file():
        return None
    import torch

    from renderers.gaussian.ply import GaussianData, load_gaussians, save_splat

    try:
        data = load_gaussians(ply)
    except ValueError:  # a mesh .ply (the final stage was a mesh)
        return None
    if len(data) == 0:
        return None
    weight = torch.sigmoid(data.logit_opacities.float())
    centre = (data.means * weight[:, None]).sum(0) / weight.sum().clamp_min(1e-12)
    offsets = data.means - centre
    distance = offsets.norm(dim=-1) + 2 * data.log_scales.float().exp().amax(-1)
    order = torch.argsort(distance)
    cumulative = torch.cumsum(weight[order], 0) / weight.sum().clamp_min(1e-12)
    reach = float(distance[order][torch.searchsorted(cumulative, torch.tensor(0.95)).clamp(max=len(data) - 1)])
    scale = radius / max(reach, 1e-6)
    x, y, z = offsets.unbind(-1)
    means = torch.stack([x, -z, y], dim=-1) * scale
    turn = torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0])
    quats = _quat_multiply(turn.expand_as(data.quats), data.quats)
    view = GaussianData(means, quats, data.log_scales + math.log(scale), data.logit_opacities, data.sh0, data.shN)
    out = folder / VIEW_SPLAT
    out.parent.mkdir(exist_ok=True)
    return save_splat(out, view)


def _quat_multiply(a, b):
    """Hamilton product a * b of [N,4] (w, x, y, z) quaternions."""
    import torch

    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def new_record(kind: str, preset: str, prompt: str = "", image: str = "") -> dict:
    return {"kind": kind, "preset": preset, "prompt": prompt, "image": image, "state": "queued",
            "server": SERVER_ID, "pid": os.getpid(), "created": time.time()}


def enlarged_preview(path: Path, out: Path, min_height: int = 256) -> Path:
    """A copy of a preview strip enlarged by a whole factor (nearest pixel, so no blur) to at
    least `min_height` px high; the runner's previews are render-sized (32-64 px)."""
    from PIL import Image

    with Image.open(path) as im:
        factor = max(1, -(-min_height // im.height))
        out.parent.mkdir(exist_ok=True)
        im.resize((im.width * factor, im.height * factor), Image.NEAREST).save(out)
    return out


def retime_turntable(video: Path, fps: float) -> Path:
    """Re-encode the turntable from its frame PNGs at `fps` (the pipeline writes 24 fps; 48
    frames at 16 fps make a 3 s turn)."""
    import imageio.v3 as iio

    from core.export.video import write_video

    frames = sorted(video.parent.glob("frame_*.png"))
    if frames:
        write_video(video, (iio.imread(p) for p in frames), fps=fps)
    return video
