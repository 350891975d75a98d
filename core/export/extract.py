"""Iso-surfaces of density fields: the shared half of Gaussians -> mesh and NeRF -> mesh.

A source gives a *grid function* `grid_fn(lo [3], hi [3], shape (Rx,Ry,Rz)) -> density
[Rx,Ry,Rz]` sampled at the nodes of a regular grid spanning the box [lo, hi] (node i sits at
lo + i (hi - lo) / (R - 1)), and optionally its rendered alpha from a few cameras. Then:

1. a coarse grid over the whole bound gives a first level and the occupied box;
2. a fine grid over that box (cubic voxels, `resolution` along its longest side) gives the
   final level and marching cubes (PyMCubes) on the zero-padded grid, so every surface closes;
3. enclosed hollows are filled (only outer surfaces are meshed), the largest connected
   component is kept (floaters go) and, if asked, the mesh is decimated by vertex clustering.

The automatic level is the one whose silhouette best matches the source's own alpha.
The silhouette of the level set {density >= L} seen from a camera is exactly the set of
pixels whose maximum density along the ray (a maximum-intensity projection of the grid)
is >= L, so one MIP per view turns the choice into a 1-D search: the L with the highest
IoU against {alpha >= 0.5}. Without renders (a bare density function), the level is half
the density plateau (the 99th percentile of the occupied voxels): a solid's indicator
blurred by any symmetric kernel crosses half its plateau exactly on a flat boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.cameras import Cameras
from core.errors import UserError

GridFn = Callable[[Tensor, Tensor, tuple[int, int, int]], Tensor]


@dataclass
class IsoSurfaceConfig:
    """How a density field becomes a mesh."""

    resolution: int = 128  # grid nodes along the longest side of the occupied box
    coarse_resolution: int = 48  # grid nodes per axis over the whole bound, to find the box
    level: float | None = None  # None: automatic (silhouette match, else half the plateau)
    keep_largest: bool = True  # drop every connected component but the largest
    fill_cavities: bool = True  # mesh only outer surfaces: hollows nothing can see are filled
    target_faces: int | None = None  # decimate by vertex clustering to at most this many faces
    views: int = 8  # cameras for the silhouette level
    view_size: int = 128  # their image side (Gaussians blur silhouettes by ~0.5 px: not too small)

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.coarse_resolution < 8:
            raise ValueError(f"grid resolutions must be >= 8, got {self.resolution}, {self.coarse_resolution}")
        if self.target_faces is not None and self.target_faces < 4:
            raise ValueError(f"target_faces must be >= 4, got {self.target_faces}")


def sample_grid(density_fn: Callable[[Tensor], Tensor], chunk: int = 1 << 16) -> GridFn:
    """A grid function from a point function density_fn(points [N,3]) -> [N] >= 0."""

    @torch.no_grad()
    def grid_fn(lo: Tensor, hi: Tensor, shape: tuple[int, int, int]) -> Tensor:
        points = grid_points(lo, hi, shape).reshape(-1, 3)
        values = [density_fn(points[s:s + chunk]).reshape(-1).float() for s in range(0, len(points), chunk)]
        return torch.cat(values).reshape(shape)

    return grid_fn


def grid_points(lo: Tensor, hi: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """[Rx,Ry,Rz,3] node positions of the grid spanning [lo, hi]."""
    axes = [torch.linspace(float(lo[i]), float(hi[i]), shape[i]) for i in range(3)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def cubic_shape(lo: Tensor, hi: Tensor, resolution: int) -> tuple[int, int, int]:
    """Node counts per axis giving (nearly) cubic voxels, `resolution` nodes on the longest side."""
    extent = (hi - lo).clamp_min(1e-9)
    voxel = float(extent.max()) / (resolution - 1)
    return tuple(max(2, int(round(float(e) / voxel)) + 1) for e in extent)


def occupied_box(grid: Tensor, lo: Tensor, hi: Tensor, threshold: float, margin: int = 2) -> tuple[Tensor, Tensor]:
    """The box (lo, hi) [3] around nodes with density >= threshold, grown by `margin` voxels, inside [lo, hi]."""
    occupied = (grid >= threshold).nonzero()
    if len(occupied) == 0:
        return lo.clone(), hi.clone()
    shape = torch.tensor(grid.shape)
    voxel = (hi - lo) / (shape - 1)
    first = (occupied.min(0).values - margin).clamp_min(0)
    last = torch.minimum(occupied.max(0).values + margin, shape - 1)
    return lo + first * voxel, lo + last * voxel


def plateau_level(grid: Tensor) -> float:
    """Half the density plateau: 0.5 x the 99th percentile of the grid's positive values."""
    positive = grid[grid > 0]
    if positive.numel() == 0:
        raise UserError("the density field is zero everywhere in its bound: nothing to extract")
    sample = positive[torch.randperm(positive.numel(), generator=torch.Generator().manual_seed(0))[:1 << 20]]
    return 0.5 * float(torch.quantile(sample.float(), 0.99))


