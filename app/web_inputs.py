"""What the web page's form holds, checked before any run folder exists.

Every check here raises a user error (`core.errors.UserError`, of which the config, prior,
reference-image and asset errors are subclasses) with one readable line; the page prints it
after `error: `. `user_errors()` is what the web app catches as "the user can fix this"; any
other exception is a bug and is reported as "internal error" with the log's path.
"""

from __future__ import annotations

import shutil
import stat
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from core.errors import UserError

# An uploaded picture larger than this (pixels a side) is refused: the reference view is
# downsampled to reference_size (64 px) anyway, and decoding a huge image costs memory.
MAX_IMAGE_SIDE = 4096
# The largest upload Gradio accepts (launch(max_file_size=...)); an image file is far smaller.
MAX_UPLOAD = "25mb"


def presets_for(kind: str) -> list[str]:
    """Shipped presets of a job kind ('text', 'image', 'relight' or 'video'), CPU presets first, then gpu/ ones."""
    from core.config import list_presets

    folder = {"text": "text_to_3d/", "image": "image_to_3d/", "relight": "relight/", "video": "video4d/"}[kind]
    names = list_presets()
    return [n for n in names if n.startswith(folder)] + [n for n in names if n.startswith("gpu/" + folder)]


def upload_root() -> Path:
    """The folder Gradio keeps uploads in; an image path from the page must lie in it."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes the page reports as one `error:` line: every UserError, and a
    RunError (a run stopped for a reason the user should read, e.g. the loss stayed NaN)."""
    from core.runner import RunError

    return (UserError, RunError)


def parse_overrides(text: str) -> list[str]:
    """The overrides box -> CLI-style `key=value` strings; blank lines and `#` comments are skipped."""
    overrides = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line or line.startswith("="):
            raise UserError(f"override line {number} '{line}' is not key=value (e.g. steps=200 or seed=3)")
        overrides.append(line)
    return overrides


def whole_number(value, what: str, minimum: int) -> int | None:
    """A number box's value (float, int, numeric text or empty) -> int or None ("the preset's")."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a whole number, not '{value}'") from None
    if number != int(number) or int(number) < minimum:
        raise UserError(f"{what} must be a whole number of at least {minimum}, not {value:g}"
                        if isinstance(value, (int, float)) else f"{what} must be a whole number of at least "
                        f"{minimum}, not {value}")
    return int(number)


@dataclass
class CheckedImage:
    """An upload that decoded as a picture: pixels [H,W,3|4] uint8 and where it came from.
    A fully opaque alpha channel is dropped (an ordinary photo the browser or an editor
    saved as RGBA carries no mask; the loader then separates the object from a plain
    background, as for an RGB file on the command line)."""

    pixels: np.ndarray
    source: Path

    def save(self, path: Path) -> Path:
        import imageio.v3 as iio

        iio.imwrite(path, self.pixels)
        return path


def check_image(path: str | Path | None, upload_root: str | Path | None = None) -> CheckedImage:
    """Decode the uploaded file at `path` (which must lie under `upload_root`, the upload
    folder, when given) and refuse what cannot be a reference picture: no file, not an
    image, more than MAX_IMAGE_SIDE pixels a side, not 1, 3 or 4 channels."""
    if not path:
        raise UserError("no image: upload a picture of one object (RGBA, or on a plain background)")
    path = Path(path)
    if upload_root is not None:
        root = Path(upload_root).resolve()
        if not path.resolve().is_relative_to(root):
            raise UserError("the image must be uploaded through the page")
    if not path.is_file():
        raise UserError("the uploaded image is gone from the server; upload it again")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
            if max(width, height) > MAX_IMAGE_SIDE:
                raise UserError(f"the image is {width}x{height} px; the largest accepted is {MAX_IMAGE_SIDE} px "
                                "a side: scale it down (the job uses 64x64 px of it)")
            im.load()
            if im.mode not in ("RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
            pixels = np.asarray(im).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        name = path.name.split("/")[-1]
        raise UserError(f"'{name}' is not an image this app can read ({type(e).__name__}); upload a PNG or "
                        "JPEG picture") from None
    if pixels.ndim == 3 and pixels.shape[-1] == 4 and pixels[..., 3].min() == 255:
        pixels = pixels[..., :3]
    return CheckedImage(pixels, path)


def check_prompt_words(prior_cfg, prompt: str) -> None:
    """Raise a user error when the prior's tokenizer does not know a word of `prompt`
    (the built-in prior has a closed vocabulary), or when the prior cannot be found, before
    any run folder or model load: only its tokenizer is read."""
    if getattr(prior_cfg, "kind", "") != "stable_diffusion":
        return
    from transformers import AutoTokenizer

    from core.priors.loading import load_component, resolve_source
    from core.priors.stable_diffusion import SD_FOLDERS, SD_LAYOUT, StableDiffusionPrior

    source = resolve_source(prior_cfg.model, SD_LAYOUT, SD_FOLDERS)
    tokenizer = load_component(AutoTokenizer, source, "tokenizer", SD_LAYOUT,
                               **({"revision": prior_cfg.revision} if getattr(prior_cfg, "revision", None) else {}))
    try:
        # The prior's own check, given only the tokenizer it reads (the UNet is not loaded).
        StableDiffusionPrior.check_vocabulary(types.SimpleNamespace(tokenizer=tokenizer), prompt)
    except ValueError as e:
        raise UserError(str(e)) from None


def _check_zip_member(info: zipfile.ZipInfo, zip_name: str, hint: str) -> None:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise UserError(f"'{zip_name}' holds '{info.filename}', a path outside the zip's folder; {hint} "
                        "(relative paths only)")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UserError(f"'{zip_name}' holds a symbolic link '{info.filename}'; zip the files themselves")


def extract_upload_zip(path: str | Path, dest: str | Path, what: str, hint: str, max_bytes: int,
                       max_members: int) -> None:
    """Extract the uploaded zip at `path` into the existing folder `dest` after vetting every
    member: UserError when it is not a zip (`what` says what it should hold), is damaged, holds
    an absolute path, a `..` or a link (`hint` says how to zip it instead), more than
    `max_members` entries or more than `max_bytes` uncompressed."""
    path, dest = Path(path), Path(dest)
    name = path.name
    if not zipfile.is_zipfile(path):
        raise UserError(f"'{name}' is not a zip file; upload a .zip of {what}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise UserError(f"'{name}' holds {len(infos)} entries; at most {max_members} are accepted")
            total = sum(info.file_size for info in infos)
            if total > max_bytes:
                raise UserError(f"'{name}' unpacks to {total / 2**20:.0f} MiB; at most "
                                f"{max_bytes / 2**20:.0f} MiB are accepted")
            for info in infos:
                _check_zip_member(info, name, hint)
            # zipfile reads at most each member's stated size, so `total` bounds what is written.
            zf.extractall(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as e:
        raise UserError(f"'{name}' is a damaged or unsupported zip ({e})") from None


@dataclass
class TemporaryUpload:
    """An upload unpacked into the temporary folder `tmp` until its job's run folder exists
    (the Relight and Video to 4D jobs' sources)."""

    tmp: Path | None = None

    def discard(self) -> None:
        """Remove the temporary folder (a job cancelled before it started, or a rejected one)."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
