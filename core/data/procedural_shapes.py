"""Canonical meshes of the procedural world: cube, sphere, cylinder, cone, torus, pyramid, capsule.

Every shape is built upright in object space (world +Z up), faces and edges aligned with
the world axes and never yawed: the prior learns what "front" means from the camera's
azimuth only if a cube always faces the same way. Each mesh is centred on its bounding
box and scaled to a given size, never reaching past radius 0.8 (inside the unit sphere).

A mesh is a union of parametric patches (grids of quads split into triangles). Patches
do not share vertices, so the area-weighted vertex normals the renderer computes stay
flat across a cube's faces and the creases stay sharp; within a curved patch the normals
are smooth. Faces wind counter-clockwise seen from outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SHAPES = ["cube", "sphere", "cylinder", "cone", "torus", "pyramid", "capsule"]


@dataclass
class ShapeMesh:
    """Object-space geometry of one procedural object.

    vertices [V,3] float32 (Z up, inside the ball of radius `radius` <= 0.8), faces [F,3] int64
    (counter-clockwise from outside), radius: the largest vertex norm. The topology
    (faces, V) depends only on the shape name and `detail`, so objects of one shape
    batch into one rasteriser call.
    """

    vertices: np.ndarray
    faces: np.ndarray
    radius: float


def _grid(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], nu: int, nv: int, wrap_u: bool = False):
    """One patch: vertices fn(u, v) over a (nv+1) x (nu+1) grid in [0,1]^2 and its triangles.

    With `wrap_u` the column u = 1 is the column u = 0 (a closed ring), so the seam is welded
    and its normals are smooth. Returns vertices [N,3] and faces [2*nu*nv,3] with outward
    orientation decided by `_orient_outward`.
    """
    cols = nu if wrap_u else nu + 1
    u = np.arange(cols) / nu
    v = np.linspace(0.0, 1.0, nv + 1)
    U, Vv = np.meshgrid(u, v)  # [nv+1, cols]
    verts = fn(U, Vv).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(nv), np.arange(nu), indexing="ij")
    i, j = i.ravel(), j.ravel()
    j1 = (j + 1) % cols
    a, b, c, d = i * cols + j, i * cols + j1, (i + 1) * cols + j1, (i + 1) * cols + j
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return verts.astype(np.float64), faces


def _orient_outward(verts: np.ndarray, faces: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Faces flipped if needed so the patch's normals point away from the point `inside` [3].

    Sign of the flux sum (v1-v0)x(v2-v0) . (centroid - inside); exact for convex shapes
    containing `inside` and for closed patches (where it is six times the signed volume).
    """
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    flux = np.einsum("fi,fi->", np.cross(v1 - v0, v2 - v0), (v0 + v1 + v2) / 3 - inside)
    return faces if flux >= 0 else faces[:, ::-1].copy()


def _merge(patches, inside=(0.0, 0.0, 0.0)):
    """Concatenate (verts, faces) patches, each oriented outward from `inside`."""
    inside = np.asarray(inside, dtype=np.float64)
    verts, faces, offset = [], [], 0
    for v, f in patches:
        faces.append(_orient_outward(v, f, inside) + offset)
        verts.append(v)
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def _disc(radius: float, z: float, n_angle: int, n_radial: int):
    """A horizontal disc at height z (polar grid; the centre row is degenerate, area 0)."""
    return _grid(
        lambda u, v: np.stack([radius * v * np.cos(2 * np.pi * u), radius * v * np.sin(2 * np.pi * u),
                               np.full_like(u, z)], -1),
        n_angle, n_radial, wrap_u=True,
    )


def _quad(corner: np.ndarray, edge_u: np.ndarray, edge_v: np.ndarray, n: int):
    """A flat n x n grid over the parallelogram corner + u*edge_u + v*edge_v."""
    return _grid(lambda u, v: corner + u[..., None] * edge_u + v[..., None] * edge_v, n, n)


def box(sx: float, sy: float, sz: float, n: int = 4):
    """Axis-aligned box with half-extents sx, sy, sz: six flat n x n patches."""
    h = np.array([sx, sy, sz])
    patches = []
    for axis in range(3):
        a, b = [k for k in range(3) if k != axis]
        for sign in (-1.0, 1.0):
            corner = np.zeros(3)
            corner[axis] = sign * h[axis]
            corner[a], corner[b] = -h[a], -h[b]
            eu, ev = np.zeros(3), np.zeros(3)
            eu[a], ev[b] = 2 * h[a], 2 * h[b]
            patches.append(_quad(corner, eu, ev, n))
    return _merge(patches)


