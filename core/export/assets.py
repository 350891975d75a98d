"""Any asset or run folder as a Scene, and any Scene written as glb | obj | ply | splat.

load_scene(path):
  .splat, 3DGS .ply            -> GaussianScene
  mesh .ply (has faces), .glb, .gltf, .obj
                               -> MeshScene (vertex colours or UV texture + PBR maps). Mesh files
                                  are read as +Y up (glTF's axes, and what core.export.mesh_io
                                  writes) and turned into scorelift's +Z-up world.
  .pt                          -> NerfScene (NerfScene.export's checkpoint) or DMTetScene (the
                                  same layout, {"config", "state_dict"}, with an "sdf" tensor)
  folder                       -> its model.* (a `scorelift reconstruct` run holds model.ply)

export_scene(scene, path, fmt):
  GaussianScene  ply/splat: the splats as they are; glb/obj: Gaussians -> mesh -> baked texture
  NerfScene      glb/obj: NeRF -> mesh -> texture of the colour field at the texels (bake_field);
                 ply: that mesh with vertex colours
  MeshScene, DMTetScene: the mesh as it is (textures when it has them)
A combination that cannot exist (a .splat of a mesh) raises AssetError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import MissingFileError, UserError
from core.export.bake import BakeConfig, bake, bake_field
from core.export.extract import IsoSurfaceConfig
from core.export.floaters import FloaterConfig, remove_floaters
from renderers.mesh import TriangleMesh

FORMATS = ("glb", "obj", "ply", "splat")
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply")
# Looked for in a run folder, in this order.
MODEL_NAMES = ("model.ply", "model.splat", "model.glb", "model.obj", "model.pt")


class AssetError(UserError):
    """An asset that cannot be read, or a format this source cannot be written as; the message says why."""


@dataclass
class ExportOptions:
    """Settings of the conversions export_scene may run."""

    resolution: int = 128  # iso-surface grid nodes along the longest side
    texture_size: int = 1024
    view_size: int | None = None  # bake renders (None: half the texture size, in 64..512)
    # Decimate extracted meshes to at most this many faces (None: keep all). A 128-node grid
    # gives ~150k faces; unwrapping and baking them takes minutes on a CPU, 50k a fraction.
    target_faces: int | None = 50_000
    # Gaussians: drop near-transparent ones and clumps away from the object before writing any
    # format (core.export.floaters). For generated single objects (the distillation pipelines
    # turn it on); off here, since a reconstructed scene is many separate things.
    remove_floaters: bool = False
    floaters: FloaterConfig = field(default_factory=FloaterConfig)


# --- loading ---------------------------------------------------------------------------------


def resolve_asset(path: str | Path) -> Path:
    """The asset file `path` names: itself, or the model.* inside a run folder."""
    path = Path(path)
    if path.is_dir():
        for name in MODEL_NAMES:
            if (path / name).is_file():
                return path / name
        raise AssetError(f"{path} is a folder without a model file ({', '.join(MODEL_NAMES)}); "
                         "give a run folder or an asset file")
    if not path.is_file():
        raise MissingFileError(f"asset not found: {path}")
    return path


def load_scene(path: str | Path):
    """A Scene for an asset file or run folder (table in the module docstring)."""
    from renderers.gaussian.ply import SplatFormatError
    from renderers.gaussian.scene import GaussianScene

    path = resolve_asset(path)
    suffix = path.suffix.lower()
    if suffix == ".splat":
        return GaussianScene.load(path)
    if suffix == ".ply":
        try:
            return GaussianScene.load(path)
        except SplatFormatError as e:
            if not _ply_has_faces(path):
                raise AssetError(f"{e}; and it has no faces, so it is no mesh either") from None
        return mesh_scene(load_mesh(path))
    if suffix in (".glb", ".gltf", ".obj"):
        return mesh_scene(load_mesh(path))
    if suffix == ".pt":
        return _load_checkpoint(path)
    raise AssetError(f"{path}: unknown asset type '{suffix}'; expected .ply, .splat, .glb, .gltf, .obj, .pt "
                     "or a run folder")


def _ply_has_faces(path: Path) -> bool:
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(path))
    except Exception:  # unreadable: the splat reader's message already says so
        return False
    return "face" in ply and ply["face"].count > 0


def load_mesh(path: str | Path) -> TriangleMesh:
    """A TriangleMesh from a .glb/.gltf/.obj/.ply file, turned from +Y up to scorelift's +Z up."""
    import trimesh

    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as e:  # trimesh raises many kinds for a bad file
        raise AssetError(f"{path} is not a readable mesh: {e}") from None
    if isinstance(loaded, trimesh.Scene):
        # the scene's own geometry keeps glTF COLOR_0, which copies, Scene.dump and force="mesh" drop
        for geometry in loaded.geometry.values():
            if isinstance(geometry, trimesh.Trimesh):
                _gltf_vertex_colors(geometry)
        parts = [loaded.geometry[name].copy().apply_transform(transform)
                 for node in loaded.graph.nodes_geometry
                 for transform, name in [loaded.graph[node]]
                 if isinstance(loaded.geometry[name], trimesh.Trimesh)]
        loaded = parts[0] if len(parts) == 1 else trimesh.util.concatenate(parts) if parts else None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise AssetError(f"{path} holds no triangles")
    mesh = TriangleMesh.from_trimesh(loaded)
    # (x, y, z) in +Y-up files is (y, z, x) in our world (inverse of mesh_io's axis swap)
    return mesh.with_vertices(mesh.vertices[:, [2, 0, 1]].contiguous())


