import torch
import trimesh

from core.cameras import orbit_cameras
from core.export.assets import export_scene, load_scene
from renderers.mesh import DMTetScene, DMTetSceneConfig, MeshScene, TriangleMesh


def test_mesh_scene_export_reloads_in_the_same_frame(tmp_path):
    box = trimesh.creation.box(extents=(0.4, 0.8, 1.2))  # distinct extents: an axis swap would show
    scene = MeshScene(TriangleMesh.from_trimesh(box))
    for suffix in ("ply", "glb", "obj"):
        loaded = load_scene(export_scene(scene, tmp_path / f"m.{suffix}", suffix))
        extent = loaded.mesh().vertices.amax(0) - loaded.mesh().vertices.amin(0)
        assert torch.allclose(extent, torch.tensor([0.4, 0.8, 1.2]), atol=1e-4), suffix


def test_dmtet_scene_checkpoint_round_trip(tmp_path):
    scene = DMTetScene(DMTetSceneConfig(resolution=8))
    with torch.no_grad():
        scene.sdf.add_(0.05 * torch.randn_like(scene.sdf))
    loaded = load_scene(scene.export(tmp_path / "dmtet.pt"))
    assert isinstance(loaded, DMTetScene) and torch.equal(loaded.sdf, scene.sdf)
    cams = orbit_cameras(1, width=16, height=16)
    with torch.no_grad():
        assert torch.equal(loaded.render(cams).alpha, scene.render(cams).alpha)
