"""Radiance fields -> meshes (iso-surfaces of Gaussians and NeRFs) and meshes -> SDF -> DMTet."""

import math

import numpy as np
import pytest
import torch
import trimesh

from core.cameras import orbit_cameras
from core.export.extract import (
    IsoSurfaceConfig, decimate, extract_iso_surface, fill_cavities, largest_component, marching_cubes,
    max_projection, sample_grid, silhouette_level,
)
from core.export.gaussians_to_mesh import gaussian_grid, gaussians_to_mesh
from core.export.nerf_to_mesh import nerf_to_mesh
from core.export.sdf import dmtet_from_mesh, mesh_sdf
from renderers.gaussian.ply import SH_C0, GaussianData
from renderers.gaussian.scene import GaussianScene
from renderers.mesh import DMTetSceneConfig, TriangleMesh, render_mesh
from renderers.nerf import NerfConfig, NerfScene

RED, BLUE = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])


def fibonacci_sphere(n: int) -> torch.Tensor:
    i = torch.arange(n) + 0.5
    polar, azimuth = torch.acos(1 - 2 * i / n), math.pi * (1 + 5 ** 0.5) * i
    return torch.stack([torch.cos(azimuth) * torch.sin(polar), torch.sin(azimuth) * torch.sin(polar),
                        torch.cos(polar)], -1)


def gaussian_shell(n: int, radius: float, tangent: float, normal: float, opacity: float = 0.8) -> GaussianData:
    """Flat Gaussians (surfels) tangent to a sphere, as 3DGS leaves surfaces: red for z > 0, blue below."""
    normals = fibonacci_sphere(n)
    z = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3)
    axis = torch.cross(z, normals, dim=-1)
    length = axis.norm(dim=-1, keepdim=True)
    axis = torch.where(length > 1e-8, axis / length.clamp_min(1e-8), torch.tensor([1.0, 0.0, 0.0]))
    angle = torch.acos(normals[:, 2].clamp(-1, 1))  # rotates the Gaussian's z axis onto the normal
    quats = torch.cat([torch.cos(angle / 2)[:, None], torch.sin(angle / 2)[:, None] * axis], -1)
    colors = torch.where(normals[:, 2:] > 0, RED, BLUE)
    return GaussianData(
        means=normals * radius, quats=quats,
        log_scales=torch.tensor([tangent, tangent, normal]).log().expand(n, 3).clone(),
        logit_opacities=torch.full((n,), math.log(opacity / (1 - opacity))),
        sh0=((colors - 0.5) / SH_C0)[:, None], shN=torch.zeros(n, 0, 3),
    )


def as_trimesh(mesh: TriangleMesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices.detach().numpy(), mesh.faces.numpy(), process=False)


def test_gaussian_sphere_becomes_a_closed_sphere_with_its_colours():
    radius = 0.5
    scene = GaussianScene.from_data(gaussian_shell(8000, radius, tangent=0.012, normal=0.002))
    mesh = gaussians_to_mesh(scene, IsoSurfaceConfig(resolution=64, coarse_resolution=32, views=4, view_size=128))
    distance = mesh.vertices.norm(dim=-1)
    assert abs(float(distance.mean()) - radius) / radius < 0.03
    assert float(distance.std()) < 0.01 * radius  # one smooth surface, no inner shell, no floaters
    surface = as_trimesh(mesh)
    assert surface.is_watertight and surface.volume > 0  # closed, outward normals
    top, bottom = mesh.vertices[:, 2] > 0.2, mesh.vertices[:, 2] < -0.2
    assert torch.allclose(mesh.vertex_colors[top].mean(0), RED, atol=0.05)
    assert torch.allclose(mesh.vertex_colors[bottom].mean(0), BLUE, atol=0.05)
    # what the level was chosen for: from a view it never saw, the mesh covers what the splats cover
    camera = orbit_cameras(1, elevation_deg=50.0, radius=2.0, fov_y_deg=40.0, width=96, height=96,
                           azimuth_start_deg=17.0)
    splats = scene.render(camera, background=torch.zeros(3)).alpha[0, ..., 0] >= 0.5
    covered = render_mesh(mesh, camera).extras["mask"][0, ..., 0] > 0
    assert (splats & covered).sum() / (splats | covered).sum() > 0.97