def _gltf_vertex_colors(mesh) -> None:
    """Turn glTF's COLOR_0 (linear, kept aside by trimesh when a material exists) into display
    (sRGB) vertex colours, as TriangleMesh holds them, when the mesh has no texture."""
    import trimesh

    visual = mesh.visual
    color = getattr(visual, "vertex_attributes", {}).get("color") if visual.kind == "texture" else None
    if color is None or getattr(visual, "uv", None) is not None or len(color) != len(mesh.vertices):
        return
    color = np.asarray(color, dtype=np.float64)
    if color.max() > 1.0:  # normalised integer colours arrive as 0..255 or 0..65535
        color = color / (255.0 if color.max() <= 255 else 65535.0)
    rgb = np.clip(color[:, :3], 0, 1)
    rgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * rgb ** (1 / 2.4) - 0.055)  # IEC 61966-2-1 encode
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=(rgb * 255 + 0.5).astype(np.uint8))


def mesh_scene(mesh: TriangleMesh):
    from renderers.mesh import MeshScene, MeshSceneConfig

    return MeshScene(mesh, MeshSceneConfig(learn=()))


def _load_checkpoint(path: Path):
    from core.config import from_dict
    from renderers.mesh import DMTetScene, DMTetSceneConfig
    from renderers.nerf import NerfConfig, NerfScene

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AssetError(f"{path} is not a readable torch checkpoint: {e}") from None
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= set(checkpoint):
        raise AssetError(f"{path} is a checkpoint without 'config' and 'state_dict'; expected one written by "
                         "NerfScene.export (or the same layout for a DMTetScene)")
    if "sdf" in checkpoint["state_dict"]:
        scene = DMTetScene(from_dict(DMTetSceneConfig, checkpoint["config"]))
    else:
        scene = NerfScene(from_dict(NerfConfig, checkpoint["config"]))
    scene.load_state_dict(checkpoint["state_dict"])
    return scene


# --- writing ---------------------------------------------------------------------------------


def export_scene(scene, path: str | Path, fmt: str, options: ExportOptions | None = None) -> Path:
    """Write `scene` to `path` as fmt (glb | obj | ply | splat); returns the path written."""
    from renderers.gaussian.scene import GaussianScene
    from renderers.mesh import DMTetScene, MeshScene
    from renderers.nerf import NerfScene

    options = options or ExportOptions()
    if fmt not in FORMATS:
        raise AssetError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    kind = type(scene).__name__
    if isinstance(scene, GaussianScene):
        if options.remove_floaters:
            scene = remove_floaters(scene, options.floaters)
        if fmt in ("ply", "splat"):
            return scene.export(path)
        return write_mesh(bake(mesh_of(scene, _iso_config(options)), scene, _bake_config(options)), path, fmt)
    if fmt == "splat":
        raise AssetError(f"a {kind} cannot be written as splat (only Gaussians can); choose glb, obj or ply")
    if isinstance(scene, NerfScene):
        mesh = mesh_of(scene, _iso_config(options))
        if fmt != "ply":
            mesh = bake_field(mesh, _nerf_color_fn(scene), options.texture_size)
        return write_mesh(mesh, path, fmt)
    if isinstance(scene, (MeshScene, DMTetScene)):
        return write_mesh(mesh_of(scene), path, fmt)
    raise AssetError(f"no export for a {kind}")


