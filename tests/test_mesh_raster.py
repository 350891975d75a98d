"""The torch mesh rasteriser against trimesh ray casting, and its gradients."""

import numpy as np
import pytest
import torch
import trimesh
from trimesh.ray.ray_triangle import ray_triangle_id

from core.cameras import Cameras, look_at, orbit_cameras
from core.export.assets import export_scene
from renderers.base import Scene
from renderers.mesh import (
    MeshRenderConfig, MeshScene, MeshSceneConfig, TriangleMesh, face_neighbours, interpolate, rasterize,
    render_mesh, sample_texture,
)
from tests.trimesh_rays import BoxTree


def ray_cast(mesh: trimesh.Trimesh, cameras: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """Reference coverage [B,H,W] bool and z-depth [B,H,W] from trimesh's ray-triangle intersector."""
    origins, dirs = cameras.rays()
    shape = origins.shape[:3]
    origins, dirs = origins.reshape(-1, 3).numpy(), dirs.reshape(-1, 3).numpy()
    _, ray, location = ray_triangle_id(mesh.triangles, origins, dirs, triangles_normal=mesh.face_normals,
                                       tree=BoxTree(mesh.triangles), multiple_hits=False)
    hit = np.zeros(len(origins), bool)
    hit[ray] = True
    forward = -cameras.c2w[:, :3, 2].numpy()[ray // (shape[1] * shape[2])]
    depth = np.zeros(len(origins))
    depth[ray] = ((location - origins[ray]) * forward).sum(-1)
    return hit.reshape(shape), depth.reshape(shape)


def two_boxes() -> trimesh.Trimesh:
    a = trimesh.creation.box([0.8, 0.8, 0.8])
    b = trimesh.creation.box([0.5, 0.5, 1.2])
    b.apply_translation([0.35, 0.3, 0.1])
    return trimesh.util.concatenate([a, b])


@pytest.mark.parametrize("name, mesh", [
    ("icosphere", trimesh.creation.icosphere(subdivisions=2, radius=0.7)),
    ("box", trimesh.creation.box([1.0, 0.6, 0.8])),
    ("two_boxes", two_boxes()),
])
def test_coverage_and_depth_match_ray_casting(name, mesh):
    cameras = orbit_cameras(3, elevation_deg=25.0, width=40, height=32, azimuth_start_deg=20.0)
    rast = rasterize(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces), cameras)
    hit, depth = ray_cast(mesh, cameras)
    covered = (rast.face_id >= 0).numpy()
    assert hit.mean() > 0.1, "the cameras should see the mesh"
    assert (covered == hit).mean() >= 0.99
    both = covered & hit
    assert np.abs(rast.depth[..., 0].detach().numpy()[both] - depth[both]).max() < 1e-3
    assert (rast.depth[..., 0][~torch.from_numpy(covered)] == 0).all()


def test_near_plane_clips_per_pixel():
    """A ground plane running under and behind the camera: parts behind it must not show up."""
    ground = trimesh.Trimesh([[-20, -20, 0], [20, -20, 0], [20, 20, 0], [-20, 20, 0]], [[0, 1, 2], [0, 2, 3]])
    eye = torch.tensor([[0.0, -1.0, 0.5]])
    c2w = look_at(eye, torch.tensor([[0.0, 1.0, 0.2]]))
    K = torch.tensor([[[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]]])
    cameras = Cameras(c2w, K, 32, 24)
    rast = rasterize(torch.tensor(ground.vertices, dtype=torch.float32), torch.tensor(ground.faces), cameras, near=0.05)
    hit, depth = ray_cast(ground, cameras)
    covered = (rast.face_id >= 0).numpy()
    assert 0.2 < hit.mean() < 0.9
    assert (covered == hit).mean() >= 0.99
    both = covered & hit
    assert np.abs(rast.depth[..., 0].numpy()[both] - depth[both]).max() < 1e-3 * depth[both].max()


def test_interpolation_is_perspective_correct():
    mesh = TriangleMesh.from_trimesh(trimesh.creation.box([1.0, 1.0, 1.0]))
    cameras = orbit_cameras(2, elevation_deg=30.0, width=24, height=24)
    out = render_mesh(mesh, cameras)
    mask = out.extras["mask"][..., 0] > 0
    origins, dirs = cameras.rays()
    position = out.extras["position"]
    # interpolated world positions lie on the pixel rays, at the rendered depth
    forward = -cameras.c2w[:, :3, 2]
    along = ((position - origins) * dirs).sum(-1, keepdim=True)
    off_ray = (position - origins - along * dirs).norm(dim=-1)
    assert off_ray[mask].max() < 1e-4
    z = ((position - origins) * forward[:, None, None]).sum(-1)
    assert (z - out.depth[..., 0])[mask].abs().max() < 1e-4


def test_batch_matches_single_cameras():
    mesh = TriangleMesh.from_trimesh(two_boxes())
    cameras = orbit_cameras(3, width=20, height=16)
    batch = render_mesh(mesh, cameras)
    for i in range(3):
        single = render_mesh(mesh, cameras[i])
        assert torch.allclose(batch.rgb[i], single.rgb[0], atol=1e-6)
        assert torch.equal(batch.extras["face_id"][i], single.extras["face_id"][0])


def test_interpolation_gradcheck():
    torch.manual_seed(0)
    # a tetrahedron with its apex towards the camera: an edge between two faces in view
    vertices = torch.tensor([[-0.3, -0.6, -0.4], [-0.3, 0.6, -0.4], [-0.3, 0.0, 0.6], [0.6, 0.05, 0.05]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    cameras = orbit_cameras(1, elevation_deg=20.0, radius=1.2, width=10, height=10)
    cameras = Cameras(cameras.c2w.double(), cameras.K.double(), 10, 10)
    attr = torch.rand(4, 2, dtype=torch.float64)

    def render(v, a):
        rast = rasterize(v, faces, cameras)
        return interpolate(a, rast), rast.depth

    face_id = rasterize(vertices, faces, cameras).face_id
    assert (face_id >= 0).sum() > 16 and len(face_id[face_id >= 0].unique()) >= 2
    vertices.requires_grad_(True)
    attr.requires_grad_(True)
    assert torch.autograd.gradcheck(render, (vertices, attr), eps=1e-6, atol=1e-5, fast_mode=True)


def test_texture_lookup_orientation_and_gradcheck():
    texture = torch.zeros(2, 2, 1, dtype=torch.float64)
    texture[0, 0] = 1.0  # top-left texel: u < 0.5, v > 0.5
    uv = torch.tensor([[0.25, 0.75], [0.75, 0.25]], dtype=torch.float64)
    assert sample_texture(texture, uv)[:, 0].tolist() == [1.0, 0.0]
    texture = torch.rand(4, 5, 3, dtype=torch.float64, requires_grad=True)
    uv = torch.rand(6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sample_texture, (texture, uv), eps=1e-6, atol=1e-5, fast_mode=True)


def _quad(texture: torch.Tensor) -> TriangleMesh:
    vertices = torch.tensor([[0.0, -0.8, -0.8], [0.0, 0.8, -0.8], [0.0, 0.8, 0.8], [0.0, -0.8, 0.8]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    return TriangleMesh(vertices, torch.tensor([[0, 1, 2], [0, 2, 3]]), uv=uv, base_color=texture)


def test_texture_optimisation_reaches_target():
    torch.manual_seed(0)
    cameras = orbit_cameras(1, elevation_deg=0.0, width=24, height=24)
    target_texture = torch.rand(8, 8, 3)
    with torch.no_grad():
        target = render_mesh(_quad(target_texture), cameras).rgb
    scene = MeshScene(_quad(torch.full((8, 8, 3), 0.5)), MeshSceneConfig(learn=("texture",), lr_texture=0.05))
    optimizer = torch.optim.Adam(scene.param_groups())
    losses = []
    for _ in range(40):
        loss = ((scene.render(cameras).rgb - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_silhouette_gradients_grow_a_sphere():
    cameras = orbit_cameras(2, elevation_deg=10.0, width=32, height=32)
    small = TriangleMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=2, radius=0.3))
    large = TriangleMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=2, radius=0.55))
    with torch.no_grad():
        target = render_mesh(large, cameras).alpha
    scene = MeshScene(small, MeshSceneConfig(learn=("offsets",), lr_offsets=0.01))
    optimizer = torch.optim.Adam(scene.param_groups())
    first = None
    for _ in range(40):
        out = scene.render(cameras)
        loss = ((out.alpha - target) ** 2).mean()
        first = first if first is not None else (loss.item(), out.extras["mask"].sum().item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = scene.render(cameras)
    assert ((out.alpha - target) ** 2).mean().item() < 0.3 * first[0]
    assert out.extras["mask"].sum().item() > 1.5 * first[1]


def test_without_antialias_alpha_has_no_geometry_gradient():
    cameras = orbit_cameras(1, width=24, height=24)
    mesh = TriangleMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=1, radius=0.5))
    vertices = mesh.vertices.clone().requires_grad_(True)
    out = render_mesh(mesh.with_vertices(vertices), cameras, cfg=MeshRenderConfig(antialias=False))
    assert not out.alpha.requires_grad  # hard coverage is piecewise constant in the vertices
    out = render_mesh(mesh.with_vertices(vertices), cameras)
    out.alpha.sum().backward()
    assert vertices.grad.abs().sum() > 0
    assert out.alpha.min() >= 0 and out.alpha.max() <= 1
    hard = out.extras["mask"]
    assert out.alpha.sum() < hard.sum() + 24  # blending touches only a band along the edges


def test_face_neighbours_closed_mesh():
    faces = torch.tensor(trimesh.creation.icosphere(subdivisions=1).faces)
    nb = face_neighbours(faces)
    assert (nb >= 0).all()
    for f in range(len(faces)):
        for i in range(3):
            g = nb[f, i].item()
            shared = {faces[f, (i + 1) % 3].item(), faces[f, (i + 2) % 3].item()}
            assert shared <= set(faces[g].tolist()) and f in nb[g].tolist()


def test_triangle_mesh_normals_and_trimesh_roundtrip(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    sphere.visual.vertex_colors = (np.random.default_rng(0).random((len(sphere.vertices), 4)) * 255).astype(np.uint8)
    mesh = TriangleMesh.from_trimesh(sphere)
    radial = mesh.vertices / mesh.vertices.norm(dim=-1, keepdim=True)
    assert (mesh.vertex_normals() * radial).sum(-1).min() > 0.99
    assert torch.allclose(mesh.vertex_colors * 255, torch.tensor(sphere.visual.vertex_colors[:, :3]).float(), atol=1e-3)
    back = TriangleMesh.from_trimesh(mesh.to_trimesh())
    assert torch.allclose(back.vertex_colors, mesh.vertex_colors, atol=1 / 255)

    textured = _quad(torch.rand(4, 4, 3))
    textured.roughness = torch.rand(4, 4, 1)
    back = TriangleMesh.from_trimesh(textured.to_trimesh())
    assert torch.allclose(back.uv, textured.uv)
    assert torch.allclose(back.base_color, textured.base_color, atol=1 / 255)
    assert torch.allclose(back.roughness, textured.roughness, atol=1 / 255)


def test_mesh_scene_contract(tmp_path):
    mesh = TriangleMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=1, radius=0.5))
    scene = MeshScene(mesh, MeshSceneConfig(learn=("offsets", "colors")))
    assert isinstance(scene, Scene)
    assert [g["name"] for g in scene.param_groups({"lr_offsets": 0.5})] == ["offsets", "colors"]
    assert scene.param_groups({"lr_offsets": 0.5})[0]["lr"] == 0.5
    with torch.no_grad():
        scene.offsets += 0.1
        scene.vertex_colors[:] = torch.tensor([1.0, 0.0, 0.0])
    out = scene.render(orbit_cameras(2, width=16, height=16), background=torch.tensor([0.0, 0.0, 1.0]))
    assert out.rgb.shape == (2, 16, 16, 3) and out.normal.shape == (2, 16, 16, 3)
    assert torch.allclose(out.rgb[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))  # corner: background
    assert torch.allclose(out.rgb[:, 8, 8], torch.tensor([1.0, 0.0, 0.0]))  # centre: the red mesh
    other = MeshScene(mesh, MeshSceneConfig(learn=("offsets", "colors")))
    other.load_state_dict(scene.state_dict())
    assert torch.equal(other.mesh().vertices, scene.mesh().vertices)
    for suffix in ("ply", "obj"):
        path = export_scene(scene, tmp_path / f"mesh.{suffix}", suffix)
        loaded = trimesh.load(path, force="mesh", process=False)
        assert len(loaded.faces) == mesh.num_faces
        assert np.allclose(np.linalg.norm(loaded.vertices, axis=1).max(), scene.mesh().vertices.norm(dim=-1).max().item(), atol=1e-4)
    with pytest.raises(ValueError, match="uv"):
        MeshScene(mesh, MeshSceneConfig(learn=("texture",)))


def test_backface_culling_keeps_a_convex_mesh_intact():
    # only back faces may go: a wrong orientation convention would show the far side instead
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.7)
    vertices, faces = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    cameras = orbit_cameras(2, width=24, height=24)
    both = rasterize(vertices, faces, cameras)
    front = rasterize(vertices, faces, cameras, cull_backfaces=True)
    assert torch.equal(both.face_id, front.face_id)
    inverted = rasterize(vertices, faces.flip(1), cameras, cull_backfaces=True)
    assert (inverted.depth > both.depth + 0.1)[both.mask > 0].float().mean() > 0.9


