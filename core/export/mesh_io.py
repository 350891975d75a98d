"""Textured mesh export: Wavefront .obj + .mtl + PNGs and .ply here, binary glTF 2.0 (.glb)
in core/export/gltf.py, with the shared input checks.

Inputs are plain arrays (numpy or torch), so any stage can export without the mesh
backend's classes:

- vertices [V,3] float, world frame of scorelift (+Z up, the front faces +X where the
  azimuth-0 camera sits); faces [F,3] int, counter-clockwise seen from outside.
- normals [V,3] (normalised here; computed area-weighted from the faces when None).
- uvs [V,2] in [0,1] with the OpenGL/OBJ origin: (0,0) is the bottom-left texel of the
  texture, i.e. its last row. glTF's top-left origin is applied when writing .glb.
- textures [H,W,C] uint8 or float in [0,1]. The base colour texture and vertex colours
  are display (sRGB-encoded) colours, as glTF and OBJ store them; encode linear albedo
  with `renderers.shading.srgb_encode` first. The metallic-roughness texture uses glTF's
  packing (G = roughness, B = metallic, linear); `pack_metallic_roughness` builds one.
  The normal texture is a tangent-space map encoded as n * 0.5 + 0.5.

Axes: glTF is +Y up with the asset's front facing +Z (glTF 2.0 spec, "Coordinate
System and Units"). With up_axis="y" (the default, and the only choice for .glb) a
vertex (x, y, z) is written as (y, z, x): +Z up -> +Y up and front +X -> +Z, a rotation,
so viewers show the asset upright with its front towards the default camera. .obj and
.ply use the same so all exports of an asset agree; up_axis="z" keeps the world frame.

Every file is written atomically (temporary file beside it, then os.replace). glb is
uncompressed (no Draco/meshopt), so a viewer never needs a decoder.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from core.io import atomic_path

# --- validation ---------------------------------------------------------------------------


def _array(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _check_vectors(value, name: str, count: int, widths: tuple[int, ...]) -> np.ndarray:
    arr = _array(value)
    if arr.ndim != 2 or arr.shape[0] != count or arr.shape[1] not in widths:
        want = "|".join(map(str, widths))
        raise ValueError(f"{name} must be [{count},{want}] (one per vertex), got {tuple(arr.shape)}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def _check_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    vertices = _array(vertices)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise ValueError(f"vertices must be a non-empty [V,3] array, got {tuple(vertices.shape)}")
    vertices = vertices.astype(np.float32)
    if not np.isfinite(vertices).all():
        bad = np.flatnonzero(~np.isfinite(vertices).all(axis=1))
        raise ValueError(f"vertices contain NaN or inf at {len(bad)} vertices (first: {bad[:5].tolist()})")
    faces = _array(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(f"faces must be a non-empty [F,3] integer array of triangles, got {tuple(faces.shape)}")
    if faces.dtype.kind not in "iu":
        raise ValueError(f"faces must be integers, got dtype {faces.dtype}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(
            f"faces index vertices in [{faces.min()}, {faces.max()}] but there are {len(vertices)} vertices"
        )
    return vertices, faces.astype(np.uint32)


def _unit_normals(normals, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    if normals is None:
        normals = vertex_normals(vertices, faces)
    normals = _check_vectors(normals, "normals", len(vertices), (3,)).astype(np.float32)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    if (length < 1e-12).any():
        raise ValueError(f"normals has {int((length < 1e-12).sum())} zero-length vectors")
    return normals / length


def _to_uint8(image, name: str, channels: tuple[int, ...]) -> np.ndarray:
    """[H,W,C] uint8 or float in [0,1] -> uint8 [H,W,C]."""
    arr = _array(image)
    if arr.ndim != 3 or arr.shape[-1] not in channels or arr.shape[0] == 0 or arr.shape[1] == 0:
        want = "|".join(map(str, channels))
        raise ValueError(f"{name} must be an [H,W,{want}] image, got shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind != "f":
        raise ValueError(f"{name} must be uint8 or float in [0,1], got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _colors_float(vertex_colors, count: int) -> np.ndarray:
    """Vertex colours [V,3|4] uint8 or float in [0,1] -> float32 in [0,1]."""
    arr = _check_vectors(vertex_colors, "vertex_colors", count, (3, 4))
    return arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else np.clip(arr, 0, 1).astype(np.float32)


def _srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    # IEC 61966-2-1 decode, as renderers.shading.srgb_decode, kept in numpy so export needs no torch.
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _to_up_axis(points: np.ndarray, up_axis: str) -> np.ndarray:
    if up_axis == "y":
        return np.ascontiguousarray(points[:, [1, 2, 0]])  # +Z up, +X front -> +Y up, +Z front
    if up_axis == "z":
        return points
    raise ValueError(f"up_axis must be 'y' or 'z', got {up_axis!r}")


def vertex_normals(vertices, faces) -> np.ndarray:
    """[V,3] unit vertex normals, the area-weighted mean of adjacent face normals (+Z where none)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    face_normals = np.cross(v1 - v0, v2 - v0)  # length = twice the area: weights by area
    normals = np.zeros_like(vertices)
    for i in range(3):
        np.add.at(normals, faces[:, i], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-20, normals / np.maximum(length, 1e-20), np.array([0.0, 0.0, 1.0]))
    return normals.astype(np.float32)


