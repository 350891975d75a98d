"""Explicit triangle meshes and DMTet, with a differentiable torch rasteriser (nvdiffrast on CUDA when installed).

    mesh = TriangleMesh.from_trimesh(trimesh.load("a.obj"))
    out = render_mesh(mesh, cameras)              # RenderOutput; G-buffer in out.extras
    scene = MeshScene(mesh, MeshSceneConfig(learn=("offsets", "texture")))
    scene = DMTetScene(DMTetSceneConfig(resolution=64)); scene.init_from_sdf(fn)
"""

from .antialias import antialias, face_neighbours
from .dmtet import DMTetScene, DMTetSceneConfig
from .mesh import TriangleMesh, laplacian_smoothness, vertex_normals
from .raster import Rasterization, camera_space, interpolate, pixel_rays, rasterize
from .render import MeshRenderConfig, render_mesh
from .scene import MeshScene, MeshSceneConfig
from .tets import marching_tets, tet_grid
from .texture import sample_texture

__all__ = [
    "DMTetScene", "DMTetSceneConfig", "MeshRenderConfig", "MeshScene", "MeshSceneConfig", "Rasterization",
    "TriangleMesh", "antialias", "camera_space", "face_neighbours", "interpolate", "laplacian_smoothness",
    "marching_tets", "pixel_rays", "rasterize", "render_mesh", "sample_texture", "tet_grid", "vertex_normals",
]
