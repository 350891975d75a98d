"""Differentiable triangle rasterisation in pure torch (the CPU path; runs on CUDA too).

Visibility works like a tiled Gaussian rasteriser: every face gets a screen bounding box,
(face, pixel tile) pairs are built with tensor ops, each pair tests its tile's pixels
and a z-buffer keeps the nearest face per pixel (`scatter_reduce` on a packed depth|face
key). That part runs without grad. Barycentrics and depth of the winning face are then
recomputed differentiably, so gradients reach vertex positions and interpolated attributes.

Inside tests are done in homogeneous camera space (Olano & Greer 1997, "Triangle Scan
Conversion using 2D Homogeneous Coordinates"): with camera-space corners v0, v1, v2 and a
pixel ray d (z = 1), w_i = (v_{i+1} x v_{i+2}) . d are unnormalised barycentrics, b = w / sum(w)
are the perspective-correct barycentrics and z = det[v0 v1 v2] / sum(w) the depth. No
perspective divide of vertices is needed, so triangles crossing the near plane are clipped
per pixel (z >= near) instead of being dropped. Shared edges are evaluated with exactly
negated coefficients on both faces, so closed meshes render without cracks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from core.cameras import Cameras

from .nvdiffrast_backend import nvdiffrast_available, visible_faces_nvdiffrast

_EMPTY = torch.iinfo(torch.int64).max


@dataclass
class Rasterization:
    """Which face covers each pixel and where, for a batch of B cameras at H x W.

    face_id [B,H,W] long (-1 where empty); bary [B,H,W,3] perspective-correct barycentrics,
    depth [B,H,W,1] camera z-depth (0 where empty), mask [B,H,W,1] float coverage in {0,1}.
    Sparse views of the N covered pixels: pixel [N] flat index into B*H*W, batch [N],
    face [N], bary_covered [N,3], depth_covered [N].
    verts_cam [B,V,3] OpenCV camera-space vertices, faces [F,3], rays [B,H,W,3] camera-space
    pixel-centre directions with z = 1. bary/depth carry gradients to the vertices.
    """

    face_id: Tensor
    pixel: Tensor
    batch: Tensor
    face: Tensor
    bary_covered: Tensor
    depth_covered: Tensor
    verts_cam: Tensor
    faces: Tensor
    rays: Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.face_id.shape)

    @property
    def mask(self) -> Tensor:
        return (self.face_id >= 0).unsqueeze(-1).to(self.rays.dtype)

    @property
    def bary(self) -> Tensor:
        return self.to_dense(self.bary_covered)

    @property
    def depth(self) -> Tensor:
        return self.to_dense(self.depth_covered[:, None])

    def to_dense(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """[B,H,W,C] image from per-covered-pixel values [N,C]; `fill` elsewhere."""
        B, H, W = self.shape
        out = values.new_full((B * H * W, values.shape[-1]), fill)
        return out.index_put((self.pixel,), values).view(B, H, W, -1)


def camera_space(vertices: Tensor, cameras: Cameras) -> Tensor:
    """OpenCV camera-space positions [B,V,3] (x right, y down, z forward) of world vertices [V,3] or [B,V,3]."""
    viewmats = cameras.viewmats().to(vertices)
    return torch.einsum("bij,bvj->bvi", viewmats[:, :3, :3], vertices.expand(len(cameras), -1, -1)) + viewmats[:, None, :3, 3]


def pixel_rays(cameras: Cameras, dtype=torch.float32) -> Tensor:
    """[B,H,W,3] camera-space directions (x, y, 1) through pixel centres (+0.5), OpenCV axes."""
    B, H, W = len(cameras), cameras.height, cameras.width
    K = cameras.K.to(dtype)
    ys, xs = torch.meshgrid(
        torch.arange(H, device=K.device, dtype=dtype) + 0.5, torch.arange(W, device=K.device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    fx, fy, cx, cy = (K[:, i, j].view(B, 1, 1) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    return torch.stack([(xs - cx) / fx, (ys - cy) / fy, torch.ones_like(xs).expand(B, H, W)], dim=-1)


def rasterize(
    vertices: Tensor,
    faces: Tensor,
    cameras: Cameras,
    near: float = 0.01,
    far: float = 1e4,
    cull_backfaces: bool = False,
    tile_size: int | None = None,
    max_chunk: int = 1 << 21,
    backend: str = "auto",
) -> Rasterization:
    """Rasterise a triangle mesh into B cameras.

    vertices [V,3] or [B,V,3] world space (float32 or float64), faces [F,3] long.
    Front faces wind counter-clockwise seen from outside; `cull_backfaces` drops the others.
    `tile_size` is the side of the pixel tiles faces are binned into (None: the side with the
    least estimated work). `max_chunk` bounds the (pixel, face) tests held in memory at once.
    backend: "torch", "nvdiffrast" (CUDA, visibility only) or "auto" (nvdiffrast when usable).
    """
    faces = faces.long()
    verts_cam = camera_space(vertices, cameras)
    rays = pixel_rays(cameras, verts_cam.dtype)
    usable = nvdiffrast_available(verts_cam.device) and not cull_backfaces
    if backend == "nvdiffrast" and not usable:
        raise RuntimeError("backend 'nvdiffrast' needs nvdiffrast installed, a CUDA device and no backface culling")
    if backend == "nvdiffrast" or (backend == "auto" and usable):
        face_id = visible_faces_nvdiffrast(verts_cam.detach(), faces, cameras, near, far)
    else:
        with torch.no_grad():
            face_id = _visible_faces(verts_cam.detach(), faces, cameras, near, far, cull_backfaces, tile_size, max_chunk)
    B, H, W = face_id.shape
    flat = face_id.view(-1)
    pixel = (flat >= 0).nonzero().squeeze(-1)
    face = flat[pixel]
    batch = pixel // (H * W)
    corners = verts_cam[batch[:, None], faces[face]]  # [N,3,3]
    bary, depth = _barycentrics(corners, rays.view(-1, 3)[pixel])
    return Rasterization(face_id, pixel, batch, face, bary, depth, verts_cam, faces, rays)


def _barycentrics(corners: Tensor, rays: Tensor) -> tuple[Tensor, Tensor]:
    """Perspective-correct barycentrics [N,3] and z-depth [N] of rays [N,3] (z = 1) hitting triangles [N,3,3]."""
    edges = _edge_normals(corners)
    w = (edges * rays[:, None]).sum(-1)  # Olano & Greer: unnormalised barycentrics
    total = w.sum(-1)
    det = (corners[:, 0] * edges[:, 0]).sum(-1)
    return w / total[:, None], det / total


def _edge_normals(corners: Tensor) -> Tensor:
    """[...,3,3] rows v_{i+1} x v_{i+2}: the plane through the camera and the edge opposite corner i."""
    return torch.cross(corners.roll(-1, dims=-2), corners.roll(-2, dims=-2), dim=-1)


def _visible_faces(
    verts_cam: Tensor, faces: Tensor, cameras: Cameras, near: float, far: float,
    cull_backfaces: bool, tile_size: int | None, max_chunk: int,
) -> Tensor:
    """[B,H,W] index of the nearest face covering each pixel centre, -1 where none (no grad)."""
    B, H, W, T = len(cameras), cameras.height, cameras.width, tile_size
    device = verts_cam.device
    corners = verts_cam[:, faces]  # [B,F,3,3]
    edges = _edge_normals(corners)
    det = (corners[..., 0, :] * edges[..., 0, :]).sum(-1)  # [B,F]; < 0 faces the camera
    K = cameras.K.to(verts_cam)
    fx, fy, cx, cy = (K[:, i, j].view(B, 1, 1) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    # w_i(x, y) = edge_i . ((x - cx) / fx, (y - cy) / fy, 1): affine in pixel coordinates,
    # scaled by sign(det) so that inside means every w_i >= 0.
    sign = det.sign()[..., None]
    a = edges[..., 0] / fx * sign
    b = edges[..., 1] / fy * sign
    c = (edges[..., 2] - edges[..., 0] * cx / fx - edges[..., 1] * cy / fy) * sign
    coeffs = torch.stack([a, b, c], dim=-1)  # [B,F,3 edges,3]
    abs_det = det.abs()

    z = corners[..., 2]
    z_min, z_max = z.min(-1).values, z.max(-1).values
    keep = (z_max > near) & (z_min < far) & (det != 0)
    if cull_backfaces:
        keep &= det < 0
    # Screen box of faces fully in front of the near plane; a face crossing it may reach
    # anywhere on screen, so it gets the whole image.
    safe_z = z.clamp_min(near)
    xs = corners[..., 0] / safe_z * fx + cx
    ys = corners[..., 1] / safe_z * fy + cy
    crossing = z_min <= near
    x0 = torch.where(crossing, 0.0, torch.ceil(xs.min(-1).values - 0.5)).clamp(0, W - 1)
    x1 = torch.where(crossing, W - 1.0, torch.floor(xs.max(-1).values - 0.5)).clamp(-1, W - 1)
    y0 = torch.where(crossing, 0.0, torch.ceil(ys.min(-1).values - 0.5)).clamp(0, H - 1)
    y1 = torch.where(crossing, H - 1.0, torch.floor(ys.max(-1).values - 0.5)).clamp(-1, H - 1)
    on_screen = crossing | ((xs.min(-1).values < W) & (ys.min(-1).values < H))
    keep &= (x1 >= x0) & (y1 >= y0) & on_screen
    bi, fi = keep.nonzero(as_tuple=True)
    if T is None:
        # Small tiles waste fewer pixel tests on small faces, large tiles make fewer pairs for
        # large ones; pick the side with the least estimated work (measured: a pair costs ~4 tests).
        def work(t):
            pairs = ((x1[bi, fi] // t - x0[bi, fi] // t + 1) * (y1[bi, fi] // t - y0[bi, fi] // t + 1)).sum()
            return float(pairs) * (4 + t * t)

        T = min((2, 4, 8, 16), key=work)
    tx0, tx1 = (x0[bi, fi] // T).long(), (x1[bi, fi] // T).long()
    ty0, ty1 = (y0[bi, fi] // T).long(), (y1[bi, fi] // T).long()
    ntx = tx1 - tx0 + 1
    counts = ntx * (ty1 - ty0 + 1)

    # (face, tile) pairs, as a tiled Gaussian rasteriser builds (Gaussian, tile) pairs.
    pair_face = torch.repeat_interleave(torch.arange(len(bi), device=device), counts)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(pair_face), device=device) - starts[pair_face]
    pair_tx = tx0[pair_face] + local % ntx[pair_face]
    pair_ty = ty0[pair_face] + local // ntx[pair_face]

    offs = torch.arange(T, device=device)
    off_y, off_x = (o.reshape(-1) for o in torch.meshgrid(offs, offs, indexing="ij"))
    zbuf = torch.full((B * H * W,), _EMPTY, dtype=torch.int64, device=device)
    chunk = max(1, max_chunk // (T * T))
    for start in range(0, len(pair_face), chunk):
        p = pair_face[start:start + chunk]
        px = pair_tx[start:start + chunk, None] * T + off_x  # [P,T*T]
        py = pair_ty[start:start + chunk, None] * T + off_y
        pb, pf = bi[p], fi[p]
        coef = coeffs[pb, pf]  # [P,3,3]
        xc, yc = (px + 0.5).to(coef.dtype), (py + 0.5).to(coef.dtype)
        w = coef[:, :, None, 0] * xc[:, None] + coef[:, :, None, 1] * yc[:, None] + coef[:, :, None, 2]  # [P,3,T*T]
        total = w.sum(1)
        dz = abs_det[pb, pf][:, None]
        inside = (w >= 0).all(1) & (total > 0) & (dz >= near * total) & (dz <= far * total) & (px < W) & (py < H)
        pi, ki = inside.nonzero(as_tuple=True)
        depth = (dz[pi, 0] / total[pi, ki]).float()
        # positive float32 bit patterns order like the floats: depth in the high word, face id low
        key = (depth.view(torch.int32).long() << 32) | pf[pi]
        index = (pb[pi] * H + py[pi, ki]) * W + px[pi, ki]
        zbuf.scatter_reduce_(0, index, key, reduce="amin")
    face_id = torch.where(zbuf == _EMPTY, -1, zbuf & 0xFFFFFFFF)
    return face_id.view(B, H, W)


def interpolate(attr: Tensor, rast: Rasterization, faces: Tensor | None = None, dense: bool = True) -> Tensor:
    """Barycentric interpolation of vertex attributes over covered pixels.

    attr [V,C] or [B,V,C]; `faces` [F,3] indexes `attr` per face corner (default the mesh faces,
    pass uv faces for per-corner UVs). Returns [B,H,W,C] (0 where empty) or, with
    `dense=False`, [N,C] for the covered pixels in `rast.pixel` order.
    """
    faces = rast.faces if faces is None else faces.long()
    idx = faces[rast.face]  # [N,3]
    values = attr[idx] if attr.ndim == 2 else attr[rast.batch[:, None], idx]  # [N,3,C]
    out = (rast.bary_covered[..., None] * values).sum(1)
    return rast.to_dense(out) if dense else out