def vertex_tangents(vertices, faces, normals, uvs) -> np.ndarray:
    """[V,4] tangents for normal mapping: xyz along +u, w = +-1 so that cross(n, t) * w runs along +v.

    Per-triangle uv gradients accumulated per vertex and Gram-Schmidt-orthogonalised to the
    normal (Lengyel 2001, "Computing Tangent Space Basis Vectors for an Arbitrary Mesh");
    uvs in the OpenGL convention of this module, so +v is "up" in the normal map as glTF
    defines it. Vertices without a usable uv gradient get any tangent perpendicular to n.
    """
    p = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    n = np.asarray(normals, dtype=np.float64)
    uv = np.asarray(uvs, dtype=np.float64)
    e1, e2 = p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]]
    d1, d2 = uv[f[:, 1]] - uv[f[:, 0]], uv[f[:, 2]] - uv[f[:, 0]]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    inv = np.where(np.abs(det) > 1e-20, 1.0 / np.where(det == 0, 1.0, det), 0.0)[:, None]
    sdir = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * inv  # dP/du
    tdir = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * inv  # dP/dv
    tan, bitan = np.zeros_like(p), np.zeros_like(p)
    for i in range(3):
        np.add.at(tan, f[:, i], sdir)
        np.add.at(bitan, f[:, i], tdir)
    tan -= n * (n * tan).sum(1, keepdims=True)
    length = np.linalg.norm(tan, axis=1, keepdims=True)
    fallback = np.cross(n, np.where(np.abs(n[:, 2:3]) < 0.9, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]))
    fallback /= np.linalg.norm(fallback, axis=1, keepdims=True)
    tan = np.where(length > 1e-12, tan / np.maximum(length, 1e-12), fallback)
    w = np.where((np.cross(n, tan) * bitan).sum(1) < 0, -1.0, 1.0)
    return np.concatenate([tan, w[:, None]], axis=1).astype(np.float32)


def pack_metallic_roughness(metallic, roughness) -> np.ndarray:
    """metallic, roughness [H,W] float in [0,1] -> [H,W,3] uint8 in glTF packing (G roughness, B metallic)."""
    metallic, roughness = _array(metallic), _array(roughness)
    if metallic.shape != roughness.shape or metallic.ndim != 2:
        raise ValueError(f"metallic and roughness must be [H,W] of one size, got {metallic.shape}, {roughness.shape}")
    packed = np.stack([np.zeros_like(metallic), roughness, metallic], axis=-1).astype(np.float32)
    return _to_uint8(packed, "metallic_roughness", (3,))


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _drop_opaque_alpha(image: np.ndarray) -> np.ndarray:
    return image[..., :3] if image.shape[-1] == 4 and (image[..., 3] == 255).all() else image


# --- glb -----------------------------------------------------------------------------------


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(_png_bytes(image))