def max_projection(grid: Tensor, lo: Tensor, hi: Tensor, cameras: Cameras, chunk: int = 4096) -> Tensor:
    """[B,H,W] maximum of the trilinearly interpolated grid along each camera ray (0 off the box)."""
    origins, dirs = cameras.rays()
    origins, dirs = origins.reshape(-1, 3).float(), dirs.reshape(-1, 3).float()
    voxel = float(((hi - lo) / (torch.tensor(grid.shape) - 1)).min())
    # slab test against the box
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    near = torch.minimum(t0, t1).max(-1).values.clamp_min(0)
    far = torch.maximum(t0, t1).min(-1).values
    n_steps = int(float((hi - lo).norm()) / voxel) + 2  # one-voxel steps across the diagonal
    volume = grid[None, None].float()  # [1,1,Rx,Ry,Rz]: grid_sample reads (z, y, x) as (W, H, D)
    out = torch.zeros(len(origins))
    hit = (far > near).nonzero().squeeze(-1)
    steps = torch.linspace(0, 1, n_steps)
    for start in range(0, len(hit), chunk):
        index = hit[start:start + chunk]
        t = near[index, None] + (far - near)[index, None] * steps  # [n,S]
        points = origins[index, None] + t[..., None] * dirs[index, None]
        normalised = (2 * (points - lo) / (hi - lo) - 1).flip(-1)
        values = F.grid_sample(volume, normalised[None, None], mode="bilinear", align_corners=True)
        out[index] = values[0, 0, 0].max(-1).values
    return out.view(len(cameras), cameras.height, cameras.width)


def silhouette_level(mip: Tensor, alpha: Tensor, candidates: int = 1024, tolerance: float = 5e-3) -> float:
    """The level L whose silhouette {mip >= L} best matches {alpha >= 0.5} (highest IoU).

    mip, alpha: [B,H,W]. Candidates are log-spaced below the largest MIP value. Of the
    levels within `tolerance` (relative IoU) of the best, the lowest wins: the silhouette
    cannot see holes that the back of a shell covers, so the top of a flat IoU range can be
    a riddled surface, while the bottom of it is at most a fraction of a pixel too wide.
    """
    target = alpha >= 0.5
    if not target.any():
        raise UserError("the source renders no opaque pixel (alpha >= 0.5) from the extraction views")
    top = float(mip.max())
    if top <= 0:
        raise UserError("the density field is zero everywhere in its bound: nothing to extract")
    levels = top * torch.logspace(-4, 0, candidates)[:-1]
    inside = torch.sort(mip[target]).values
    outside = torch.sort(mip[~target]).values
    true_positive = len(inside) - torch.searchsorted(inside, levels)
    false_positive = len(outside) - torch.searchsorted(outside, levels)
    iou = true_positive.float() / (len(inside) + false_positive).float()
    good = (iou >= iou.max() * (1 - tolerance)).nonzero().squeeze(-1)
    return float(levels[good[0]])


def fill_cavities(grid: Tensor, level: float) -> Tensor:
    """grid with every region below `level` that is enclosed by {grid >= level} raised above it.

    A shell of Gaussians (3DGS surfaces are thin) has an inner surface no camera sees;
    filling the enclosed hollow leaves only the outer one.
    """
    from scipy.ndimage import binary_fill_holes

    occupied = (grid >= level).numpy()
    cavity = torch.from_numpy(binary_fill_holes(occupied) & ~occupied)
    return torch.where(cavity, torch.full_like(grid, float(grid.max())), grid)


