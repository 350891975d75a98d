"""Hand-offs between pipeline stages: build a stage's scene, fresh or converted from the
previous stage's (radiance field -> DMTet -> mesh), and export the final one.

Each scene config type says, in one registry (`SCENE_KINDS`), which scene it builds, how it
builds one fresh and how it builds one from the previous stage's surface; the surface of
any scene comes from `core.export.assets.mesh_of`, the one place that knows how each
representation becomes a mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from core.cameras import Cameras
from core.config import ConfigError
from core.errors import UserError
from core.export.assets import mesh_of
from core.export.sdf import dmtet_from_mesh
from renderers.gaussian.scene import GaussianConfig, GaussianScene
from renderers.mesh import DMTetScene, DMTetSceneConfig, MeshScene, MeshSceneConfig, TriangleMesh
from renderers.nerf import NerfConfig, NerfScene


@dataclass(frozen=True)
class SceneKind:
    """scene: the class a stage of this config trains; fresh(cfg, device): one with nothing
    before it; from_mesh(mesh, cfg, device): one started at the previous stage's surface
    (None: this kind can only start a pipeline or continue a stage of the same kind)."""

    scene: type
    fresh: Callable
    from_mesh: Callable | None = None


def _sphere_mesh_scene(cfg: MeshSceneConfig, device: torch.device) -> MeshScene:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    return MeshScene(TriangleMesh.from_trimesh(sphere), cfg).to(device)


SCENE_KINDS: dict[type, SceneKind] = {
    GaussianConfig: SceneKind(GaussianScene, lambda cfg, device: GaussianScene(cfg).to(device)),
    NerfConfig: SceneKind(NerfScene, lambda cfg, device: NerfScene(cfg).to(device)),
    DMTetSceneConfig: SceneKind(DMTetScene, lambda cfg, device: DMTetScene(cfg, device=device),
                                lambda mesh, cfg, device: dmtet_from_mesh(mesh.to("cpu"), cfg).to(device)),
    MeshSceneConfig: SceneKind(MeshScene, _sphere_mesh_scene,
                               lambda mesh, cfg, device: MeshScene(mesh, cfg).to(device)),
}


def build_scene(cfg, representation: str, previous, device: torch.device):
    """The scene for a stage of `representation`: the previous stage's scene when it is of
    the same kind (training continues), converted from its surface otherwise (meshed with
    `cfg.handoff`), or fresh from `cfg`'s section of that name when there is no previous
    stage."""
    section = getattr(cfg, representation)
    kind = SCENE_KINDS[type(section)]
    if previous is None:
        return kind.fresh(section, device)
    if isinstance(previous, kind.scene):
        return previous
    if kind.from_mesh is None:
        raise ConfigError(f"a {representation} stage can only start a pipeline or follow a {representation} "
                          f"stage, not a {type(previous).__name__}")
    return kind.from_mesh(mesh_of(previous, cfg.handoff), section, device)


@torch.no_grad()
def check_not_empty(scene, threshold: float = 0.5, views: int = 8, size: int = 64) -> None:
    """Raise a UserError when `scene` renders no pixel with alpha >= `threshold` from `views`
    cameras around it (elevation 15 deg, radius 2.5): a distillation that ended with nothing,
    said plainly before an export fails on it (meshing needs alpha >= 0.5 somewhere)."""
    from core.cameras import orbit_cameras

    cams = orbit_cameras(views, 15.0, 2.5, 45.0, size, size).to(getattr(scene, "device", torch.device("cpu")))
    alpha = scene.render(cams, torch.ones(3, device=cams.device)).alpha
    if float(alpha.max()) < threshold:
        raise UserError(
            f"the generated object is empty: nothing renders with alpha >= {threshold} from {views} views around it. "
            "This happens to an object of the background's colour when every view is over that one colour "
            "(e.g. 'a white torus' with stages.0.background.kind=scene over white: the prior cannot tell it "
            "from background and the opacity regularisers remove it); use stages.0.background.kind=random "
            "(the built-in text presets' default) or weaker stages.0.regularisers")


def export_final(scene, out: Path, cameras: Cameras | None, formats: tuple[str, ...] = ("ply", "glb"),
                 options=None) -> dict:
    """Write the final scene as `model.<fmt>` for each format it supports and a turntable;
    `options` (core.export.assets.ExportOptions) sizes meshing and baking."""
    import dataclasses

    from core.export.assets import export_scene
    from core.export.floaters import remove_floaters
    from core.export.video import turntable

    if isinstance(scene, GaussianScene) and options is not None and options.remove_floaters:
        # once for every format and the turntable
        scene = remove_floaters(scene, options.floaters)
        options = dataclasses.replace(options, remove_floaters=False)
    check_not_empty(scene, 0.5 if {"glb", "obj"} & set(formats) else 0.05)
    paths: dict[str, Path | None] = {"config": out / "config.yaml"}
    for fmt in formats:
        if fmt == "splat" and not isinstance(scene, GaussianScene):
            continue
        paths[f"model_{fmt}"] = export_scene(scene, out / f"model.{fmt}", fmt, options)
    if cameras is not None:
        with torch.no_grad():
            result = turntable(scene, cameras, out / "turntable")
        paths["turntable"] = result.video
    return paths