def ellipsoid(rx: float, ry: float, rz: float, n: int = 32):
    """Latitude-longitude sphere scaled per axis; n segments around, n/2 from pole to pole."""
    def fn(u, v):
        theta, phi = 2 * np.pi * u, np.pi * v
        return np.stack([rx * np.sin(phi) * np.cos(theta), ry * np.sin(phi) * np.sin(theta), rz * np.cos(phi)], -1)

    return _merge([_grid(fn, n, max(n // 2, 2), wrap_u=True)])


def cylinder(r: float, half_h: float, n: int = 32):
    """Upright cylinder: smooth side (n around, 4 rows for stripes) and two flat caps."""
    side = _grid(lambda u, v: np.stack([r * np.cos(2 * np.pi * u), r * np.sin(2 * np.pi * u),
                                        -half_h + 2 * half_h * v], -1), n, 8, wrap_u=True)
    return _merge([side, _disc(r, half_h, n, 3), _disc(r, -half_h, n, 3)])


def cone(r: float, half_h: float, n: int = 32):
    """Upright cone, apex on +Z: smooth side (apex row degenerate) and a flat base."""
    side = _grid(lambda u, v: np.stack([r * (1 - v) * np.cos(2 * np.pi * u), r * (1 - v) * np.sin(2 * np.pi * u),
                                        -half_h + 2 * half_h * v], -1), n, 8, wrap_u=True)
    return _merge([side, _disc(r, -half_h, n, 3)])


def torus(major: float, minor: float, n: int = 32):
    """Flat torus (axis +Z, like a ring lying on a table): n around the ring, n/2 around the tube."""
    def fn(u, v):
        theta, phi = 2 * np.pi * u, 2 * np.pi * v
        rho = major + minor * np.cos(phi)
        return np.stack([rho * np.cos(theta), rho * np.sin(theta), minor * np.sin(phi)], -1)

    verts, faces = _grid(fn, n, max(n // 2, 3), wrap_u=True)
    # close the tube: the last row (phi = 2pi) is the first row; weld it
    cols = n
    rows = max(n // 2, 3)
    faces = np.where(faces >= rows * cols, faces - rows * cols, faces)
    verts = verts[: rows * cols]
    # one closed patch: the flux test is its signed volume, origin need not be inside
    return verts, _orient_outward(verts, faces, np.zeros(3))


def pyramid(half_base_x: float, half_base_y: float, half_h: float, n: int = 4):
    """Square pyramid, base edges along X and Y, apex on +Z: four flat triangular sides and a base."""
    apex = np.array([0.0, 0.0, half_h])
    c = [np.array([sx * half_base_x, sy * half_base_y, -half_h]) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    patches = []
    for k in range(4):
        a, b = c[k], c[(k + 1) % 4]
        patches.append(_grid(lambda u, v, a=a, b=b: ((1 - v)[..., None] * (a + u[..., None] * (b - a))
                                                     + v[..., None] * apex), n, n))
    patches.append(_quad(c[0], c[1] - c[0], c[3] - c[0], n))
    return _merge(patches, inside=(0.0, 0.0, -0.5 * half_h))


def capsule(r: float, half_len: float, n: int = 32):
    """Upright capsule: a cylinder of half-length `half_len` with hemispherical ends (one smooth patch)."""
    rows_cap, rows_mid = max(n // 4, 2), 4
    # meridian parameter: top hemisphere, straight middle, bottom hemisphere
    phis = np.concatenate([np.linspace(0, np.pi / 2, rows_cap + 1), np.full(rows_mid - 1, np.pi / 2),
                           np.linspace(np.pi / 2, np.pi, rows_cap + 1)])
    zoff = np.concatenate([np.full(rows_cap + 1, half_len), np.linspace(half_len, -half_len, rows_mid + 1)[1:-1],
                           np.full(rows_cap + 1, -half_len)])
    nv = len(phis) - 1

    def fn(u, v):
        k = np.rint(v * nv).astype(int)
        theta, phi = 2 * np.pi * u, phis[k]
        return np.stack([r * np.sin(phi) * np.cos(theta), r * np.sin(phi) * np.sin(theta), r * np.cos(phi) + zoff[k]],
                        -1)

    return _merge([_grid(fn, n, nv, wrap_u=True)])


def build_shape(shape: str, rng: np.random.Generator, size: float, detail: int = 24,
                max_radius: float = 0.8) -> ShapeMesh:
    """One canonical object: `shape` from SHAPES with proportions jittered by `rng`.

    size: half of the largest bounding-box side (how big the object looks), unless that
    would put a vertex beyond `max_radius` from the origin (a cube's corners), in which case
    the object is shrunk to touch that sphere. detail: segments around curved shapes (24
    reads as round at 64 px); flat faces get a few rows so per-vertex data stays sampled.
    """
    j = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    if shape == "cube":
        verts, faces = box(j(0.92, 1.08), j(0.92, 1.08), j(0.92, 1.08), n=max(detail // 8, 2))
    elif shape == "sphere":
        verts, faces = ellipsoid(1.0, 1.0, 1.0, n=detail)
    elif shape == "cylinder":
        verts, faces = cylinder(1.0, j(0.8, 1.4), n=detail)
    elif shape == "cone":
        verts, faces = cone(1.0, j(0.8, 1.3), n=detail)
    elif shape == "torus":
        verts, faces = torus(1.0, j(0.3, 0.45), n=detail)
    elif shape == "pyramid":
        verts, faces = pyramid(1.0, j(0.9, 1.1), j(0.75, 1.1), n=max(detail // 8, 2))
    elif shape == "capsule":
        verts, faces = capsule(1.0, j(0.7, 1.2), n=detail)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    verts = verts - 0.5 * (verts.min(0) + verts.max(0))  # centre the bounding box
    scale = min(size / np.abs(verts).max(), max_radius / np.linalg.norm(verts, axis=1).max())
    verts = verts * scale
    return ShapeMesh(verts.astype(np.float32), faces.astype(np.int64), float(np.linalg.norm(verts, axis=1).max()))
