"""model_pbr.ply: a standard 3DGS .ply (any splat viewer opens it) with PBR fields appended.

Extra float32 vertex properties, all activated values in [0,1] (not logits):

    albedo_0 albedo_1 albedo_2   linear base colour (R, G, B)
    roughness                    perceptual roughness (GGX alpha = roughness^2)
    metallic                     metalness of the metallic-roughness workflow
    progress                     distillation progress a of Ye et al. 2024 (1: the physical
                                 model explains the Gaussian's pixels; 0: the radiance colour does)

The radiance colour stays in f_dc_* / f_rest_* as in 3DGS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from renderers.gaussian.ply import SplatFormatError, _read_plydata, load_ply, save_ply

PBR_FIELDS = {"albedo": ["albedo_0", "albedo_1", "albedo_2"], "roughness": ["roughness"],
              "metallic": ["metallic"], "progress": ["progress"]}


def save_pbr_ply(path: str | Path, scene) -> Path:
    """Write a PBRGaussianScene as model_pbr.ply (fields in the module docstring)."""
    extra = {}
    for name, fields in PBR_FIELDS.items():
        values = scene.attribute(name).detach().float().cpu().numpy()
        for i, field in enumerate(fields):
            extra[field] = values[:, i]
    return save_ply(path, scene.to_data(), extra)


def load_pbr_attributes(path: str | Path) -> dict[str, torch.Tensor]:
    """{albedo [N,3], roughness/metallic/progress [N,1]} in [0,1] from a model_pbr.ply; SplatFormatError if absent."""
    vertex = _read_plydata(Path(path))["vertex"]
    names = {p.name for p in vertex.properties}
    missing = [f for fields in PBR_FIELDS.values() for f in fields if f not in names]
    if missing:
        raise SplatFormatError(f"{path} has no PBR fields ({', '.join(missing)}); it is a plain 3DGS .ply")
    return {name: torch.from_numpy(np.stack([np.asarray(vertex[f], dtype=np.float32) for f in fields], 1))
            for name, fields in PBR_FIELDS.items()}


def load_pbr_scene(path: str | Path, cfg=None, pbr=None):
    """A PBRGaussianScene from a model_pbr.ply (the environment stays at its initial value)."""
    from renderers.gaussian.pbr import PBRGaussianScene

    data = load_ply(path)
    attributes = load_pbr_attributes(path)
    scene = PBRGaussianScene.from_data(data, cfg)
    if pbr is not None:
        scene.pbr_cfg = pbr
    scene._add_pbr_params()
    for name, value in attributes.items():
        scene.set_attribute(name, value)
    return scene
