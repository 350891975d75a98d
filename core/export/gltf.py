"""Binary glTF 2.0 (.glb) export with a PBR metallic-roughness material and embedded PNG
textures, uncompressed (no Draco/meshopt), so a viewer never needs a decoder. Inputs and
axes as in core/export/mesh_io.py (the .glb is always +Y up with the front towards +Z)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from core.export.mesh_io import _check_vectors, _check_mesh, _unit_normals, _to_uint8, _colors_float, _srgb_to_linear, _to_up_axis, vertex_tangents, _png_bytes, _drop_opaque_alpha
from core.io import atomic_path

# glTF 2.0 enums (spec section 5).
_FLOAT, _UNSIGNED_SHORT, _UNSIGNED_INT = 5126, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _REPEAT = 9729, 9987, 10497
_TRIANGLES = 4


class _GlbBuffer:
    """The binary chunk of a glb and the bufferViews/accessors that point into it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.length = 0
        self.buffer_views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        view = {"buffer": 0, "byteOffset": self.length, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        padded = data + b"\x00" * (-len(data) % 4)  # every view starts 4-byte aligned
        self.chunks.append(padded)
        self.length += len(padded)
        self.buffer_views.append(view)
        return len(self.buffer_views) - 1

    def accessor(self, array: np.ndarray, component_type: int, kind: str, target: int, bounds: bool = False) -> int:
        accessor = {
            "bufferView": self.view(array.tobytes(), target),
            "componentType": component_type,
            "count": int(array.shape[0]) if kind != "SCALAR" else int(array.size),
            "type": kind,
        }
        if bounds:  # required for POSITION (spec 3.7.2.1)
            accessor["min"] = array.min(axis=0).tolist()
            accessor["max"] = array.max(axis=0).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def data(self) -> bytes:
        return b"".join(self.chunks)


def export_glb(
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
    base_color_factor=(1.0, 1.0, 1.0, 1.0),
    double_sided: bool = False,
    name: str = "scorelift",
) -> Path:
    """Write a binary glTF 2.0 with one PBR metallic-roughness material, textures embedded as PNG.

    Shapes and conventions in the module docstring. metallic/roughness are glTF's factors:
    alone they are the material's values (defaults 0 and 1, a matte dielectric); with a
    metallic_roughness_texture they multiply it (defaults 1, the texture as it is).
    Returns the path.
    """
    vertices, faces = _check_mesh(vertices, faces)
    normals = _unit_normals(normals, vertices, faces)
    textures_given = [t is not None for t in (base_color_texture, metallic_roughness_texture, normal_texture)]
    if any(textures_given) and uvs is None:
        raise ValueError("textures need uvs [V,2] to be mapped onto the mesh")
    buffer = _GlbBuffer()
    attributes = {
        "POSITION": buffer.accessor(_to_up_axis(vertices, "y"), _FLOAT, "VEC3", _ARRAY_BUFFER, bounds=True),
        "NORMAL": buffer.accessor(_to_up_axis(normals, "y"), _FLOAT, "VEC3", _ARRAY_BUFFER),
    }
    if uvs is not None:
        uvs = _check_vectors(uvs, "uvs", len(vertices), (2,)).astype(np.float32)
        flipped = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], axis=1)  # glTF's uv origin is the top-left
        attributes["TEXCOORD_0"] = buffer.accessor(flipped, _FLOAT, "VEC2", _ARRAY_BUFFER)
    if normal_texture is not None:  # tangent-space normal maps need TANGENT (spec 3.7.2.1)
        tangents = vertex_tangents(vertices, faces, normals, uvs)
        tangents[:, :3] = _to_up_axis(tangents[:, :3], "y")
        attributes["TANGENT"] = buffer.accessor(tangents, _FLOAT, "VEC4", _ARRAY_BUFFER)
    if vertex_colors is not None:
        # COLOR_0 is linear (spec 3.7.2.1) while our colours are display sRGB.
        colors = _colors_float(vertex_colors, len(vertices))
        colors[:, :3] = _srgb_to_linear(colors[:, :3])
        kind = "VEC3" if colors.shape[1] == 3 else "VEC4"
        attributes["COLOR_0"] = buffer.accessor(colors, _FLOAT, kind, _ARRAY_BUFFER)
    index_type = _UNSIGNED_SHORT if len(vertices) < 65535 else _UNSIGNED_INT
    indices = faces.astype(np.uint16 if index_type == _UNSIGNED_SHORT else np.uint32).reshape(-1)
    primitive = {
        "attributes": attributes,
        "indices": buffer.accessor(indices, index_type, "SCALAR", _ELEMENT_ARRAY_BUFFER),
        "material": 0,
        "mode": _TRIANGLES,
    }

    images, textures = [], []

    def add_texture(image: np.ndarray) -> dict:
        images.append({"bufferView": buffer.view(_png_bytes(image)), "mimeType": "image/png"})
        textures.append({"sampler": 0, "source": len(images) - 1})
        return {"index": len(textures) - 1}

    factor = [float(c) for c in base_color_factor]
    if len(factor) != 4:
        raise ValueError(f"base_color_factor must have 4 values (RGBA), got {len(factor)}")
    pbr: dict = {"baseColorFactor": factor}
    alpha_mode = "OPAQUE"
    if base_color_texture is not None:
        image = _drop_opaque_alpha(_to_uint8(base_color_texture, "base_color_texture", (3, 4)))
        alpha_mode = "BLEND" if image.shape[-1] == 4 else alpha_mode
        pbr["baseColorTexture"] = add_texture(image)
    has_mr = metallic_roughness_texture is not None
    pbr["metallicFactor"] = float(np.clip(metallic if metallic is not None else (1.0 if has_mr else 0.0), 0, 1))
    pbr["roughnessFactor"] = float(np.clip(roughness if roughness is not None else 1.0, 0, 1))
    if has_mr:
        image = _to_uint8(metallic_roughness_texture, "metallic_roughness_texture", (3,))
        pbr["metallicRoughnessTexture"] = add_texture(image)
    material: dict = {"name": f"{name}_material", "pbrMetallicRoughness": pbr, "doubleSided": bool(double_sided)}
    if alpha_mode != "OPAQUE":
        material["alphaMode"] = alpha_mode
    if normal_texture is not None:
        material["normalTexture"] = add_texture(_to_uint8(normal_texture, "normal_texture", (3,)))

    gltf: dict = {
        "asset": {"version": "2.0", "generator": "scorelift"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"name": name, "primitives": [primitive]}],
        "materials": [material],
        "accessors": buffer.accessors,
        "bufferViews": buffer.buffer_views,
        "buffers": [{"byteLength": buffer.length}],
    }
    if textures:
        gltf.update(
            images=images,
            textures=textures,
            samplers=[{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR, "wrapS": _REPEAT, "wrapT": _REPEAT}],
        )
    json_chunk = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    json_chunk += b" " * (-len(json_chunk) % 4)  # JSON chunk pads with spaces (spec 4.4.3)
    bin_chunk = buffer.data()
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    blob = b"".join([
        struct.pack("<4sII", b"glTF", 2, total),
        struct.pack("<I4s", len(json_chunk), b"JSON"), json_chunk,
        struct.pack("<I4s", len(bin_chunk), b"BIN\x00"), bin_chunk,
    ])
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return Path(path)


# --- obj / ply -------------------------------------------------------------------------------
