"""Mesh export: reloads in trimesh with geometry and textures intact, and passes the Khronos validator."""

import json
import struct

import numpy as np
import pytest
import trimesh

import gltf_validator
from core.export.gltf import export_glb
from core.export.mesh_io import (
    export_obj,
    export_ply,
    pack_metallic_roughness,
    vertex_normals,
    vertex_tangents,
)

# Quadrant colours of the test texture as seen in the image: row 0 is the top.
TOP_LEFT, TOP_RIGHT, BOTTOM_LEFT, BOTTOM_RIGHT = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def quadrant_texture(size=32):
    tex = np.zeros((size, size, 3), dtype=np.uint8)
    h = size // 2
    tex[:h, :h], tex[:h, h:], tex[h:, :h], tex[h:, h:] = TOP_LEFT, TOP_RIGHT, BOTTOM_LEFT, BOTTOM_RIGHT
    return tex


def expected_colour(uv):
    """The quadrant a uv (OpenGL origin: v up) falls in."""
    left, top = uv[0] < 0.5, uv[1] > 0.5
    return {(True, True): TOP_LEFT, (False, True): TOP_RIGHT, (True, False): BOTTOM_LEFT,
            (False, False): BOTTOM_RIGHT}[(left, top)]


def bumpy_grid(n=9):
    """A non-planar height field (+Z up) over [-0.5,0.5]^2 with uvs following x, y."""
    s = np.linspace(-0.5, 0.5, n)
    x, y = np.meshgrid(s, s, indexing="xy")
    z = 0.2 * np.sin(3 * x) * np.cos(2 * y) + 0.1 * x
    vertices = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]).astype(np.int64)
    uvs = (vertices[:, :2] + 0.5) * 0.9 + 0.05
    return vertices, faces, uvs


def from_gltf_axes(points):
    """Undo the export's (x, y, z) -> (y, z, x)."""
    return points[:, [2, 0, 1]]


def only_mesh(loaded):
    if isinstance(loaded, trimesh.Scene):
        (mesh,) = loaded.geometry.values()
        return mesh
    return loaded


def assert_texture_at_uvs(mesh, uvs, texture_attribute="baseColorTexture"):
    """The reloaded texture holds the quadrant colour expected at each vertex uv (away from seams)."""
    image = np.asarray(getattr(mesh.visual.material, texture_attribute).convert("RGB"))
    np.testing.assert_allclose(mesh.visual.uv, uvs, atol=1e-6)
    H, W, _ = image.shape
    checked = 0
    for uv in uvs:
        if abs(uv[0] - 0.5) < 0.05 or abs(uv[1] - 0.5) < 0.05:
            continue
        row, col = int((1 - uv[1]) * H), int(uv[0] * W)  # OpenGL uv: v up, row 0 at v = 1
        assert tuple(image[row, col]) == expected_colour(uv)
        checked += 1
    assert checked > 20


def test_glb_reloads_with_geometry_and_texture(tmp_path):
    vertices, faces, uvs = bumpy_grid()
    path = export_glb(tmp_path / "asset.glb", vertices, faces, uvs=uvs, base_color_texture=quadrant_texture(),
                      metallic=0.2, roughness=0.7)
    mesh = only_mesh(trimesh.load(path, process=False))
    np.testing.assert_allclose(from_gltf_axes(mesh.vertices), vertices, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, faces)
    # +Z up became +Y up: the height field's z is the reloaded y.
    np.testing.assert_allclose(mesh.vertices[:, 1], vertices[:, 2], atol=1e-6)
    np.testing.assert_allclose(from_gltf_axes(mesh.vertex_normals), vertex_normals(vertices, faces), atol=1e-5)
    material = mesh.visual.material
    assert material.metallicFactor == pytest.approx(0.2) and material.roughnessFactor == pytest.approx(0.7)
    assert_texture_at_uvs(mesh, uvs)
    # Float textures in [0,1] are the same colours.
    path = export_glb(tmp_path / "float.glb", vertices, faces, uvs=uvs, base_color_texture=quadrant_texture() / 255.0)
    assert_texture_at_uvs(only_mesh(trimesh.load(path, process=False)), uvs)


