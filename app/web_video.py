"""The Video to 4D tab (`scorelift animate` in the page, DreamScene4D: core/pipelines/video4d/):
an uploaded video (.mp4, .mov, .m4v, .avi, .mkv, .webm) or a .zip of frames, a .zip of instance
masks (PNG, pixel values = object ids, 0 = background), an optional horizontal field of view
and three knobs (max resolution, frame stride, and the form's steps per stage).

Checked before any run folder exists (`prepare_video`): exactly one of video and frames zip,
the masks zip, the knobs within VIDEO_BOUNDS; each zip vetted and extracted as the Relight zip is
(app/web_inputs.extract_upload_zip: no absolute path, no `..`, no link, at most MAX_ZIP_BYTES
uncompressed in MAX_ZIP_MEMBERS entries) into one temporary folder, its images found at the
zip's top or in its one top folder; the clip's size read from the image headers or the video's
metadata and refused above MAX_FRAMES kept frames or MAX_CLIP_PIXELS decoded pixels (decoding
holds every kept frame at full size before resizing); then `load_clip`, the CLI's own checks
(frames and masks pair up, one size, an object somewhere). Every mistake is one UserError line
naming the upload, never the temporary folder.

The job (`VideoSource.job`) moves the inputs into the run folder's `input/` (so config.yaml and
a resume read them there), runs `animate`, and zips `frames/*.ply` into `frames.zip` for the
downloads. The object lifts report their steps under the image-to-3D stage name ('coarse');
`LiftStageNames` renames them `lift_<id>` so the progress bar counts each object's lift.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from app.web_inputs import MAX_UPLOAD, TemporaryUpload, extract_upload_zip, whole_number
from core.errors import UserError

# Uncompressed bytes and entries a frames or masks zip may hold.
MAX_ZIP_BYTES = 512 << 20
MAX_ZIP_MEMBERS = 5_000
# Kept frames (after the stride) a job may have: the preset takes ~6 min for 24 frames at 128 px on 2 cores.
MAX_FRAMES = 96
# Decoded pixels of the kept frames at their uploaded size (64 frames of 1280x720): the loader holds
# them all, as float32 RGB, before resizing to the max resolution.
MAX_CLIP_PIXELS = 64 * 1280 * 720
# The page's knobs: (smallest, largest) accepted.
VIDEO_BOUNDS = {"max resolution": (32, 256), "frame stride": (1, 16), "field of view": (1.0, 179.0)}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SKIPPED_TOP = ("__MACOSX",)
# Reconstructed frames the result shows (evenly spaced over the clip).
SHOWN_FRAMES = 4


def video_inputs(gr, web):
    """The tab's subject: a video or a zip of frames, a zip of masks, the field of view and two knobs."""
    from core.data.video import VIDEO_SUFFIXES

    low, high = VIDEO_BOUNDS["max resolution"]
    with gr.Row():
        video = gr.File(label=f"Video ({', '.join(VIDEO_SUFFIXES)}; at most {MAX_UPLOAD.upper()})",
                        file_count="single", type="filepath", height=110, elem_id="video-file")
        frames = gr.File(label="…or its frames as a .zip (PNG/JPEG, sorted by name)", file_count="single",
                         type="filepath", height=110, elem_id="video-frames-zip")
    masks = gr.File(label="Instance masks as a .zip: one PNG per frame (same names, or the same count in order), "
                          "pixel value = object id, 0 = background", file_count="single", type="filepath",
                    height=110, elem_id="video-masks-zip")
    with gr.Row():
        fov = gr.Textbox(label="Horizontal field of view (degrees)", placeholder="empty: 60",
                         elem_id="video-fov")
        resolution = gr.Textbox(label=f"Max resolution (px, {low} to {high})", placeholder="empty: the preset's",
                                elem_id="video-resolution")
        stride = gr.Textbox(label="Frame stride (keep every n-th frame)", placeholder="empty: 1",
                            elem_id="video-stride")
    return [video, frames, masks, fov, resolution, stride]


def video_request_fields(video, frames, masks, fov, resolution, stride) -> dict:
    def path(value):
        return value.get("path") if isinstance(value, dict) else (value or None)

    return {"video": path(video), "frames_zip": path(frames), "masks_zip": path(masks), "fov": fov,
            "max_resolution": resolution, "stride": stride}


