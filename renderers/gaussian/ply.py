"""Gaussian splat files: the standard 3DGS .ply layout and the antimatter15 .splat format.

The .ply layout is the one the original 3DGS code writes and common splat viewers read
(binary little-endian, one `vertex` element, float32 properties):

    x y z | nx ny nz (zeros) | f_dc_0..2 | f_rest_0..3*(K-1)-1 | opacity | scale_0..2 | rot_0..3

with `opacity` a logit, `scale_*` natural logs, `rot_*` a quaternion (w, x, y, z) and the
SH coefficients channel-major: f_rest holds all K-1 higher-order coefficients of red,
then green, then blue (3DGS stores features_rest as [N,3,K-1] before flattening).

The .splat format (antimatter15/splat) is 32 bytes per splat: position f32x3, linear
scale f32x3, RGBA u8x4 (degree-0 SH colour, sigmoid opacity) and a quaternion u8x4
(q * 128 + 128), sorted by descending scale volume times opacity as that viewer does.
It drops higher SH degrees; reading one back gives sh_degree 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyParseError
from torch import Tensor

from core.errors import MissingFileError, UserError
from core.io import atomic_path

# Zeroth-order real spherical harmonic, Y_0^0 = 1 / (2 sqrt(pi)).
SH_C0 = 0.28209479177387814

SPLAT_DTYPE = np.dtype(
    [("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)]
)  # 32 bytes


class SplatFormatError(UserError):
    """A file that is not a Gaussian splat file this module can read; the message says what was expected."""


@dataclass
class GaussianData:
    """Plain Gaussian parameters as they are stored on disk (3DGS conventions).

    means [N,3], quats [N,4] (w,x,y,z, not necessarily normalised), log_scales [N,3],
    logit_opacities [N], sh0 [N,1,3], shN [N,K-1,3] with K = (sh_degree+1)^2.
    """

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    logit_opacities: Tensor
    sh0: Tensor
    shN: Tensor

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.shN.shape[1] + 1))) - 1

    def __len__(self) -> int:
        return self.means.shape[0]

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expected = {
            "means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "logit_opacities": (n,), "sh0": (n, 1, 3),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} must be {list(shape)}, got {list(getattr(self, name).shape)}")
        k = self.shN.shape[1] + 1 if self.shN.ndim == 3 else -1
        if self.shN.ndim != 3 or self.shN.shape[0] != n or self.shN.shape[2] != 3 or math.isqrt(k) ** 2 != k:
            raise ValueError(f"shN must be [N,(d+1)^2-1,3] for an SH degree d, got {list(self.shN.shape)}")


def _atomic_write(path: Path, write) -> Path:
    """Run `write(tmp_path)` then move the result to `path`, so readers never see half a file."""
    with atomic_path(path) as tmp:
        write(str(tmp))
    return path


def ply_property_names(sh_degree: int) -> list[str]:
    """The vertex properties, in file order, of a standard 3DGS .ply of this SH degree."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def save_ply(path: str | Path, data: GaussianData, extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write `data` as a binary little-endian 3DGS .ply; returns the path.

    extra: more float32 vertex properties {name: [N]} appended after the standard ones
    (viewers ignore properties they do not know; e.g. the PBR fields of renderers.gaussian.pbr_ply).
    """
    path = Path(path)
    n = len(data)

    def np32(t: Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy().reshape(n, -1)

    columns = np.concatenate(
        [
            np32(data.means),
            np.zeros((n, 3), np.float32),
            np32(data.sh0),
            np32(data.shN.transpose(1, 2)),  # channel-major, as 3DGS writes f_rest
            np32(data.logit_opacities),
            np32(data.log_scales),
            np32(data.quats),
        ],
        axis=1,
    )
    names = ply_property_names(data.sh_degree)
    extra = extra or {}
    vertices = np.empty(n, dtype=[(name, "<f4") for name in [*names, *extra]])
    for i, name in enumerate(names):
        vertices[name] = columns[:, i]
    for name, values in extra.items():
        vertices[name] = np.asarray(values, dtype=np.float32).reshape(n)
    ply = PlyData([PlyElement.describe(vertices, "vertex")], text=False, byte_order="<")
    return _atomic_write(path, ply.write)


def _read_plydata(path: Path) -> PlyData:
    if not path.is_file():
        raise MissingFileError(f"splat file not found: {path}")
    with open(path, "rb") as f:
        if f.read(3) != b"ply":
            raise SplatFormatError(f"{path} is not a .ply file (it does not start with 'ply'); expected a 3DGS .ply")
    try:
        # Loading eagerly makes a truncated body fail here, with the file named.
        return PlyData.read(str(path))
    except (PlyParseError, ValueError, EOFError, IndexError, KeyError) as e:
        raise SplatFormatError(f"{path} is not a readable .ply (truncated or corrupt?): {e}") from None


def load_ply(path: str | Path) -> GaussianData:
    """Read a standard 3DGS .ply (any SH degree 0..3, inferred from the f_rest count)."""
    path = Path(path)
    ply = _read_plydata(path)
    if "vertex" not in ply:
        raise SplatFormatError(f"{path} has no 'vertex' element; expected a 3DGS Gaussian splat .ply")
    vertex = ply["vertex"]
    names = {p.name for p in vertex.properties}
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    required += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    missing = [name for name in required if name not in names]
    if missing:
        raise SplatFormatError(
            f"{path} is a .ply but not a Gaussian splat: it lacks {', '.join(missing)}; expected the 3DGS layout "
            "(x y z, f_dc_0..2, f_rest_*, opacity, scale_0..2, rot_0..3), e.g. a mesh .ply cannot be rendered as splats"
        )
    if vertex.count == 0:
        raise SplatFormatError(f"{path} holds no Gaussians (0 vertices)")
    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    k = n_rest // 3 + 1
    if n_rest % 3 or math.isqrt(k) ** 2 != k or math.isqrt(k) - 1 > 3:
        raise SplatFormatError(
            f"{path} has {n_rest} f_rest_* properties; expected 0, 9, 24 or 45 (SH degree 0..3)"
        )
    missing_rest = [f"f_rest_{i}" for i in range(n_rest) if f"f_rest_{i}" not in names]
    if missing_rest:
        raise SplatFormatError(
            f"{path}: f_rest_* properties are not numbered 0..{n_rest - 1} (missing {missing_rest[0]})")

    def cols(*keys: str) -> Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[key], dtype=np.float32) for key in keys], axis=1))

    n = vertex.count
    rest = cols(*[f"f_rest_{i}" for i in range(n_rest)]) if n_rest else torch.zeros(n, 0)
    return GaussianData(
        means=cols("x", "y", "z"),
        quats=cols("rot_0", "rot_1", "rot_2", "rot_3"),
        log_scales=cols("scale_0", "scale_1", "scale_2"),
        logit_opacities=cols("opacity")[:, 0],
        sh0=cols("f_dc_0", "f_dc_1", "f_dc_2").view(n, 1, 3),
        shN=rest.view(n, 3, k - 1).transpose(1, 2).contiguous(),
    )


def save_splat(path: str | Path, data: GaussianData) -> Path:
    """Write `data` in the antimatter15 .splat format (degree-0 colour only); returns the path."""
    path = Path(path)
    log_scales = data.log_scales.detach().float().cpu()
    logit_opacities = data.logit_opacities.detach().float().cpu()
    # Viewer's sort key: scale volume times opacity, largest first.
    order = torch.argsort(-(log_scales.sum(-1).exp() * torch.sigmoid(logit_opacities)), stable=True)
    rgb = 0.5 + SH_C0 * data.sh0.detach().float().cpu()[:, 0]
    rgba = torch.cat([rgb, torch.sigmoid(logit_opacities)[:, None]], dim=-1)
    quats = data.quats.detach().float().cpu()
    quats = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    records = np.empty(len(data), dtype=SPLAT_DTYPE)
    records["position"] = data.means.detach().float().cpu()[order].numpy()
    records["scale"] = log_scales.exp()[order].numpy()
    records["rgba"] = (rgba * 255).round().clamp(0, 255)[order].numpy().astype(np.uint8)
    records["rot"] = (quats * 128 + 128).round().clamp(0, 255)[order].numpy().astype(np.uint8)
    return _atomic_write(path, lambda tmp: records.tofile(tmp))


def load_splat(path: str | Path) -> GaussianData:
    """Read an antimatter15 .splat file (sh_degree 0; colours and rotations are 8-bit)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"splat file not found: {path}")
    size = path.stat().st_size
    if size == 0 or size % SPLAT_DTYPE.itemsize:
        raise SplatFormatError(
            f"{path} is {size} bytes, not a positive multiple of {SPLAT_DTYPE.itemsize}; expected a .splat file "
            "(32 bytes per splat)"
        )
    records = np.fromfile(path, dtype=SPLAT_DTYPE)
    eps = 1e-6
    rgba = torch.from_numpy(records["rgba"].astype(np.float32) / 255)
    alpha = rgba[:, 3].clamp(eps, 1 - eps)
    scales = torch.from_numpy(records["scale"].astype(np.float32))
    if not torch.isfinite(scales).all() or (scales <= 0).any():
        raise SplatFormatError(f"{path} has non-positive or non-finite scales; expected a .splat file")
    n = len(records)
    return GaussianData(
        means=torch.from_numpy(records["position"].astype(np.float32)),
        quats=(torch.from_numpy(records["rot"].astype(np.float32)) - 128) / 128,
        log_scales=scales.log(),
        logit_opacities=torch.log(alpha / (1 - alpha)),
        sh0=((rgba[:, :3] - 0.5) / SH_C0).view(n, 1, 3),
        shN=torch.zeros(n, 0, 3),
    )


def load_gaussians(path: str | Path) -> GaussianData:
    """Read a .ply or .splat Gaussian file, chosen by suffix (anything else is tried as .ply)."""
    path = Path(path)
    if path.suffix.lower() == ".splat":
        return load_splat(path)
    return load_ply(path)


def save_gaussians(path: str | Path, data: GaussianData) -> Path:
    """Write a .splat when the suffix says so, else the standard 3DGS .ply."""
    path = Path(path)
    if path.suffix.lower() == ".splat":
        return save_splat(path, data)
    return save_ply(path, data)
