"""The Relight tab's job: a Blender/NeRF-synthetic dataset uploaded as a .zip, or a finished run
of the runs folder (`scorelift relight --from RUN`), relit by progressive radiance distillation
(core/pipelines/relight.py), optionally shown under an uploaded environment map.

Checked before any run folder exists (`prepare_relight`): the zip is opened and its members
vetted (no absolute path, no `..`, no link, at most MAX_ZIP_BYTES uncompressed, at most
MAX_ZIP_MEMBERS entries), extracted into a temporary folder, and the dataset found either at
the zip's top or inside its one top folder, then checked as `scorelift relight --data` checks
a folder (transforms_train.json, images present and of the stated size). An environment map is
read (.hdr, .exr, .npy) and checked as `scorelift render --envmap` reads one. Every mistake is
one UserError line naming the upload, never the temporary path.

The job itself (`RelightSource.job`) moves the extracted dataset into the run folder's `data/`
(or renders the chosen run's views into `views/`, as the CLI does), runs `relight`, and, when a
map was uploaded, renders a second relit turntable under it with the pipeline's own turntable
code (core/pipelines/relight_outputs.relit_turntable: the map turning once about +Z), which the
page then shows; the learned environment's turntable stays as `turntable_learned`.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.web_inputs import TemporaryUpload, extract_upload_zip
from core.errors import UserError

# Uncompressed bytes and entries a dataset zip may hold (a 200-view 800 px NeRF-synthetic
# scene is ~100 MB of PNGs; the page's upload cap is far below this, a zip bomb is not).
MAX_ZIP_BYTES = 1 << 30
MAX_ZIP_MEMBERS = 20_000
# The height an uploaded environment map is resampled to for the relit turntable (width 2x),
# as `scorelift render --envmap` does (core/export/passes.environment_light).
ENVMAP_HEIGHT = 64
SKIPPED_TOP = ("__MACOSX",)
# A finished run is rendered from this many views at this size (`scorelift relight --from`'s defaults).
FROM_RUN_VIEWS, FROM_RUN_SIZE = 48, 128


def extract_dataset_zip(path: str | Path, dest: str | Path) -> Path:
    """Extract the dataset zip at `path` into `dest` (which must exist) after vetting every
    member; returns the folder holding transforms_train.json (dest itself or its one top
    folder). UserError when it is not a zip, is unsafe or too large, or holds no dataset."""
    path, dest = Path(path), Path(dest)
    name = path.name
    extract_upload_zip(path, dest, "a Blender dataset folder (transforms_train.json + images)",
                       "zip the dataset folder itself", MAX_ZIP_BYTES, MAX_ZIP_MEMBERS)
    if (dest / "transforms_train.json").is_file():
        return dest
    tops = [p for p in dest.iterdir() if p.name not in SKIPPED_TOP and not p.name.startswith(".")]
    if len(tops) == 1 and tops[0].is_dir() and (tops[0] / "transforms_train.json").is_file():
        return tops[0]
    raise UserError(f"'{name}' has no transforms_train.json at its top or in its one top folder; zip a "
                    "Blender/NeRF-synthetic dataset folder (transforms_train.json + the images it lists)")


def check_envmap_upload(path: str | Path | None, upload_root: Path | None) -> np.ndarray | None:
    """The uploaded environment map as float32 [H,W,3] linear RGB, or None when none was given."""
    if not path:
        return None
    from renderers.shading.envmap_files import read_envmap

    path = Path(path)
    if upload_root is not None and not path.resolve().is_relative_to(Path(upload_root).resolve()):
        raise UserError("the environment map must be uploaded through the page")
    try:
        return read_envmap(path)
    except UserError as e:
        raise UserError(str(e).replace(str(path), f"'{path.name}'")) from None


def resample_envmap(envmap: np.ndarray, height: int = ENVMAP_HEIGHT):
    """[H,W,3] -> torch [height, 2 height, 3] (area-averaged when shrinking), as render --envmap."""
    import torch
    import torch.nn.functional as F

    env = torch.as_tensor(np.asarray(envmap, dtype=np.float32)).permute(2, 0, 1)[None]
    mode = "area" if env.shape[-2] > height else "bilinear"
    return F.interpolate(env, size=(height, 2 * height), mode=mode)[0].permute(1, 2, 0).contiguous()


@dataclass
class RelightSource(TemporaryUpload):
    """Where a relight job's views come from: an extracted zip (`extracted`, in a temporary
    folder `tmp` until the run folder exists) or a run folder to render (`from_run`); and the
    uploaded environment map (None: the learned one only)."""

    extracted: Path | None = None
    from_run: Path | None = None
    envmap: np.ndarray | None = None
    views: int = 48
    size: int = 128

    def job(self, cfg, out_dir, callbacks=None) -> dict[str, Path]:
        """Run the relight into `out_dir` (fresh or being resumed); returns its outputs."""
        from app.cli_relight import write_views
        from core.pipelines.relight import relight

        out = Path(out_dir)
        if self.extracted is not None and not (out / "data" / "transforms_train.json").is_file():
            shutil.move(str(self.extracted), str(out / "data"))
            self.discard()
        elif self.from_run is not None and not (out / "views" / "transforms_train.json").is_file():
            from core.export.assets import load_scene

            write_views(load_scene(self.from_run), out / "views", self.views, self.size)
        if (out / "data").is_dir():
            cfg.data = str(out / "data")
        elif (out / "views").is_dir():
            cfg.data = str(out / "views")
        envmap_file = out / "input_environment.npy"
        if self.envmap is not None and not envmap_file.is_file():
            from renderers.shading.envmap_files import write_envmap

            write_envmap(envmap_file, self.envmap.astype(np.float32))
        paths = relight(cfg, out, callbacks=callbacks)
        if envmap_file.is_file() and cfg.turntable_frames:
            paths = relit_under(paths, out, cfg, np.load(envmap_file))
        return paths


def relit_under(paths: dict, out: Path, cfg, envmap: np.ndarray) -> dict:
    """Add the turntable under `envmap` (turning once about +Z) as 'turntable'; the learned
    environment's becomes 'turntable_learned'."""
    from core.export.passes import load_relight_run
    from core.pipelines.relight_outputs import relit_turntable

    scene, _ = load_relight_run(out)
    env = resample_envmap(envmap).to(scene.device)
    video = relit_turntable(scene, env, out / "turntable_envmap", cfg.turntable_frames, cfg.turntable_size,
                            cfg.turntable_elevation, cfg.turntable_radius, cfg.turntable_fov,
                            cfg.renderer.gaussian.background)
    paths = dict(paths)
    if "turntable" in paths:
        paths["turntable_learned"] = paths["turntable"]
    paths["turntable"] = video
    paths["environment_input"] = out / "input_environment.npy"
    return paths