def test_nerf_sphere_becomes_a_closed_sphere():
    # A real NerfScene whose density is its Magic3D blob alone: softplus(1000 (1 - |x| / 0.5)).
    scene = NerfScene(NerfConfig(n_samples=96, blob_density=1000.0, blob_radius=0.5))
    with torch.no_grad():
        scene.field.density_mlp[-1].weight.zero_()
        scene.field.density_mlp[-1].bias.zero_()
    mesh = nerf_to_mesh(scene, IsoSurfaceConfig(resolution=64, coarse_resolution=32, views=4, view_size=64))
    assert abs(float(mesh.vertices.norm(dim=-1).mean()) - 0.5) / 0.5 < 0.03
    surface = as_trimesh(mesh)
    assert surface.is_watertight and surface.volume > 0
    assert mesh.vertex_colors.shape == mesh.vertices.shape and scene.training  # training mode restored


def test_silhouette_level_matches_the_alpha_it_is_given():
    # MIP of a radial profile; the source's "alpha" is the silhouette of level 0.3 exactly.
    y, x = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    mip = torch.exp(-3 * (x ** 2 + y ** 2))[None]
    alpha = (mip >= 0.3).float()
    level = silhouette_level(mip, alpha)
    assert (mip >= level).eq(mip >= 0.3).float().mean() > 0.995
    assert abs(level - 0.3) < 0.01
    with pytest.raises(ValueError, match="no opaque pixel"):
        silhouette_level(mip, torch.zeros_like(alpha))


def test_max_projection_sees_a_ball_where_it_is():
    lo, hi = torch.full((3,), -1.0), torch.full((3,), 1.0)
    grid = sample_grid(lambda p: (p.norm(dim=-1) < 0.5).float())(lo, hi, (33, 33, 33))
    cameras = orbit_cameras(1, elevation_deg=0.0, radius=3.0, fov_y_deg=40.0, width=48, height=48)
    mip = max_projection(grid, lo, hi, cameras)[0]
    assert mip[24, 24] == 1.0 and mip[0, 0] == 0.0
    # the ball's angular radius asin(0.5/3) over the pixel's angle: about 11 pixels
    covered = float((mip > 0.5).sum())
    expected = math.pi * (math.tan(math.asin(0.5 / 3)) * 24 / math.tan(math.radians(20))) ** 2
    assert abs(covered - expected) / expected < 0.15


def test_gaussian_grid_blocked_equals_dense_sum():
    torch.manual_seed(0)
    n = 40
    data = GaussianData(
        means=torch.rand(n, 3) - 0.5, quats=torch.randn(n, 4), log_scales=(torch.rand(n, 3) * 0.1 + 0.02).log(),
        logit_opacities=torch.randn(n), sh0=torch.randn(n, 1, 3), shN=torch.zeros(n, 0, 3),
    )
    lo, hi, shape = torch.tensor([-0.6, -0.5, -0.7]), torch.tensor([0.6, 0.5, 0.5]), (13, 11, 12)
    blocked = gaussian_grid(data, lo, hi, shape, max_elements=500)  # many small chunks
    # dense reference of the documented field: each Gaussian widened by half a voxel, mass kept
    from gsplat.utils import normalized_quat_to_rotmat

    voxel = float(((hi - lo) / (torch.tensor(shape) - 1)).max())
    scales = data.log_scales.exp()
    widened = (scales ** 2 + (0.5 * voxel) ** 2).sqrt()
    opacity = torch.sigmoid(data.logit_opacities) * (scales / widened).prod(-1)
    rot = normalized_quat_to_rotmat(torch.nn.functional.normalize(data.quats, dim=-1))
    precision = rot @ torch.diag_embed(widened ** -2) @ rot.transpose(1, 2)
    points = torch.stack(torch.meshgrid(*[torch.linspace(float(lo[i]), float(hi[i]), shape[i]) for i in range(3)],
                                        indexing="ij"), -1).reshape(-1, 3)
    d = points[:, None] - data.means[None]
    q = torch.einsum("pni,nij,pnj->pn", d, precision, d)
    cov_diag = torch.einsum("nij,nj,nij->ni", rot, widened ** 2, rot)  # diag(R S^2 R^T)
    inside = (d.abs() <= 3 * cov_diag.sqrt()[None]).all(-1)  # the 3-sigma box the blocked version visits
    weight = opacity * torch.exp(-0.5 * q) * inside
    colors = (0.5 + SH_C0 * data.sh0[:, 0]).clamp(0, 1)
    dense = torch.cat([weight.sum(1, keepdim=True), weight @ colors], -1).view(*shape, 4)
    assert torch.allclose(blocked, dense, atol=1e-5, rtol=1e-4)


def sphere_grid(radius=0.5, resolution=40, centre=(0.0, 0.0, 0.0)):
    lo, hi = torch.full((3,), -1.0), torch.full((3,), 1.0)
    c = torch.tensor(centre)
    return sample_grid(lambda p: (radius - (p - c).norm(dim=-1)).clamp_min(0))(lo, hi, (resolution,) * 3), lo, hi


