"""Face visibility from nvdiffrast on CUDA, when it is installed (it is optional).

Only the visibility pass (which face is nearest at each pixel centre) is delegated; the
differentiable barycentrics, attribute interpolation and anti-aliasing stay the torch ones
in `raster.py` / `antialias.py`, so both backends give the same gradients.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from core.cameras import Cameras

try:
    import nvdiffrast.torch as dr
except ImportError:  # optional: the torch rasteriser covers every case
    dr = None


def nvdiffrast_available(device: torch.device) -> bool:
    return dr is not None and torch.device(device).type == "cuda"


@functools.lru_cache(maxsize=4)
def _context(device: torch.device):
    return dr.RasterizeCudaContext(device=device)


def clip_space(verts_cam: Tensor, cameras: Cameras, near: float, far: float) -> Tensor:
    """[B,V,4] clip coordinates from OpenCV camera-space vertices [B,V,3].

    The projection maps pixel row 0 to y_ndc = -1, which is the row nvdiffrast writes first,
    so its output needs no flip; w is the camera z-depth.
    """
    B, W, H = len(cameras), cameras.width, cameras.height
    K = cameras.K.to(verts_cam)
    X, Y, Z = verts_cam.unbind(-1)
    fx, fy, cx, cy = (K[:, i, j].view(B, 1) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    x = 2 * fx / W * X + (2 * cx / W - 1) * Z
    y = 2 * fy / H * Y + (2 * cy / H - 1) * Z
    z = (far + near) / (far - near) * Z - 2 * far * near / (far - near)
    return torch.stack([x, y, z, Z], dim=-1)


@torch.no_grad()
def visible_faces_nvdiffrast(verts_cam: Tensor, faces: Tensor, cameras: Cameras, near: float, far: float) -> Tensor:
    """[B,H,W] nearest face per pixel centre (-1 where empty), like `raster._visible_faces`."""
    pos = clip_space(verts_cam.float(), cameras, near, far).contiguous()
    rast, _ = dr.rasterize(_context(verts_cam.device), pos, faces.int().contiguous(), (cameras.height, cameras.width))
    return rast[..., 3].long() - 1