def test_material_extras_for_shading():
    mesh = _quad(torch.rand(4, 4, 3))
    mesh.roughness = torch.full((4, 4, 1), 0.25)
    mesh.normal_map = torch.tensor([0.5, 0.5, 1.0]).expand(4, 4, 3).clone()
    out = render_mesh(mesh, orbit_cameras(1, elevation_deg=0.0, width=16, height=16))
    mask = out.extras["mask"][..., 0] > 0
    assert torch.allclose(out.extras["roughness"][mask], torch.tensor(0.25))
    uv = out.extras["uv"][mask]
    assert uv.min() >= 0 and uv.max() <= 1
    # u grows along +y on this quad, v along +z
    assert torch.allclose(out.extras["tangent"][mask], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)
    assert torch.allclose(out.extras["position"][mask][:, 1], uv[:, 0] * 1.6 - 0.8, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_cuda_matches_cpu(backend):
    """The same render on CUDA (torch path, or nvdiffrast visibility when installed) and on CPU."""
    mesh = TriangleMesh.from_trimesh(two_boxes())
    mesh.vertex_colors = torch.rand(mesh.num_vertices, 3)
    cameras = orbit_cameras(3, width=48, height=40)
    cpu = render_mesh(mesh, cameras)
    vertices = mesh.vertices.cuda().requires_grad_(True)
    gpu = render_mesh(mesh.to("cuda").with_vertices(vertices), cameras.to("cuda"), cfg=MeshRenderConfig(backend=backend))
    assert (gpu.extras["face_id"].cpu() == cpu.extras["face_id"]).float().mean() > 0.99
    covered = (gpu.extras["face_id"].cpu() == cpu.extras["face_id"]) & (cpu.extras["face_id"] >= 0)
    assert (gpu.depth.cpu() - cpu.depth)[..., 0][covered].abs().max() < 1e-4
    (gpu.rgb.mean() + gpu.alpha.mean()).backward()
    assert torch.isfinite(vertices.grad).all() and vertices.grad.abs().sum() > 0


def test_configs_load_with_overrides_and_lambert_shades():
    from core.config import ConfigError, load_config

    cfg = load_config(MeshSceneConfig, None, ["learn=[offsets]", "render.shading=lambert", "render.tile_size=4"])
    assert cfg.learn == ("offsets",) and cfg.render.shading == "lambert" and cfg.render.tile_size == 4
    with pytest.raises(ConfigError, match="learn"):
        load_config(MeshSceneConfig, None, ["learn=[vertices]"])
    mesh = TriangleMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=3, radius=0.8))
    out = MeshScene(mesh, cfg).render(orbit_cameras(1, elevation_deg=0.0, width=32, height=32))
    row = out.rgb[0, 16, :, 0]
    covered = out.extras["mask"][0, 16, :, 0] > 0
    # the headlight hits the centre head-on and the rim at a grazing angle
    assert row[16] > 0.75 and row[covered].min() < 0.5


def test_no_cracks_where_edges_pass_through_pixel_centres():
    n = 16  # a plane of n x n cells, two triangles each, at z = 0 under a camera looking down
    g = torch.linspace(-1.0, 1.0, n + 1)
    ys, xs = torch.meshgrid(g, g, indexing="ij")
    vertices = torch.stack([xs, ys, torch.zeros_like(xs)], dim=-1).reshape(-1, 3)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    v00 = (i * (n + 1) + j).reshape(-1)
    faces = torch.cat([torch.stack([v00, v00 + 1, v00 + n + 2], -1), torch.stack([v00, v00 + n + 2, v00 + n + 1], -1)])
    c2w = look_at(torch.tensor([[0.0, 0.0, 2.0]]))
    # principal point on a pixel centre and f = 16 px per unit at z = 2: grid vertices and
    # diagonals land exactly on pixel centres, where inside tests are decided by ties
    K = torch.tensor([[[32.0, 0, 16.5], [0, 32.0, 16.5], [0, 0, 1]]])
    rast = rasterize(vertices, faces, Cameras(c2w, K, 32, 32))
    assert (rast.face_id >= 0).all()