def video_results(gr, kind: str):
    """The result area: the novel-view video, a few re-rendered input frames, downloads and metrics.
    Returns (components, values(job), cleared values)."""
    with gr.Row(equal_height=True):
        video = gr.Video(label="Novel view: the camera swings about the objects while time plays (novel_view.mp4)",
                         interactive=False, autoplay=True, loop=True, height=360, elem_id=f"{kind}-novel-view")
        gallery = gr.Gallery(label="Input frames re-rendered from the 4D scene (reconstruction/)", columns=2,
                             height=360, object_fit="contain", elem_id=f"{kind}-reconstruction")
    with gr.Row():
        files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id=f"{kind}-files")
        metrics = gr.JSON(label="Key metrics", elem_id=f"{kind}-metrics")
    return [video, gallery, files, metrics], result_values, lambda: (None, None, None, None)


def result_values(job) -> tuple:
    """(novel view, [(frame, caption)], downloads, metrics) of a finished job; Nones otherwise."""
    from app.web_runs import key_metrics

    if job is None or job.state != "done":
        return None, None, None, None
    outputs = job.snapshot().outputs
    folder = job.run_folder
    frames = sorted((folder / "reconstruction").glob("frame_*.png"))
    picks = sorted({round(i * (len(frames) - 1) / max(1, SHOWN_FRAMES - 1)) for i in range(SHOWN_FRAMES)}) \
        if frames else []
    gallery = [(str(frames[i]), f"frame {i}") for i in picks]
    downloads = [str(outputs[k]) for k in ("novel_view", "frames_zip", "cameras", "background", "config")
                 if k in outputs]
    metrics = key_metrics(folder)
    metrics["frames"] = len(frames)
    metrics["objects"] = sorted(int(p.name) for p in (folder / "objects").iterdir() if p.name.isdigit()) \
        if (folder / "objects").is_dir() else []
    return str(outputs["novel_view"]), gallery or None, downloads or None, metrics


