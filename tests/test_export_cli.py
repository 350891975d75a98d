"""`scorelift export` and `scorelift render` on every backend, and load_scene / export_scene behind them."""

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import trimesh

from app.cli import main
from core.export.assets import AssetError, ExportOptions, export_scene, load_scene, write_mesh
from renderers.gaussian.ply import load_gaussians
from renderers.gaussian.scene import GaussianScene
from renderers.mesh import DMTetScene, DMTetSceneConfig, MeshScene, TriangleMesh
from renderers.nerf import NerfConfig, NerfScene
from test_extract import BLUE, RED, gaussian_shell


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """What `scorelift reconstruct` leaves: model.ply (3DGS splats) and config.yaml."""
    folder = tmp_path_factory.mktemp("run")
    GaussianScene.from_data(gaussian_shell(2000, 0.5, tangent=0.03, normal=0.004)).export(folder / "model.ply")
    (folder / "config.yaml").write_text("steps: 1\n")
    return folder


@pytest.fixture
def coloured_glb(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    vertices = torch.tensor(sphere.vertices, dtype=torch.float32)
    mesh = TriangleMesh(vertices, torch.tensor(sphere.faces),
                        vertex_colors=torch.where(vertices[:, 2:] > 0, RED, BLUE))
    return write_mesh(mesh, tmp_path / "sphere.glb", "glb")


def test_export_a_run_folder_to_glb_and_splat(run_folder, capsys):
    assert main(["export", str(run_folder), "--format", "glb", "--resolution", "32", "--texture-size", "64"]) == 0
    glb = run_folder / "model.glb"
    assert str(glb) in capsys.readouterr().out
    loaded = trimesh.load(glb, force="mesh")
    assert loaded.visual.kind == "texture" and loaded.visual.material.baseColorTexture.size == (64, 64)
    # glTF is +Y up: the red cap of the splats (+Z in scorelift) is on top there
    colours = loaded.visual.to_color().vertex_colors[:, :3].astype(int)
    top, bottom = loaded.vertices[:, 1] > 0.2, loaded.vertices[:, 1] < -0.2
    assert colours[top, 0].mean() > 200 and colours[bottom, 2].mean() > 200
    assert main(["export", str(run_folder), "--format", "splat"]) == 0
    splats = load_gaussians(run_folder / "model.splat")
    assert len(splats) == 2000
    assert torch.allclose(splats.means, load_gaussians(run_folder / "model.ply").means)


def test_export_a_nerf_checkpoint_to_ply_and_glb(tmp_path):
    nerf = NerfScene(NerfConfig(blob_density=50.0, blob_radius=0.4, n_samples=24, n_levels=3, max_resolution=32))
    checkpoint = nerf.export(tmp_path / "nerf.pt")
    assert main(["export", str(checkpoint), "--format", "ply", "--resolution", "20"]) == 0
    mesh = trimesh.load(tmp_path / "nerf.ply")
    assert mesh.is_watertight and len(mesh.visual.vertex_colors) == len(mesh.vertices)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert 0.25 < radius.mean() < 0.45  # the blob, not the 1.0 bound sphere
    # glb: the colour field baked into a texture
    assert main(["export", str(checkpoint), "--format", "glb", "--resolution", "16", "--texture-size", "32"]) == 0
    glb = trimesh.load(tmp_path / "nerf.glb", force="mesh")
    assert glb.visual.material.baseColorTexture.size == (32, 32)
    texture = np.asarray(glb.visual.material.baseColorTexture.convert("RGB"), dtype=float) / 255
    expected = nerf.color(torch.zeros(1, 3))[0].detach().numpy()  # the untrained head is nearly uniform
    assert np.abs(texture.reshape(-1, 3).mean(0) - expected).max() < 0.1


def test_an_empty_scene_is_a_user_error(tmp_path, capsys):
    # sigma = softplus(-50 (1 - |x| / 1e6)) ~ 1e-22 everywhere: nothing to see
    nerf = NerfScene(NerfConfig(blob_density=-50.0, blob_radius=1e6, n_levels=2, max_resolution=16, n_samples=16))
    with torch.no_grad():
        nerf.field.density_mlp[-1].weight.zero_()
        nerf.field.density_mlp[-1].bias.zero_()
    code = main(["export", str(nerf.export(tmp_path / "empty.pt")), "--format", "glb", "--resolution", "16",
                 "--texture-size", "16"])
    err = capsys.readouterr().err
    assert code == 2 and "no opaque pixel" in err and len(err.strip().splitlines()) == 1, err


def test_render_a_glb_and_a_nerf_checkpoint(coloured_glb, tmp_path):
    assert main(["render", str(coloured_glb), "--out", str(tmp_path / "glb"), "--orbit", "2", "--width", "32",
                 "--elevation", "60"]) == 0
    frame = imageio.imread(tmp_path / "glb" / "frame_0000.png")[..., :3].astype(int)
    assert frame[16, 16, 0] > 200 and frame[16, 16, 2] < 60  # seen from above: the red cap
    assert (tmp_path / "glb" / "turntable.mp4").is_file()
    nerf = NerfScene(NerfConfig(blob_density=50.0, n_samples=32))
    checkpoint = nerf.export(tmp_path / "nerf.pt")
    assert main(["render", str(checkpoint), "--out", str(tmp_path / "nerf"), "--orbit", "1", "--width", "24",
                 "--background", "black"]) == 0
    frame = imageio.imread(tmp_path / "nerf" / "frame_0000.png")[..., :3]
    assert frame[12, 12].max() > 40 and frame[0, 0].max() < 10  # the blob in the middle, black around it


@pytest.mark.parametrize("make_asset, kind", [
    (lambda d: GaussianScene.from_data(gaussian_shell(50, 0.5, 0.05, 0.01)).export(d / "a.splat"), GaussianScene),
    (lambda d: GaussianScene.from_data(gaussian_shell(50, 0.5, 0.05, 0.01)).export(d / "a.ply"), GaussianScene),
    (lambda d: write_mesh(TriangleMesh(torch.eye(3), torch.tensor([[0, 1, 2]])), d / "m.ply", "ply"), MeshScene),
    (lambda d: write_mesh(TriangleMesh(torch.eye(3), torch.tensor([[0, 1, 2]])), d / "m.obj", "obj"), MeshScene),
    (lambda d: NerfScene(NerfConfig(n_levels=2, max_resolution=16)).export(d / "n.pt"), NerfScene),
    (lambda d: _dmtet_checkpoint(d / "t.pt"), DMTetScene),
])
def test_load_scene_reads_every_asset_kind(tmp_path, make_asset, kind):
    assert isinstance(load_scene(make_asset(tmp_path)), kind)


def _dmtet_checkpoint(path):
    from core.config import to_dict

    scene = DMTetScene(DMTetSceneConfig(resolution=4))
    torch.save({"config": to_dict(scene.cfg), "state_dict": scene.state_dict()}, path)
    return path


def test_mesh_files_round_trip_in_scorelift_axes(tmp_path):
    vertices = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # +Z up in scorelift
    for fmt in ("glb", "obj", "ply"):
        path = write_mesh(TriangleMesh(vertices, torch.tensor([[0, 1, 2]])), tmp_path / f"t.{fmt}", fmt)
        assert torch.allclose(load_scene(path).mesh().vertices, vertices, atol=1e-6), fmt


def test_export_scene_of_a_mesh_and_impossible_formats(tmp_path):
    scene = load_scene(write_mesh(TriangleMesh(torch.eye(3), torch.tensor([[0, 1, 2]]),
                                               vertex_colors=torch.eye(3)), tmp_path / "m.glb", "glb"))
    path = export_scene(scene, tmp_path / "out.ply", "ply")
    assert np.asarray(trimesh.load(path).visual.vertex_colors)[:, :3].tolist() == [[255, 0, 0], [0, 255, 0],
                                                                                  [0, 0, 255]]
    with pytest.raises(AssetError, match="cannot be written as splat"):
        export_scene(scene, tmp_path / "out.splat", "splat")
    with pytest.raises(AssetError, match="unknown format"):
        export_scene(scene, tmp_path / "out.usd", "usd", ExportOptions())


@pytest.mark.parametrize("args, message", [
    (["export", "{glb}", "--format", "splat"], "cannot be written as splat"),
    (["export", "{d}/missing.ply", "--format", "glb"], "not found"),
    (["export", "{d}", "--format", "glb"], "without a model file"),
    (["export", "{glb}", "--format", "fbx"], "invalid choice"),
    (["export", "{glb}", "--format", "glb"], "exists; pass --out"),
    (["render", "{d}/nothing.pt", "--out", "{d}/r"], "not found"),
    (["render", "{points}", "--out", "{d}/r"], "not a Gaussian splat"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, coloured_glb, args, message):
    points = tmp_path / "points.ply"
    trimesh.PointCloud(np.random.default_rng(0).random((10, 3))).export(points)
    code = main([a.format(glb=coloured_glb, d=tmp_path, points=points) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