def test_glb_passes_khronos_validator(tmp_path):
    vertices, faces, uvs = bumpy_grid()
    rng = np.random.default_rng(0)
    rgba = np.concatenate([quadrant_texture(), np.full((32, 32, 1), 200, np.uint8)], -1)
    mr = pack_metallic_roughness(rng.random((16, 16)), rng.random((16, 16)))
    normal_map = np.broadcast_to(np.array([128, 128, 255], np.uint8), (8, 8, 3))
    full = export_glb(tmp_path / "full.glb", vertices, faces, normals=vertex_normals(vertices, faces) * 3,
                      uvs=uvs, base_color_texture=rgba, vertex_colors=rng.random((len(vertices), 4)),
                      metallic_roughness_texture=mr, normal_texture=normal_map, double_sided=True)
    plain = export_glb(tmp_path / "plain.glb", vertices, faces)
    # Past 65535 vertices the indices switch to uint32.
    big_v, big_f, _ = bumpy_grid(260)
    big = export_glb(tmp_path / "big.glb", big_v, big_f)
    reports = {path.name: gltf_validator.validate(path) for path in (full, plain, big)}
    for name, report in reports.items():
        issues = report["issues"]
        assert issues["numErrors"] == 0, f"{name}: " + json.dumps(issues["messages"], indent=1)
        assert issues["numWarnings"] == 0, f"{name}: " + json.dumps(issues["messages"], indent=1)
    info = reports["full.glb"]["info"]
    assert info["totalVertexCount"] == len(vertices) and info["drawCallCount"] == 1
    assert len(info["resources"]) == 1 + 3  # the binary buffer and three embedded PNGs
    assert reports["big.glb"]["info"]["totalVertexCount"] == len(big_v) > 65535


def test_tangents_follow_the_uv_directions():
    vertices, faces, uvs = bumpy_grid()
    flat = vertices * np.array([1, 1, 0], np.float32)
    tangents = vertex_tangents(flat, faces, vertex_normals(flat, faces), uvs)
    np.testing.assert_allclose(tangents, np.broadcast_to([1, 0, 0, 1], tangents.shape), atol=1e-6)
    mirrored = vertex_tangents(flat, faces, vertex_normals(flat, faces), uvs * [1, -1])  # v runs along -y
    np.testing.assert_allclose(mirrored[:, 3], -1)
    bumpy = vertex_tangents(vertices, faces, vertex_normals(vertices, faces), uvs)
    np.testing.assert_allclose(np.linalg.norm(bumpy[:, :3], axis=1), 1, atol=1e-6)
    np.testing.assert_allclose((bumpy[:, :3] * vertex_normals(vertices, faces)).sum(1), 0, atol=1e-6)


def test_validator_reports_errors_in_a_broken_glb(tmp_path):
    vertices, faces, _ = bumpy_grid()
    blob = export_glb(tmp_path / "good.glb", vertices, faces).read_bytes()
    json_length = struct.unpack_from("<I", blob, 12)[0]
    gltf = json.loads(blob[20:20 + json_length])
    gltf["accessors"][gltf["meshes"][0]["primitives"][0]["indices"]]["count"] += 999  # reads past its view
    chunk = json.dumps(gltf).encode()
    chunk += b" " * (-len(chunk) % 4)
    rest = blob[20 + json_length:]
    broken = struct.pack("<4sII", b"glTF", 2, 20 + len(chunk) + len(rest)) + struct.pack("<I4s", len(chunk), b"JSON")
    (tmp_path / "broken.glb").write_bytes(broken + chunk + rest)
    assert gltf_validator.validate(tmp_path / "broken.glb")["issues"]["numErrors"] > 0