def _number(value, what: str):
    """An optional float text box -> float or None, within VIDEO_BOUNDS[what]."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    low, high = VIDEO_BOUNDS[what]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"the {what} must be a number of degrees, not '{value}'") from None
    if not low <= number <= high:
        raise UserError(f"the {what} must be between {low:g} and {high:g} degrees, not {number:g}")
    return number


def _bounded(value, what: str):
    low, high = VIDEO_BOUNDS[what]
    number = whole_number(value, f"the {what}", low)
    if number is not None and number > high:
        raise UserError(f"the {what} must be at most {high}, not {number}")
    return number


def _uploaded(path, what: str, upload_root: Path | None) -> Path:
    path = Path(path)
    if upload_root is not None and not path.resolve().is_relative_to(Path(upload_root).resolve()):
        raise UserError(f"the {what} must be uploaded through the page")
    if not path.is_file():
        raise UserError(f"the uploaded {what} is gone from the server; upload it again")
    return path


def _image_folder(zip_path: Path, dest: Path, what: str, suffixes: tuple[str, ...]) -> Path:
    """Extract the zip of `what` (frames or masks) into `dest`; the folder holding its images:
    dest itself or its one top folder."""
    dest.mkdir(parents=True)
    kinds = "PNG/JPEG" if len(suffixes) > 1 else "PNG"
    extract_upload_zip(zip_path, dest, f"{what} ({kinds} images)", f"zip the {what} folder itself",
                       MAX_ZIP_BYTES, MAX_ZIP_MEMBERS)
    tops = [p for p in dest.iterdir() if p.name not in SKIPPED_TOP and not p.name.startswith(".")]
    folder = tops[0] if len(tops) == 1 and tops[0].is_dir() else dest
    if not any(p.suffix.lower() in suffixes for p in folder.iterdir() if p.is_file()):
        raise UserError(f"'{zip_path.name}' holds no {kinds} images at its top or in its one top folder; zip the "
                        f"{what} folder (one {kinds} file per frame)")
    return folder


def _clip_size(frames: Path, stride: int, upload_name: str) -> tuple[int, int, int]:
    """(kept frames, width, height) from the frames folder's first image header or the video's
    metadata, without decoding the clip."""
    if frames.is_dir():
        from PIL import Image, UnidentifiedImageError

        files = sorted(p for p in frames.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        try:
            with Image.open(files[0]) as im:
                width, height = im.size
        except (UnidentifiedImageError, OSError, SyntaxError):
            return len(files[::stride]), 0, 0  # the loader names the unreadable frame
        return len(files[::stride]), width, height
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(frames))
        meta = next(reader)
        reader.close()
    except (RuntimeError, OSError, StopIteration) as e:
        raise UserError(f"'{upload_name}' is not a readable video ({type(e).__name__}); upload an .mp4 or a "
                        ".zip of PNG/JPEG frames") from None
    width, height = meta["size"]
    count = int(round(float(meta.get("duration") or 0) * float(meta.get("fps") or 0)))
    if count <= 0:  # no duration in the header: let ffmpeg count them (decoded, not kept)
        try:
            count = imageio_ffmpeg.count_frames_and_secs(str(frames))[0]
        except (RuntimeError, OSError) as e:
            raise UserError(f"'{upload_name}' is not a readable video ({type(e).__name__}); upload an .mp4 or a "
                            ".zip of PNG/JPEG frames") from None
    return -(-count // stride), width, height


@dataclass
class VideoSource(TemporaryUpload):
    """A video job's inputs: `tmp/input/` (the video file or frames/, and masks/) until the run
    folder exists; the object ids and the stage plan [(stage, steps)] the progress bar counts."""

    object_ids: list[int] = field(default_factory=list)
    stages: list[tuple[str, int]] = field(default_factory=list)

    def job(self, cfg, out_dir, callbacks=None) -> dict[str, Path]:
        """Run `animate` into `out_dir` (fresh or resumed); returns its files for the page."""
        from core.pipelines.video4d.animate import animate

        out = Path(out_dir)
        if self.tmp is not None and not (out / "input").is_dir():
            shutil.move(str(self.tmp / "input"), str(out / "input"))
            self.discard()
        cfg.video = str(out / "input" / Path(cfg.video).name)
        cfg.masks = str(out / "input" / "masks")
        paths = animate(cfg, out, LiftStageNames(callbacks, self.object_ids, out) if callbacks else None)
        frames_zip = out / "frames.zip"
        part = out / "frames.zip.part"
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for ply in sorted((out / "frames").glob("*.ply")):
                zf.write(ply, f"frames/{ply.name}")
        part.replace(frames_zip)
        return {"novel_view": paths["novel_view"], "frames_zip": frames_zip, "cameras": paths["cameras"],
                "background": paths["background"], "config": out / "config.yaml"}


class LiftStageNames:
    """Callbacks passed on to the page's job, with each object's lift ('coarse', the image-to-3D
    stage) renamed `lift_<id>`: the object being lifted is the first whose lift has no model.ply
    yet (a finished lift is only re-exported on resume)."""

    KNOWN = ("background", "placement")

    def __init__(self, inner, object_ids: list[int], out: Path):
        self.inner, self.object_ids, self.out = inner, list(object_ids), out

    def _name(self, stage: str) -> str:
        if stage in self.KNOWN or stage.startswith("motion_") or not self.object_ids:
            return stage
        pending = [i for i in self.object_ids if not (self.out / "objects" / str(i) / "lift" / "model.ply").is_file()]
        return f"lift_{(pending or self.object_ids)[0]}"

    def on_step(self, stage, step, total, stats):
        self.inner.on_step(self._name(stage), step, total, stats)

    def on_preview(self, stage, step, path):
        self.inner.on_preview(self._name(stage), step, path)

    def should_stop(self) -> bool:
        return self.inner.should_stop()


def stage_plan(cfg, object_ids: list[int]) -> list[tuple[str, int]]:
    """[(stage, steps)] in the order animate runs them."""
    plan = [("background", cfg.background.steps)]
    for oid in object_ids:
        plan += [(f"lift_{oid}", cfg.lift.steps), (f"motion_{oid}", cfg.motion.steps)]
    return plan + ([("placement", cfg.placement.steps)] if cfg.placement.steps else [])


def _checked_clip(cfg, names: dict[str, str]):
    """`load_clip(cfg)` with the temporary paths in its messages replaced by the uploads' names."""
    from core.pipelines.video4d.animate import load_clip

    try:
        return load_clip(cfg)
    except UserError as e:
        message = str(e)
        for path, name in sorted(names.items(), key=lambda item: -len(item[0])):
            message = message.replace(path + "/", "").replace(path, name)
        raise UserError(message) from None


