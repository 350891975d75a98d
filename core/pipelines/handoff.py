"""Hand-offs between pipeline stages: build a stage's scene, fresh or converted from the
previous stage's (radiance field -> DMTet -> mesh), and export the final one."""

from __future__ import annotations

from pathlib import Path

import torch

from core.cameras import Cameras


def _mesh_of(scene, iso=None):
    """A TriangleMesh (with vertex colours where the source has colour) from any scene;
    `iso` (IsoSurfaceConfig) sets how radiance fields are meshed."""
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
    raise TypeError(f"no mesh from a {type(scene).__name__}")


def build_scene(cfg, representation: str, previous, device: torch.device):
    """The scene for a stage of `representation`: the previous stage's scene when it is of
    the same kind (training continues), converted from it otherwise, or fresh from `cfg`'s
    section of that name when there is no previous stage."""
    from core.export.sdf import dmtet_from_mesh
    from renderers.gaussian.scene import GaussianScene
    from renderers.mesh import DMTetScene, MeshScene
    from renderers.nerf import NerfScene

    kinds = {"gaussian": GaussianScene, "nerf": NerfScene, "dmtet": DMTetScene, "mesh": MeshScene}
    if previous is not None and isinstance(previous, kinds[representation]):
        return previous
    if representation == "gaussian":
        if previous is not None:
            raise ValueError("a Gaussian stage can only start a pipeline or follow a Gaussian stage")
        return GaussianScene(cfg.gaussian).to(device)
    if representation == "nerf":
        if previous is not None:
            raise ValueError("a NeRF stage can only start a pipeline or follow a NeRF stage")
        return NerfScene(cfg.nerf).to(device)
    if representation == "dmtet":
        if previous is None:
            return DMTetScene(cfg.dmtet, device=device)
        return dmtet_from_mesh(_mesh_of(previous, cfg.handoff).to("cpu"), cfg.dmtet).to(device)
    if previous is None:
        from renderers.mesh import TriangleMesh

        import trimesh

        sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
        return MeshScene(TriangleMesh.from_trimesh(sphere), cfg.mesh).to(device)
    return MeshScene(_mesh_of(previous, cfg.handoff), cfg.mesh).to(device)


def export_final(scene, out: Path, cameras: Cameras | None, formats: tuple[str, ...] = ("ply", "glb"),
                 options=None) -> dict:
    """Write the final scene as `model.<fmt>` for each format it supports and a turntable;
    `options` (core.export.assets.ExportOptions) sizes meshing and baking."""
    import dataclasses

    from core.export.assets import export_scene
    from core.export.floaters import remove_floaters
    from core.export.video import turntable
    from renderers.gaussian.scene import GaussianScene

    if isinstance(scene, GaussianScene) and options is not None and options.remove_floaters:
        # once for every format and the turntable
        scene = remove_floaters(scene, options.floaters)
        options = dataclasses.replace(options, remove_floaters=False)
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
