"""Export keeps the object only: floater removal on Gaussians, and meshes that keep a torus's hole open."""

import numpy as np
import torch
import trimesh

from core.export.assets import ExportOptions, export_scene
from core.export.floaters import FloaterConfig, floater_mask, remove_floaters
from renderers.gaussian.ply import GaussianData
from tests.synthetic_scenes import MAJOR, torus_scene
from tests.trimesh_rays import BoxTree


def test_floater_clumps_go_and_the_torus_stays():
    clean, dirty = torus_scene(), torus_scene(floaters=True)
    keep = floater_mask(dirty.to_data())
    # torus_scene appends the three 8-Gaussian clumps after the torus
    assert keep[:len(clean)].all()
    assert not keep[len(clean):].any() and len(dirty) - len(clean) == 24
    assert torch.equal(remove_floaters(dirty).params["means"], clean.params["means"])


def test_clean_object_loses_nothing():
    assert floater_mask(torus_scene().to_data()).all()


def test_transparent_gaussians_and_statistical_outliers_go():
    data = torus_scene().to_data()
    n = len(data.means)
    faint = data.logit_opacities.clone()
    faint[:10] = -6.0                                    # opacity 0.0025 < 0.05
    lone = torch.tensor([[0.0, 0.0, 0.3]])               # above the hole, 0.3 from the nearest Gaussian
    data = GaussianData(torch.cat([data.means, lone]), torch.cat([data.quats, data.quats[:1]]),
                        torch.cat([data.log_scales, data.log_scales[:1]]), torch.cat([faint, faint[-1:]]),
                        torch.cat([data.sh0, data.sh0[:1]]), torch.cat([data.shN, data.shN[:1]]))
    keep = floater_mask(data)
    assert not keep[:10].any() and keep[10:n].all()
    assert not keep[n]                                   # a component of one: far below 5% of the torus
    # the statistical filter alone (components off) catches the lone Gaussian too
    keep = floater_mask(data, FloaterConfig(min_component=0.0, outlier_std=3.0))
    assert not keep[n] and keep[10:n].float().mean() > 0.99


def _hits(mesh: trimesh.Trimesh, origin, direction) -> int:
    """How many times trimesh's ray-triangle test says the ray crosses the mesh."""
    from trimesh.ray.ray_triangle import ray_triangle_id

    faces, _, _ = ray_triangle_id(mesh.triangles, np.array([origin], float), np.array([direction], float),
                                  triangles_normal=mesh.face_normals, tree=BoxTree(mesh.triangles),
                                  multiple_hits=True)
    return len(faces)


def test_meshed_torus_keeps_its_hole_open_and_drops_floaters(tmp_path):
    options = ExportOptions(resolution=64, texture_size=64, target_faces=8000, remove_floaters=True)
    path = export_scene(torus_scene(floaters=True), tmp_path / "torus.glb", "glb", options)
    mesh = trimesh.load(str(path), force="mesh")           # glTF is +Y up: the ring lies in the XZ plane
    mesh.merge_vertices(merge_tex=True, merge_norm=True)    # UV seams split vertices
    assert len(mesh.split(only_watertight=False)) == 1      # no floater piece
    # a floater clump sits right above the hole (z = 0.55): a ray down the axis meets nothing
    assert _hits(mesh, (0.0, 2.0, 0.0), (0.0, -1.0, 0.0)) == 0
    # through the tube it meets the top and bottom surface
    assert _hits(mesh, (MAJOR, 2.0, 0.0), (0.0, -1.0, 0.0)) == 2
    assert _hits(mesh, (0.0, 0.0, 2.0), (0.0, 0.0, -1.0)) == 4   # sideways through both sides of the ring


def test_an_all_transparent_scene_is_left_whole():
    data = torus_scene().to_data()
    data.logit_opacities[:] = -8.0
    assert floater_mask(data).all()