def prepare_video(request, preset: str, overrides: list[str], seed, steps, upload_root: Path | None):
    """(cfg, run name, VideoSource) of a video request, checked; nothing is written but the
    temporary folder, which is removed again when a check fails."""
    from app.cli_options import load_job_config
    from core.data.video import VIDEO_SUFFIXES
    from core.pipelines.video4d.animate import AnimateConfig

    r = request
    if bool(r.video) == bool(r.frames_zip):
        raise UserError("give either a video or a .zip of its frames (one of them, not "
                        f"{'both' if r.video else 'neither'})")
    if not r.masks_zip:
        raise UserError("no masks: upload a .zip of the instance masks (one PNG per frame, pixel value = object "
                        "id, 0 = background)")
    fov = _number(r.fov, "field of view")
    resolution = _bounded(r.max_resolution, "max resolution")
    stride = _bounded(r.stride, "frame stride")
    knobs = [*([f"fov={fov}"] if fov else []), *([f"max_resolution={resolution}"] if resolution else []),
             *([f"stride={stride}"] if stride else []), *([f"seed={seed}"] if seed is not None else [])]
    source = VideoSource(tmp=Path(tempfile.mkdtemp(prefix="scorelift-video-")))
    try:
        inputs = source.tmp / "input"
        inputs.mkdir()
        masks_zip = _uploaded(r.masks_zip, "masks zip", upload_root)
        names = {}
        if r.video:
            upload = _uploaded(r.video, "video", upload_root)
            if upload.suffix.lower() not in VIDEO_SUFFIXES:
                raise UserError(f"'{upload.name}' is not a video this app reads; upload {', '.join(VIDEO_SUFFIXES)} "
                                "or a .zip of PNG/JPEG frames")
            video = inputs / f"video{upload.suffix.lower()}"
            shutil.copyfile(upload, video)
            name = upload.stem
        else:
            upload = _uploaded(r.frames_zip, "frames zip", upload_root)
            unpacked = _image_folder(upload, source.tmp / "frames_zip", "frames", IMAGE_SUFFIXES)
            video = inputs / "frames"
            shutil.move(str(unpacked), str(video))
            name = upload.stem
        names[str(video)] = f"'{upload.name}'"
        mask_folder = _image_folder(masks_zip, source.tmp / "masks_zip", "masks", (".png",))
        shutil.move(str(mask_folder), str(inputs / "masks"))
        names[str(inputs / "masks")] = f"'{masks_zip.name}'"
        cfg = load_job_config(AnimateConfig, preset, [*overrides, *knobs, f"video={video}",
                                                      f"masks={inputs / 'masks'}"])
        count, width, height = _clip_size(video, cfg.stride, upload.name)
        if count > MAX_FRAMES:
            raise UserError(f"'{upload.name}' has {count} frames at stride {cfg.stride}; at most {MAX_FRAMES} are "
                            "accepted: use a larger frame stride or a shorter clip")
        if count * width * height > MAX_CLIP_PIXELS:
            raise UserError(f"'{upload.name}' is {count} frames of {width}x{height} px; at most "
                            f"{MAX_CLIP_PIXELS / 1e6:.0f} megapixels in all are decoded: use a larger frame stride or "
                            "scale the video down")
        if steps is not None:
            for part in (cfg.background, cfg.lift, cfg.motion, cfg.placement):
                part.steps = steps
        clip = _checked_clip(cfg, names)
        source.object_ids = list(clip.object_ids)
        source.stages = stage_plan(cfg, source.object_ids)
    except BaseException:
        source.discard()
        raise
    return cfg, name, source


def prepare_video_resume(folder: Path):
    """(cfg, VideoSource) of a stopped video run: its inputs are in the run folder already."""
    from app.cli_options import load_job_config
    from core.pipelines.video4d.animate import AnimateConfig, load_clip

    cfg = load_job_config(AnimateConfig, str(folder / "config.yaml"), [])
    clip = load_clip(cfg)
    return cfg, VideoSource(object_ids=list(clip.object_ids), stages=stage_plan(cfg, list(clip.object_ids)))