def test_obj_reloads_with_texture_and_materials(tmp_path):
    vertices, faces, uvs = bumpy_grid()
    mr = pack_metallic_roughness(np.full((4, 4), 0.25), np.full((4, 4), 0.75))
    path = export_obj(tmp_path / "asset.obj", vertices, faces, uvs=uvs, base_color_texture=quadrant_texture(),
                      metallic_roughness_texture=mr)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["asset.mtl", "asset.obj", "asset_basecolor.png", "asset_metallic.png", "asset_roughness.png"]
    mesh = only_mesh(trimesh.load(path, process=False))
    np.testing.assert_allclose(from_gltf_axes(mesh.vertices), vertices, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, faces)
    assert_texture_at_uvs(mesh, uvs, texture_attribute="image")  # OBJ loads as trimesh's SimpleMaterial
    mtl = (tmp_path / "asset.mtl").read_text()
    assert "map_Kd asset_basecolor.png" in mtl and "Pm 1" in mtl and "map_Pr asset_roughness.png" in mtl
    import imageio.v3 as iio

    assert (iio.imread(tmp_path / "asset_roughness.png") == round(0.75 * 255)).all()

    kept = export_obj(tmp_path / "z_up.obj", vertices, faces, up_axis="z")
    np.testing.assert_allclose(only_mesh(trimesh.load(kept, process=False)).vertices, vertices, atol=1e-6)


def test_ply_reloads_with_vertex_colours(tmp_path):
    vertices, faces, _ = bumpy_grid()
    colours = np.random.default_rng(1).integers(0, 256, (len(vertices), 3), dtype=np.uint8)
    mesh = trimesh.load(export_ply(tmp_path / "asset.ply", vertices, faces, vertex_colors=colours), process=False)
    np.testing.assert_allclose(from_gltf_axes(mesh.vertices), vertices, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], colours)


def test_bad_inputs_are_rejected_with_clear_messages(tmp_path):
    vertices, faces, uvs = bumpy_grid(3)
    path = tmp_path / "x.glb"
    with pytest.raises(ValueError, match="faces index vertices in"):
        export_glb(path, vertices, np.array([[0, 1, 9]]))
    with pytest.raises(ValueError, match="NaN"):
        export_glb(path, np.where(np.arange(9)[:, None] == 4, np.nan, vertices), faces)
    with pytest.raises(ValueError, match=r"base_color_texture must be an \[H,W,3\|4\] image"):
        export_glb(path, vertices, faces, uvs=uvs, base_color_texture=np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="need uvs"):
        export_obj(path.with_suffix(".obj"), vertices, faces, base_color_texture=quadrant_texture())
    with pytest.raises(ValueError, match=r"uvs must be \[9,2\]"):
        export_glb(path, vertices, faces, uvs=uvs[:5])
    with pytest.raises(ValueError, match="vertex_colors"):
        export_ply(path.with_suffix(".ply"), vertices, faces, vertex_colors=np.zeros((9, 5)))
    with pytest.raises(ValueError, match="up_axis"):
        export_ply(path.with_suffix(".ply"), vertices, faces, up_axis="x")
    with pytest.raises(ValueError, match="up_axis"):
        export_obj(path.with_suffix(".obj"), vertices, faces, uvs=uvs, base_color_texture=quadrant_texture(),
                   up_axis="x")
    with pytest.raises(ValueError, match=r"vertex_colors must be \[9,3\|4\]"):
        export_obj(path.with_suffix(".obj"), vertices, faces, vertex_colors=np.zeros((8, 3)))
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_export_replaces_atomically_and_accepts_torch(tmp_path):
    import torch

    vertices, faces, _ = bumpy_grid(3)
    path = tmp_path / "asset.glb"
    path.write_bytes(b"old")
    export_glb(path, torch.from_numpy(vertices), torch.from_numpy(faces))
    assert path.read_bytes()[:4] == b"glTF"
    assert [p.name for p in tmp_path.iterdir()] == ["asset.glb"]  # no temporary file left beside it