def test_largest_component_drops_floaters_and_cavities_are_filled():
    big, lo, hi = sphere_grid(0.5)
    small, _, _ = sphere_grid(0.15, centre=(0.75, 0.75, 0.75))
    vertices, faces = largest_component(*marching_cubes(big + small, 0.01, lo, hi))
    assert np.linalg.norm(vertices, axis=1).max() < 0.6  # the floater is gone
    shell = ((big > 0.0) & (big < 0.15)).float()  # a hollow ball: density only in a 0.15-thick skin
    assert len(marching_cubes(fill_cavities(shell, 0.5), 0.5, lo, hi)[1]) < 0.7 * len(
        marching_cubes(shell, 0.5, lo, hi)[1])  # inner surface gone
    outer = trimesh.Trimesh(*marching_cubes(fill_cavities(shell, 0.5), 0.5, lo, hi), process=False)
    assert outer.is_watertight and outer.volume > 0.8 * (4 / 3) * math.pi * 0.5 ** 3


def test_decimation_meets_the_face_budget_and_keeps_the_shape():
    grid, lo, hi = sphere_grid(0.5, resolution=48)
    vertices, faces = marching_cubes(grid, 0.05, lo, hi)
    small_v, small_f = decimate(vertices, faces, 1000)
    assert 300 < len(small_f) <= 1000
    radius = np.linalg.norm(small_v, axis=1)
    assert abs(radius.mean() - np.linalg.norm(vertices, axis=1).mean()) < 0.01
    assert trimesh.Trimesh(small_v, small_f, process=False).volume > 0  # orientation kept


def test_extract_iso_surface_tightens_the_box_around_a_small_object():
    surface = extract_iso_surface(
        sample_grid(lambda p: 5.0 * ((0.2 - (p - 0.3).norm(dim=-1)) > 0).float()), 1.0,
        IsoSurfaceConfig(resolution=32, coarse_resolution=24))
    # the 0.4-wide ball plus two coarse voxels (2/23) a side, not the 2-wide bound
    assert (surface.hi - surface.lo).max() < 0.4 + 4 * 2 / 23 + 1e-3
    assert (surface.lo < 0.1).all() and (surface.hi > 0.5).all()
    centre = surface.vertices.mean(0)
    assert np.abs(centre - 0.3).max() < 0.02
    assert abs(np.linalg.norm(surface.vertices - centre, axis=1).mean() - 0.2) < 0.02


# --- mesh -> SDF -> DMTet --------------------------------------------------------------------


def test_mesh_sdf_of_a_box_is_exact():
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.8))
    points = np.random.default_rng(0).uniform(-0.8, 0.8, (3000, 3))
    # the analytic SDF of a box with half-sides h (Quilez)
    q = np.abs(points) - np.array([0.5, 0.3, 0.4])
    true = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)
    sdf = mesh_sdf(points, box.vertices, box.faces).numpy()
    assert np.abs(sdf - true).max() < 1e-5
    # grid-aligned points hit the box's edges and vertices exactly: the sign must still hold
    axis = np.linspace(-0.6, 0.6, 13)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    q = np.abs(grid) - np.array([0.5, 0.3, 0.4])
    true = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)
    sdf = mesh_sdf(grid, box.vertices, box.faces).numpy()
    clear = np.abs(true) > 1e-6
    assert (np.sign(sdf[clear]) == np.sign(true[clear])).all()


def test_mesh_sdf_of_a_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    points = np.random.default_rng(1).uniform(-0.9, 0.9, (3000, 3))
    true = np.linalg.norm(points, axis=1) - 0.5
    sdf = mesh_sdf(points, sphere.vertices, sphere.faces).numpy()
    facet = 1e-3  # the icosphere's facets lie up to this far inside the true sphere
    clear = np.abs(true) > facet
    assert (np.sign(sdf[clear]) == np.sign(true[clear])).all()
    near = np.abs(true) < 0.1
    assert np.abs(sdf - true)[near].max() < facet
    assert np.abs(sdf - true).max() < 0.02 + 0.05 * np.abs(true).max()


def test_mesh_to_dmtet_to_mesh_keeps_the_shape():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    mesh = TriangleMesh(torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces),
                        vertex_colors=torch.where(torch.tensor(sphere.vertices[:, 2:]) > 0, RED, BLUE).float())
    scene = dmtet_from_mesh(mesh, DMTetSceneConfig(resolution=16))
    out = scene.extract_mesh().detach()
    surface = as_trimesh(out)
    assert surface.is_watertight
    assert abs(surface.volume - sphere.volume) / sphere.volume < 0.10
    top = out.vertices[:, 2] > 0.3
    assert torch.allclose(out.vertex_colors[top].mean(0), RED, atol=0.05)