def _nerf_color_fn(scene):
    """The field's colour at surface points [N,3], seen looking against their normals [N,3]."""

    def color_fn(points, normals):
        return scene.color(points.to(scene.device), -normals.to(scene.device))

    return color_fn


def _iso_config(options: ExportOptions) -> IsoSurfaceConfig:
    return IsoSurfaceConfig(resolution=options.resolution, target_faces=options.target_faces)


def _bake_config(options: ExportOptions) -> BakeConfig:
    view_size = options.view_size or min(512, max(64, options.texture_size // 2))
    return BakeConfig(texture_size=options.texture_size, view_size=view_size)


def mesh_of(scene, iso: IsoSurfaceConfig | None = None) -> TriangleMesh:
    """The surface of any scene as a TriangleMesh (vertex colours where the scene has colour):
    radiance fields (Gaussians, NeRF) are meshed with `iso`, meshes and DMTet grids give the
    surface they hold. The one place that knows how each representation becomes a mesh."""
    from core.export.gaussians_to_mesh import gaussians_to_mesh
    from core.export.nerf_to_mesh import nerf_to_mesh
    from renderers.gaussian.scene import GaussianScene
    from renderers.mesh import DMTetScene, MeshScene
    from renderers.nerf import NerfScene

    if isinstance(scene, GaussianScene):
        return gaussians_to_mesh(scene, iso)
    if isinstance(scene, NerfScene):
        return nerf_to_mesh(scene, iso)
    if isinstance(scene, DMTetScene):
        return scene.extract_mesh().detach()
    if isinstance(scene, MeshScene):
        return scene.mesh().detach()
    raise AssetError(f"no mesh from a {type(scene).__name__}")


def write_mesh(mesh: TriangleMesh, path: str | Path, fmt: str) -> Path:
    """Write a TriangleMesh as glb | obj | ply with core.export.mesh_io (+Y up). A textured mesh
    keeps its textures in glb/obj; a .ply gets the texture sampled at its vertices."""
    from core.export.gltf import export_glb
    from core.export.mesh_io import export_obj, export_ply, pack_metallic_roughness
    from renderers.mesh import sample_texture

    mesh = mesh.detach().to("cpu")
    if mesh.uv is not None and mesh.uv_faces is not None:  # one uv per vertex: split seams
        corner = mesh.faces.reshape(-1)
        mesh = TriangleMesh(mesh.vertices[corner], torch.arange(len(corner)).view(-1, 3),
                            uv=mesh.uv[mesh.uv_faces.reshape(-1)], base_color=mesh.base_color,
                            roughness=mesh.roughness, metallic=mesh.metallic, normal_map=mesh.normal_map)
    path = Path(path)
    if path.suffix.lower() != f".{fmt}":
        path = path.with_suffix(f".{fmt}")
    vertices, faces = mesh.vertices.numpy(), mesh.faces.numpy()
    if fmt == "ply":
        colors = mesh.vertex_colors
        if colors is None and mesh.is_textured:
            colors = sample_texture(mesh.base_color, mesh.uv)
        return export_ply(path, vertices, faces, vertex_colors=None if colors is None else colors.numpy())
    kwargs = {}
    if mesh.is_textured:
        kwargs.update(uvs=mesh.uv.numpy(), base_color_texture=mesh.base_color.numpy())
        if mesh.roughness is not None or mesh.metallic is not None:
            size = (mesh.roughness if mesh.roughness is not None else mesh.metallic).shape[:2]
            roughness = _channel(mesh.roughness, size, 1.0)
            metallic = _channel(mesh.metallic, size, 0.0)
            kwargs["metallic_roughness_texture"] = pack_metallic_roughness(metallic, roughness)
    elif mesh.vertex_colors is not None:
        kwargs["vertex_colors"] = mesh.vertex_colors.numpy()
    writer = export_glb if fmt == "glb" else export_obj
    return writer(path, vertices, faces, **kwargs)


def _channel(texture, size: tuple[int, int], default: float) -> np.ndarray:
    """[H,W] numpy map at `size` from a [h,w,1] texture (resized) or a constant."""
    if texture is None:
        return np.full(size, default, dtype=np.float32)
    if tuple(texture.shape[:2]) != tuple(size):
        texture = F.interpolate(texture.permute(2, 0, 1)[None], size=size, mode="bilinear",
                                align_corners=False)[0].permute(1, 2, 0)
    return texture[..., 0].numpy()