def prepare_relight(data_zip, from_run, envmap, preset: str, overrides: list[str], seed, steps,
                    runs_dir: Path, upload_root: Path | None):
    """(cfg, run name, RelightSource) of a relight request, checked; nothing is written but the
    temporary extraction, which is removed again when a check fails."""
    from app.cli_options import load_job_config
    from core.data.nerf_synthetic import check_blender_folder
    from core.pipelines.relight import RelightConfig

    if bool(data_zip) == bool(from_run):
        raise UserError("give either a dataset .zip or a finished run to relight (one of them, not "
                        f"{'both' if data_zip else 'neither'})")
    envmap_array = check_envmap_upload(envmap, upload_root)
    source = RelightSource(envmap=envmap_array)
    overrides = [*overrides, *([f"seed={seed}"] if seed is not None else [])]
    try:
        if data_zip:
            zip_path = Path(data_zip)
            if upload_root is not None and not zip_path.resolve().is_relative_to(Path(upload_root).resolve()):
                raise UserError("the dataset zip must be uploaded through the page")
            if not zip_path.is_file():
                raise UserError("the uploaded zip is gone from the server; upload it again")
            source.tmp = Path(tempfile.mkdtemp(prefix="scorelift-relight-"))
            source.extracted = extract_dataset_zip(zip_path, source.tmp)
            try:
                check_blender_folder(source.extracted)
            except UserError as e:
                raise UserError(f"'{zip_path.name}': " + str(e).replace(str(source.extracted) + "/", "")
                                .replace(str(source.extracted), "the zip")) from None
            data, name = source.extracted, zip_path.stem
        else:
            folder = Path(runs_dir) / Path(str(from_run)).name
            if not folder.is_dir():
                raise UserError(f"no run '{from_run}' in {runs_dir}; pick a finished run")
            from core.export.assets import AssetError, load_scene

            try:
                load_scene(folder)
            except (FileNotFoundError, AssetError) as e:
                raise UserError(f"run {folder.name} has no model to relight: {e}") from None
            source.from_run, data, name = folder, folder, folder.name
            source.views, source.size = FROM_RUN_VIEWS, FROM_RUN_SIZE
        cfg = load_job_config(RelightConfig, preset, [*overrides, f"data={data}"])
        if steps is not None:
            for stage in cfg.stages:
                stage.steps = steps
    except BaseException:
        source.discard()
        raise
    return cfg, name, source
