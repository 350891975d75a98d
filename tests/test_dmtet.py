"""Tet grid, marching tetrahedra and DMTetScene."""

import numpy as np
import torch
import trimesh

from core.cameras import orbit_cameras
from core.export.assets import export_scene
from renderers.base import Scene
from renderers.mesh import DMTetScene, DMTetSceneConfig, TriangleMesh, marching_tets, render_mesh, tet_grid
from renderers.mesh.tets import NUM_TRIANGLES, TRIANGLE_TABLE


def test_tet_grid_is_conforming_and_positively_oriented():
    R = 3
    vertices, tets = tet_grid(R, scale=1.0)
    assert vertices.shape == ((R + 1) ** 3, 3) and tets.shape == (6 * R**3, 4)
    corners = vertices[tets]
    volume = torch.linalg.det(corners[:, 1:] - corners[:, :1]) / 6
    assert (volume > 0).all()
    assert torch.isclose(volume.sum(), torch.tensor(8.0))  # the tets tile the cube [-1,1]^3
    # every triangle is shared by two tets, except the 2 per cell square on the cube's boundary
    tris = tets[:, [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]].reshape(-1, 3).sort(-1).values
    _, counts = torch.unique(tris, dim=0, return_counts=True)
    assert counts.max() == 2 and (counts == 1).sum() == 6 * 2 * R**2


def test_triangle_table_is_complementary():
    # flipping inside and outside gives the same triangles with the opposite winding
    for case in range(16):
        a, b = TRIANGLE_TABLE[case], TRIANGLE_TABLE[15 - case]
        assert NUM_TRIANGLES[case] == NUM_TRIANGLES[15 - case]
        for k in range(NUM_TRIANGLES[case]):
            assert sorted(a[k].tolist()) in [sorted(t.tolist()) for t in b]


def test_sphere_extraction_is_watertight_and_on_the_sphere():
    R, radius = 16, 0.6
    vertices, tets = tet_grid(R)
    surface, faces, _ = marching_tets(vertices, tets, vertices.norm(dim=-1) - radius)
    mesh = trimesh.Trimesh(surface.numpy(), faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    assert abs(mesh.volume - 4 / 3 * np.pi * radius**3) < 0.05 * 4 / 3 * np.pi * radius**3
    spacing = 2.0 / R
    assert (surface.norm(dim=-1) - radius).abs().max() < spacing


def test_gradients_reach_sdf_and_offsets():
    scene = DMTetScene(DMTetSceneConfig(resolution=8, init_radius=0.5))
    vertices, faces, colors = scene.surface()
    vertices.norm(dim=-1).mean().backward()
    # raising the sdf moves the zero level inwards: the mean radius must fall
    assert scene.sdf.grad.sum() < 0
    assert scene.deform.grad.abs().sum() > 0
    scene.zero_grad()
    out = scene.render(orbit_cameras(2, width=24, height=24))
    (out.rgb.mean() + out.alpha.mean()).backward()
    for name in ("sdf", "deform", "colors"):
        assert getattr(scene, name).grad.abs().sum() > 0, name


def test_offsets_are_bounded():
    cfg = DMTetSceneConfig(resolution=4, deform_scale=0.25)
    scene = DMTetScene(cfg)
    with torch.no_grad():
        scene.deform.fill_(100.0)
    bound = cfg.deform_scale * 2 * cfg.scale / cfg.resolution
    assert ((scene.vertices() - scene.grid).abs() <= bound + 1e-6).all()


def test_init_from_sdf_and_extract_mesh():
    scene = DMTetScene(DMTetSceneConfig(resolution=12))
    half = torch.tensor([0.5, 0.3, 0.4])

    def box_sdf(p):
        q = p.abs() - half
        return q.clamp_min(0).norm(dim=-1) + q.max(-1).values.clamp_max(0)

    scene.init_from_sdf(box_sdf, color_fn=lambda p: torch.tensor([1.0, 0.0, 0.0]).expand(len(p), 3), chunk=1000)
    mesh = scene.extract_mesh()
    assert isinstance(mesh, TriangleMesh)
    extent = mesh.vertices.max(0).values - mesh.vertices.min(0).values
    assert torch.allclose(extent, 2 * half, atol=2 * 2.0 / 12)
    assert torch.allclose(mesh.vertex_colors, torch.tensor([1.0, 0.0, 0.0]))


def test_dmtet_fits_a_larger_silhouette():
    cameras = orbit_cameras(2, elevation_deg=20.0, width=32, height=32)
    target_mesh = TriangleMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=3, radius=0.6))
    with torch.no_grad():
        target = render_mesh(target_mesh, cameras).alpha
    scene = DMTetScene(DMTetSceneConfig(resolution=12, init_radius=0.35, learn=("sdf", "deform"), lr_sdf=0.02))
    optimizer = torch.optim.Adam(scene.param_groups())
    initial = scene.render(cameras).extras["mask"].sum()
    for _ in range(25):
        loss = ((scene.render(cameras).alpha - target) ** 2).mean() + 0.01 * scene.sdf_regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert scene.render(cameras).extras["mask"].sum() > 1.3 * initial


def test_dmtet_scene_contract(tmp_path):
    scene = DMTetScene(DMTetSceneConfig(resolution=6))
    assert isinstance(scene, Scene)
    assert [g["name"] for g in scene.param_groups()] == ["sdf", "deform", "colors"]
    other = DMTetScene(DMTetSceneConfig(resolution=6, init_radius=0.2))
    other.load_state_dict(scene.state_dict())
    assert torch.equal(other.sdf, scene.sdf)
    path = export_scene(scene, tmp_path / "dmtet.ply", "ply")
    assert trimesh.load(path, process=False).is_watertight
    with torch.no_grad():
        scene.sdf.fill_(1.0)  # nothing inside: an empty surface renders as background
    out = scene.render(orbit_cameras(1, width=8, height=8), background=torch.tensor([0.0, 1.0, 0.0]))
    assert out.alpha.sum() == 0 and torch.allclose(out.rgb, torch.tensor([0.0, 1.0, 0.0]))