def marching_cubes(grid: Tensor, level: float, lo: Tensor, hi: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V,3] float32 (world) and faces [F,3] int64 of {grid >= level}, outward-facing.

    The grid is padded with a layer below the level on every side, so surfaces that reach
    the box's faces are closed there instead of left open.
    """
    import mcubes

    padded = F.pad(grid.float(), (1, 1, 1, 1, 1, 1), value=min(0.0, level - 1.0)).double().numpy()
    vertices, faces = mcubes.marching_cubes(padded, float(level))
    if len(faces) == 0:
        raise UserError(f"no surface at level {level:.4g}: the field never reaches it")
    voxel = ((hi - lo) / (torch.tensor(grid.shape) - 1)).double().numpy()
    vertices = lo.double().numpy() + (vertices - 1.0) * voxel  # -1: the padding layer
    return vertices.astype(np.float32), np.asarray(faces, dtype=np.int64)


def largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The connected component (by shared vertices) with the most faces; unused vertices dropped."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    face_label = label[faces[:, 0]]
    keep = face_label == np.bincount(face_label).argmax()
    return compact(vertices, faces[keep])


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no face uses and renumber the faces."""
    used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
    return vertices[used], inverse.reshape(-1, 3)


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `target_faces` faces by vertex clustering (Rossignac & Borrel 1993).

    Vertices in one cubic cell merge to their mean; collapsed and duplicate faces go. The
    cell size starts from the surface area (a clustered surface has about 2 area / cell^2
    faces) and grows until the count fits. Coarser than quadric edge collapse (nothing of
    that kind ships with our dependencies), but orientation-preserving and fast.
    """
    if len(faces) <= target_faces:
        return vertices, faces
    v64 = vertices.astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(v64[faces[:, 1]] - v64[faces[:, 0]], v64[faces[:, 2]] - v64[faces[:, 0]]),
                                axis=1).sum()
    cell = float(np.sqrt(2 * area / target_faces))
    lo = v64.min(0)
    for _ in range(20):
        keys = np.floor((v64 - lo) / cell).astype(np.int64)
        _, cluster = np.unique(keys, axis=0, return_inverse=True)
        cluster = cluster.reshape(-1)
        count = np.bincount(cluster)
        merged = np.stack([np.bincount(cluster, weights=v64[:, i]) for i in range(3)], axis=1) / count[:, None]
        new_faces = cluster[faces]
        alive = (new_faces[:, 0] != new_faces[:, 1]) & (new_faces[:, 1] != new_faces[:, 2]) & (
            new_faces[:, 2] != new_faces[:, 0])
        new_faces = new_faces[alive]
        _, first = np.unique(np.sort(new_faces, axis=1), axis=0, return_index=True)
        new_faces = new_faces[np.sort(first)]
        if len(new_faces) <= target_faces:
            return compact(merged.astype(np.float32), new_faces)
        cell *= max(1.05, float(np.sqrt(len(new_faces) / target_faces)))
    raise RuntimeError(f"vertex clustering did not reach {target_faces} faces")


@dataclass
class IsoSurface:
    """A mesh extracted from a density field: vertices [V,3] float32, faces [F,3] int64 (outward),
    the level used and the box [lo, hi] the fine grid spanned."""

    vertices: np.ndarray
    faces: np.ndarray
    level: float
    lo: Tensor
    hi: Tensor


def extraction_cameras(cfg: IsoSurfaceConfig, bound: float) -> Cameras:
    """cfg.views cameras around a bound-radius sphere: an orbit at +-30 degrees elevation, framing it."""
    from core.cameras import spherical_cameras

    n = cfg.views
    elevation = torch.tensor([30.0 if i % 2 == 0 else -30.0 for i in range(n)])
    azimuth = torch.arange(n, dtype=torch.float32) * 360.0 / n
    radius = torch.full((n,), 2.5 * bound)
    fov = torch.full((n,), 2 * np.degrees(np.arcsin(1 / 2.5)) + 4)  # the bound sphere plus a margin
    return spherical_cameras(elevation, azimuth, radius, fov, cfg.view_size, cfg.view_size)


def extract_iso_surface(
    grid_fn: GridFn,
    bound: float,
    cfg: IsoSurfaceConfig | None = None,
    cameras: Cameras | None = None,
    alpha: Tensor | None = None,
) -> IsoSurface:
    """Mesh the density of `grid_fn` inside the cube [-bound, bound]^3 (steps in the module docstring).

    cameras and alpha [B,H,W] (the source's rendered opacity from those cameras) select the
    automatic level by silhouette; without them (or with cfg.level set) the level is the
    plateau rule (or cfg.level).
    """
    cfg = cfg or IsoSurfaceConfig()

    def choose_level(grid: Tensor, lo: Tensor, hi: Tensor) -> float:
        if cfg.level is not None:
            return float(cfg.level)
        if cameras is not None and alpha is not None:
            return silhouette_level(max_projection(grid, lo, hi, cameras), alpha)
        return plateau_level(grid)

    lo, hi = torch.full((3,), -float(bound)), torch.full((3,), float(bound))
    coarse_shape = (cfg.coarse_resolution,) * 3
    coarse = grid_fn(lo, hi, coarse_shape)
    coarse_level = choose_level(coarse, lo, hi)
    # Half the coarse level keeps thin parts the coarse grid undersamples inside the box.
    box_lo, box_hi = occupied_box(coarse, lo, hi, 0.5 * coarse_level)
    for attempt in range(2):
        grid = grid_fn(box_lo, box_hi, cubic_shape(box_lo, box_hi, cfg.resolution))
        level = choose_level(grid, box_lo, box_hi)
        clipped = _touches_box(grid, level) & ((box_lo > lo) | (box_hi < hi))
        if attempt == 1 or not clipped.any():
            break
        # the fine level sits below what the box was cut at: widen the clipped sides to the bound
        box_lo = torch.where(clipped, lo, box_lo)
        box_hi = torch.where(clipped, hi, box_hi)
    if cfg.fill_cavities:
        grid = fill_cavities(grid, level)
    vertices, faces = marching_cubes(grid, level, box_lo, box_hi)
    if cfg.keep_largest:
        vertices, faces = largest_component(vertices, faces)
    if cfg.target_faces is not None:
        vertices, faces = decimate(vertices, faces, cfg.target_faces)
        if cfg.keep_largest:
            vertices, faces = largest_component(vertices, faces)
    return IsoSurface(vertices, faces, level, box_lo, box_hi)


def _touches_box(grid: Tensor, level: float) -> Tensor:
    """[3] bool: whether {grid >= level} reaches the first or last node layer along each axis."""
    over = grid >= level
    return torch.tensor([bool(over.select(i, 0).any() or over.select(i, -1).any()) for i in range(3)])