def export_obj(
    path: str | Path,
    vertices,
    faces,
    normals=None,
    uvs=None,
    base_color_texture=None,
    vertex_colors=None,
    metallic_roughness_texture=None,
    normal_texture=None,
    metallic: float | None = None,
    roughness: float | None = None,
    up_axis: str = "y",
) -> Path:
    """Write `path` (.obj), a .mtl beside it and the textures as PNGs named after it.

    PBR values use the MTL PBR extension (Pm, Pr, map_Pm, map_Pr, norm) that Blender and
    three.js read; vertex colours go into the widespread `v x y z r g b` extension.
    Returns the .obj path; it is written last, so a complete .obj has its files.
    """
    path = Path(path)
    vertices, faces = _check_mesh(vertices, faces)
    normals = _unit_normals(normals, vertices, faces)
    if any(t is not None for t in (base_color_texture, metallic_roughness_texture, normal_texture)) and uvs is None:
        raise ValueError("textures need uvs [V,2] to be mapped onto the mesh")
    stem = path.stem
    mtl = [f"newmtl {stem}_material", "Ka 0 0 0", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 2"]
    textures: dict[str, np.ndarray] = {}
    if base_color_texture is not None:
        image = _to_uint8(base_color_texture, "base_color_texture", (3, 4))
        textures[f"{stem}_basecolor.png"] = _drop_opaque_alpha(image)
        mtl.append(f"map_Kd {stem}_basecolor.png")
    has_mr = metallic_roughness_texture is not None
    mtl.append(f"Pm {float(metallic if metallic is not None else (1.0 if has_mr else 0.0)):.6g}")
    mtl.append(f"Pr {float(roughness if roughness is not None else 1.0):.6g}")
    if has_mr:
        packed = _to_uint8(metallic_roughness_texture, "metallic_roughness_texture", (3,))
        textures[f"{stem}_roughness.png"] = np.ascontiguousarray(packed[..., 1])
        textures[f"{stem}_metallic.png"] = np.ascontiguousarray(packed[..., 2])
        mtl += [f"map_Pr {stem}_roughness.png", f"map_Pm {stem}_metallic.png"]
    if normal_texture is not None:
        textures[f"{stem}_normal.png"] = _to_uint8(normal_texture, "normal_texture", (3,))
        mtl.append(f"norm {stem}_normal.png")
    positions, normals = _to_up_axis(vertices, up_axis), _to_up_axis(normals, up_axis)
    text = io.StringIO()
    text.write(f"# scorelift mesh: {len(vertices)} vertices, {len(faces)} faces\nmtllib {stem}.mtl\n")
    if vertex_colors is not None:
        colors = _colors_float(vertex_colors, len(vertices))[:, :3]
        np.savetxt(text, np.hstack([positions, colors]), fmt="v %.7g %.7g %.7g %.4g %.4g %.4g")
    else:
        np.savetxt(text, positions, fmt="v %.7g %.7g %.7g")
    np.savetxt(text, normals, fmt="vn %.6g %.6g %.6g")
    f = faces.astype(np.int64) + 1  # OBJ indices start at 1
    if uvs is not None:
        np.savetxt(text, _check_vectors(uvs, "uvs", len(vertices), (2,)), fmt="vt %.7g %.7g")
        face_rows, face_fmt = np.repeat(f, 3, axis=1), "f %d/%d/%d %d/%d/%d %d/%d/%d"
    else:
        face_rows, face_fmt = np.repeat(f, 2, axis=1), "f %d//%d %d//%d %d//%d"
    text.write(f"usemtl {stem}_material\n")
    np.savetxt(text, face_rows, fmt=face_fmt)
    # Everything is checked; write the textures and material first, the .obj last.
    for filename, image in textures.items():
        _write_png(path.with_name(filename), image)
    with atomic_path(path.with_suffix(".mtl")) as tmp:
        tmp.write_text("\n".join(mtl) + "\n")
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue())
    return path


def export_ply(path: str | Path, vertices, faces, normals=None, vertex_colors=None, up_axis: str = "y") -> Path:
    """Write a binary little-endian .ply mesh with normals and, if given, uint8 RGB(A) vertex colours."""
    vertices, faces = _check_mesh(vertices, faces)
    normals = _unit_normals(normals, vertices, faces)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    colors = None
    if vertex_colors is not None:
        colors = (_colors_float(vertex_colors, len(vertices)) * 255.0 + 0.5).astype(np.uint8)
        fields += [(c, "u1") for c in ("red", "green", "blue", "alpha")[: colors.shape[1]]]
    vertex = np.empty(len(vertices), dtype=fields)
    for i, axis in enumerate("xyz"):
        vertex[axis] = _to_up_axis(vertices, up_axis)[:, i]
        vertex[f"n{axis}"] = _to_up_axis(normals, up_axis)[:, i]
    if colors is not None:
        for i in range(colors.shape[1]):
            vertex[("red", "green", "blue", "alpha")[i]] = colors[:, i]
    face = np.empty(len(faces), dtype=[("count", "u1"), ("indices", "<i4", (3,))])
    face["count"] = 3
    face["indices"] = faces.astype(np.int32)
    header = ["ply", "format binary_little_endian 1.0", "comment scorelift mesh", f"element vertex {len(vertex)}"]
    header += [f"property {'float' if dtype == '<f4' else 'uchar'} {name}" for name, dtype in fields]
    header += [f"element face {len(face)}", "property list uchar int vertex_indices", "end_header"]
    with atomic_path(path) as tmp:
        tmp.write_bytes(("\n".join(header) + "\n").encode("ascii") + vertex.tobytes() + face.tobytes())
    return Path(path)
