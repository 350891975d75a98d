"""Equirectangular environment maps: loading, direction <-> uv, bilinear lookup.

World frame (DESIGN.md): +Z up. The panorama follows Blender's world mapping
(Cycles' `direction_to_equirectangular`): the image centre (u = 0.5) is the direction +X,
u grows clockwise seen from above (+X -> -Y -> -X), so the panorama is not mirrored when
seen from inside; v runs from the zenith (+Z, image row 0) to the nadir (-Z, last row):

    u = 0.5 - atan2(y, x) / 2pi,    v = acos(z) / pi

An environment map is a channel-last tensor [H,W,C] of linear radiance (C = 3, >= 0),
usually W = 2H. Texel (i, j) covers v in [i/H, (i+1)/H], u in [j/W, (j+1)/W].
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.errors import MissingFileError, UserError
from renderers.shading.tonemap import srgb_decode


def direction_to_equirect_uv(directions: Tensor) -> Tensor:
    """Unit directions [...,3] (world, +Z up) -> equirect uv [...,2] in [0,1]."""
    x, y, z = directions.unbind(-1)
    u = 0.5 - torch.atan2(y, x) / (2 * math.pi)
    v = torch.acos(z.clamp(-1.0, 1.0)) / math.pi
    return torch.stack([u, v], dim=-1)


def equirect_uv_to_direction(uv: Tensor) -> Tensor:
    """Equirect uv [...,2] in [0,1] -> unit directions [...,3]; inverse of `direction_to_equirect_uv`."""
    u, v = uv.unbind(-1)
    theta, phi = math.pi * v, 2 * math.pi * (0.5 - u)  # phi = atan2(y, x)
    sin_theta = torch.sin(theta)
    return torch.stack([sin_theta * torch.cos(phi), sin_theta * torch.sin(phi), torch.cos(theta)], dim=-1)


def equirect_directions(height: int, width: int | None = None, device=None) -> Tensor:
    """[H,W,3] unit directions through the texel centres of an equirect map (W defaults to 2H)."""
    width = width or 2 * height
    v = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    u = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return equirect_uv_to_direction(torch.stack([uu, vv], dim=-1))


def equirect_solid_angles(height: int, width: int, device=None) -> Tensor:
    """[H,1] exact solid angle of one texel in each row; they sum to 4pi over the map."""
    theta = torch.linspace(0.0, math.pi, height + 1, device=device, dtype=torch.float64)
    # Solid angle of a latitude band: 2pi (cos theta0 - cos theta1), split over W texels.
    band = (torch.cos(theta[:-1]) - torch.cos(theta[1:])) * (2 * math.pi / width)
    return band.float().unsqueeze(-1)


def bilinear_lookup(image: Tensor, x: Tensor, y: Tensor, wrap_x: bool) -> Tensor:
    """Bilinear samples of `image` [H,W,C] at continuous pixel coordinates x, y [...] -> [...,C].

    Coordinates are in pixels with texel centres at +0.5. x wraps around when `wrap_x`
    (equirect longitude), else clamps; y always clamps. Differentiable in `image`, x, y.
    """
    H, W, C = image.shape
    x = x - 0.5
    y = (y - 0.5).clamp(0.0, H - 1.0)
    if not wrap_x:
        x = x.clamp(0.0, W - 1.0)
    x0f, y0f = torch.floor(x), torch.floor(y)
    wx, wy = (x - x0f).unsqueeze(-1), (y - y0f).unsqueeze(-1)
    x0, y0 = x0f.long(), y0f.long()
    if wrap_x:
        x0, x1 = x0 % W, (x0 + 1) % W
    else:
        x1 = (x0 + 1).clamp(max=W - 1)
    y1 = (y0 + 1).clamp(max=H - 1)
    flat = image.reshape(H * W, C)

    def tap(yi, xi):
        return flat[(yi * W + xi).reshape(-1)].reshape(*x.shape, C)

    top = tap(y0, x0) * (1 - wx) + tap(y0, x1) * wx
    bottom = tap(y1, x0) * (1 - wx) + tap(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def sample_equirect(envmap: Tensor, directions: Tensor) -> Tensor:
    """Bilinear radiance lookup: envmap [H,W,C], unit directions [...,3] -> [...,C]."""
    H, W, _ = envmap.shape
    uv = direction_to_equirect_uv(directions)
    return bilinear_lookup(envmap, uv[..., 0] * W, uv[..., 1] * H, wrap_x=True)


def downsample_equirect(envmap: Tensor) -> Tensor:
    """[H,W,C] -> [H/2,W/2,C], each texel the solid-angle-weighted mean of its 2x2 children."""
    H, W, C = envmap.shape
    if H % 2 or W % 2:
        raise ValueError(f"equirect size must be even to halve, got {H}x{W}")
    weights = equirect_solid_angles(H, W, envmap.device).expand(H, W).unsqueeze(-1)
    num = (envmap * weights).reshape(H // 2, 2, W // 2, 2, C).sum(dim=(1, 3))
    den = weights.reshape(H // 2, 2, W // 2, 2, 1).sum(dim=(1, 3))
    return num / den


def read_radiance_hdr(path: str | Path) -> np.ndarray:
    """Radiance RGBE (.hdr/.pic) file -> float32 [H,W,3] linear radiance.

    Written here because imageio reads .hdr only through FreeImage, a library it would
    have to download; this reader handles flat and new-style run-length-encoded scanlines
    in the standard -Y H +X W orientation.
    """
    data = Path(path).read_bytes()
    header_end = data.find(b"\n\n")
    if not data.startswith(b"#?") or header_end < 0:
        raise UserError(f"{path} is not a Radiance .hdr file (no '#?' header)")
    header = data[:header_end].decode("latin-1")
    if "FORMAT=32-bit_rle_xyze" in header:
        raise UserError(f"{path}: XYZE .hdr files are not supported; convert to RGBE")
    line_end = data.find(b"\n", header_end + 2)
    size = re.fullmatch(r"-Y (\d+) \+X (\d+)", data[header_end + 2:line_end].decode("latin-1").strip())
    if size is None:
        raise UserError(f"{path}: only the standard '-Y H +X W' .hdr orientation is supported")
    H, W = int(size.group(1)), int(size.group(2))
    buf = np.frombuffer(data, dtype=np.uint8, offset=line_end + 1)
    rgbe = np.empty((H, W, 4), dtype=np.uint8)
    pos = 0
    try:
        for row in range(H):
            if 8 <= W < 32768 and buf[pos] == 2 and buf[pos + 1] == 2 and buf[pos + 2] < 128:
                pos += 4  # new-style RLE: each of the 4 channels run-length coded separately
                for ch in range(4):
                    col = 0
                    while col < W:
                        count = int(buf[pos])
                        pos += 1
                        if count > 128:
                            count -= 128
                            rgbe[row, col:col + count, ch] = buf[pos]
                            pos += 1
                        else:
                            rgbe[row, col:col + count, ch] = buf[pos:pos + count]
                            pos += count
                        col += count
            else:
                rgbe[row] = buf[pos:pos + 4 * W].reshape(W, 4)
                pos += 4 * W
    except (IndexError, ValueError):
        raise UserError(f"{path}: truncated or corrupt .hdr pixel data") from None
    exponent = rgbe[..., 3:4].astype(np.int32)
    scale = np.where(exponent > 0, np.ldexp(1.0, exponent - 136), 0.0)  # 2^(e-128) / 256
    return (rgbe[..., :3].astype(np.float64) + 0.5 * (exponent > 0)) * scale


def write_radiance_hdr(path: str | Path, image: np.ndarray) -> None:
    """float [H,W,3] linear radiance (>= 0) -> flat (uncompressed) RGBE .hdr file."""
    image = np.asarray(image, dtype=np.float64)
    H, W, _ = image.shape
    peak = image.max(axis=-1, keepdims=True)
    mantissa, exponent = np.frexp(peak)
    scale = np.where(peak > 1e-32, mantissa * 256.0 / np.maximum(peak, 1e-300), 0.0)
    rgb = np.clip(np.floor(image * scale), 0, 255)
    e = np.where(peak > 1e-32, exponent + 128, 0)
    rgbe = np.concatenate([rgb, e], axis=-1).astype(np.uint8)
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {H} +X {W}\n".encode("latin-1")
    Path(path).write_bytes(header + rgbe.tobytes())


def load_envmap(path: str | Path, height: int | None = None, device=None) -> Tensor:
    """Equirect environment image -> [H,W,3] float32 linear radiance.

    .hdr is read by `read_radiance_hdr`; .exr/.pfm and others by imageio (as float,
    taken as linear); 8/16-bit images (png, jpg) are sRGB-decoded to linear.
    `height` resizes (area-averaged down, bilinear up) to [height, 2*height].
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"environment map not found: {path}")
    if path.suffix.lower() in (".hdr", ".pic"):
        image = read_radiance_hdr(path)
    else:
        import imageio.v3 as iio

        try:
            image = np.asarray(iio.imread(path))
        except Exception as e:  # imageio raises plugin-specific types
            raise UserError(f"cannot read environment map {path}: {e}") from None
        if image.dtype == np.uint8:
            image = srgb_decode(torch.from_numpy(image.astype(np.float32) / 255.0)).numpy()
        elif image.dtype == np.uint16:
            image = srgb_decode(torch.from_numpy(image.astype(np.float32) / 65535.0)).numpy()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise UserError(f"environment map {path} must be RGB(A), got shape {image.shape}")
    env = torch.from_numpy(np.ascontiguousarray(image[..., :3], dtype=np.float32)).clamp_min(0.0)
    if height is not None and env.shape[0] != height:
        mode = "area" if env.shape[0] > height else "bilinear"
        env = torch.nn.functional.interpolate(env.permute(2, 0, 1)[None], size=(height, 2 * height), mode=mode)[0]
        env = env.permute(1, 2, 0).contiguous()
    return env.to(device) if device is not None else env
