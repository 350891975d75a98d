"""UV unwrapping, texture baking from multi-view renders, and the textured glb it exports."""

import gltf_validator
import numpy as np
import pytest
import torch
import trimesh

from core.export.assets import load_mesh, write_mesh
from core.export.bake import BakeConfig, bake, bake_field, dilate, texel_surface, unwrap
from renderers.mesh import MeshScene, MeshSceneConfig, TriangleMesh, sample_texture

RED, BLUE = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
SMALL = BakeConfig(texture_size=96, view_size=64, azimuths=4, elevations=(-35.0, 35.0))


def icosphere(subdivisions: int, radius: float = 0.5) -> TriangleMesh:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return TriangleMesh(torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces))


def two_tone_source() -> MeshScene:
    """A textured PBR sphere: red, smooth and metallic for z > 0; blue, rough and dielectric below."""
    mesh = unwrap(icosphere(3))
    size = 64
    texel, position, _ = texel_surface(mesh, size)
    top = position[:, 2:] > 0
    maps = {"base_color": torch.where(top, RED, BLUE), "roughness": torch.where(top, 0.2, 0.8),
            "metallic": torch.where(top, 1.0, 0.0)}
    valid = torch.zeros(size * size, dtype=torch.bool)
    valid[texel] = True
    textures = {}
    for name, values in maps.items():
        texture = torch.zeros(size * size, values.shape[-1])
        texture[texel] = values
        textures[name] = dilate(texture.view(size, size, -1), valid.view(size, size))
    return MeshScene(TriangleMesh(mesh.vertices, mesh.faces, uv=mesh.uv, **textures), MeshSceneConfig(learn=()))


@pytest.fixture(scope="module")
def baked() -> TriangleMesh:
    # a different tessellation than the source's, so nothing is copied texel for texel
    return bake(icosphere(2, radius=0.5), two_tone_source(), SMALL)


def test_unwrap_gives_uvs_in_the_unit_square_and_keeps_positions():
    mesh = icosphere(2)
    mesh.vertex_colors = (mesh.vertices + 0.5).clamp(0, 1)
    unwrapped = unwrap(mesh)
    assert unwrapped.uv.shape == (unwrapped.num_vertices, 2) and unwrapped.num_faces == mesh.num_faces
    assert unwrapped.uv.min() >= 0 and unwrapped.uv.max() <= 1
    # every new vertex is an old one (seams duplicate), and colours travel with positions
    distance = torch.cdist(unwrapped.vertices, mesh.vertices, compute_mode="donot_use_mm_for_euclid_dist")
    assert distance.min(1).values.max() < 1e-6
    assert torch.allclose(unwrapped.vertex_colors, (unwrapped.vertices + 0.5).clamp(0, 1))
    assert np.isclose(area(unwrapped), area(mesh))  # same triangles, only split on seams


def area(mesh: TriangleMesh) -> float:
    corners = mesh.vertices[mesh.faces]
    return 0.5 * float(torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)
                       .norm(dim=-1).sum())


def test_texel_surface_points_lie_on_the_mesh():
    mesh = unwrap(icosphere(3))
    texel, position, normal = texel_surface(mesh, 64)
    assert len(texel) > 0.3 * 64 * 64  # xatlas packs charts densely
    radius = position.norm(dim=-1)
    assert radius.max() < 0.5 + 1e-4 and radius.min() > 0.49  # on the facets of a 0.5 icosphere
    assert ((normal * position / radius[:, None]).sum(-1) > 0.98).all()  # outward


def test_dilate_fills_every_texel_from_the_nearest_valid_one():
    texture = torch.zeros(5, 8, 1)
    valid = torch.zeros(5, 8, dtype=torch.bool)
    texture[2, 1], valid[2, 1] = 1.0, True
    texture[2, 6], valid[2, 6] = 3.0, True
    out = dilate(texture, valid)[..., 0]
    assert (out[:, :4] == 1.0).all() and (out[:, 4:] == 3.0).all()
    assert torch.equal(dilate(texture, torch.zeros_like(valid)), texture)  # nothing to spread


def test_baked_texture_puts_each_colour_and_material_on_its_half(baked):
    assert baked.base_color.shape == (96, 96, 3) and baked.roughness.shape == (96, 96, 1)
    colour = sample_texture(baked.base_color, baked.uv)
    top, bottom = baked.vertices[:, 2] > 0.2, baked.vertices[:, 2] < -0.2
    assert torch.allclose(colour[top].mean(0), RED, atol=0.05)
    assert torch.allclose(colour[bottom].mean(0), BLUE, atol=0.05)
    # vertices on UV seams sample texels of neighbouring charts: allow a few percent
    assert (colour[top, 0] > colour[top, 2]).float().mean() > 0.97
    assert (colour[bottom, 2] > colour[bottom, 0]).float().mean() > 0.97
    roughness = sample_texture(baked.roughness, baked.uv)[:, 0]
    metallic = sample_texture(baked.metallic, baked.uv)[:, 0]
    assert abs(float(roughness[top].median()) - 0.2) < 0.05 and abs(float(roughness[bottom].median()) - 0.8) < 0.05
    assert float(metallic[top].median()) > 0.95 and float(metallic[bottom].median()) < 0.05


def test_bake_field_queries_the_colour_at_each_texel():
    seen = []

    def color_fn(points, normals):
        seen.append(((points / points.norm(dim=-1, keepdim=True) * normals).sum(-1) > 0.98).all())
        return torch.where(points[:, 2:] > 0, RED, BLUE)

    baked = bake_field(icosphere(2), color_fn, texture_size=64)
    assert all(seen)  # surface points with outward normals
    colour = sample_texture(baked.base_color, baked.uv)
    assert torch.allclose(colour[baked.vertices[:, 2] > 0.2].mean(0), RED, atol=0.05)
    assert torch.allclose(colour[baked.vertices[:, 2] < -0.2].mean(0), BLUE, atol=0.05)


def test_baked_glb_reloads_with_its_texture_and_passes_the_validator(baked, tmp_path):
    path = write_mesh(baked, tmp_path / "baked.glb", "glb")
    report = gltf_validator.validate(path)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    loaded = trimesh.load(path, force="mesh")
    assert loaded.visual.kind == "texture"
    assert loaded.visual.material.baseColorTexture.size == (96, 96)
    # glTF 2.0 (3.9.2): roughness in the green channel, metallic in the blue, texel for texel.
    packed = np.asarray(loaded.visual.material.metallicRoughnessTexture.convert("RGB")).astype(float) / 255
    np.testing.assert_allclose(packed[..., 1], baked.roughness[..., 0].numpy(), atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(packed[..., 2], baked.metallic[..., 0].numpy(), atol=0.5 / 255 + 1e-6)
    # back in scorelift's frame (+Z up) with the texture: the top is still red
    mesh = load_mesh(path)
    colour = sample_texture(mesh.base_color, mesh.uv)
    assert torch.allclose(colour[mesh.vertices[:, 2] > 0.2].mean(0), RED, atol=0.05)
    assert torch.allclose(mesh.vertices.abs().max(0).values, baked.vertices.abs().max(0).values, atol=1e-5)
