"""Relighting test scenes with known answers: procedural-world objects with known albedo,
roughness and metallic, rendered with the project's mesh rasteriser and split-sum PBR
shading under HDR environments A (train and test views) and B, C (relighting ground truth).

Layout (Blender / NeRF-synthetic, readable by `scorelift relight --data`):

    transforms_train.json  train/r_*.png            RGBA under A
    transforms_test.json   test/r_*.png             RGBA under A (novel views)
    transforms_test_B.json test_B/r_*.png           the test cameras under B (and _C under C)
    env_A.hdr env_B.hdr env_C.hdr (+ .npy)          the environments (Blender mapping)
    gt/<albedo|normal|roughness|metallic>/r_*.png   test-view ground-truth maps (albedo
                                                    sRGB-encoded, normal (n + 1) / 2 world)
    gt.npz                                          the same maps as float arrays [V,H,W,C]
                                                    (albedo linear, normal unit, mask coverage)

Shading is what the deferred shader computes (GGX split sum + SH irradiance, no
inter-reflections) on the exact surface, displayed as linear clipped to [0,1] then sRGB;
2x supersampled and box-filtered. Scenes with `shadows` add what that model cannot explain:
each sun lobe's light is masked by its ray-cast visibility (hard self-shadows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.cameras import Cameras, save_nerf_synthetic, spherical_cameras

ENVIRONMENTS = ("A", "B", "C")


def _lobe(w: Tensor, direction, sharpness: float) -> Tensor:
    d = torch.tensor(direction, dtype=torch.float32)
    d = d / d.norm()
    return torch.exp(sharpness * ((w * d).sum(-1, keepdim=True) - 1))


def environment_parts(name: str, height: int = 32) -> list[tuple[Tensor, tuple[float, float, float] | None]]:
    """Environment A, B or C as parts [(map [H,2H,3], sun direction or None for the sky)]; their sum is the map."""
    from renderers.shading.envmap import equirect_directions

    w = equirect_directions(height)
    up = w[..., 2:3].clamp_min(0)
    if name == "A":  # neutral daylight: white sun high on +X+Y, grey-blue sky, dark ground
        sky = 0.35 + 0.35 * up * torch.tensor([0.8, 0.9, 1.0]) - 0.15 * (-w[..., 2:3]).clamp_min(0)
        suns = [(6.0, (0.5, 0.4, 0.75), 12.0, (1.0, 0.97, 0.92))]
    elif name == "B":  # warm low sun from -Y, dim sky
        sky = 0.2 + 0.25 * up * torch.tensor([0.9, 0.8, 0.7])
        suns = [(8.0, (-0.2, -0.9, 0.35), 10.0, (1.0, 0.75, 0.45))]
    elif name == "C":  # two coloured lights: cyan from -X above, magenta from +Y low
        sky = torch.full_like(w, 0.15)
        suns = [(5.0, (-0.7, 0.1, 0.7), 8.0, (0.4, 0.9, 1.0)), (4.0, (0.1, 0.9, 0.2), 8.0, (1.0, 0.4, 0.8))]
    else:
        raise ValueError(f"unknown environment {name!r}; use one of {ENVIRONMENTS}")
    parts = [(sky.expand_as(w).clone(), None)]
    for power, direction, sharpness, colour in suns:
        parts.append((power * _lobe(w, direction, sharpness) * torch.tensor(colour), direction))
    return parts


def environment(name: str, height: int = 32) -> Tensor:
    """[H,2H,3] linear HDR equirect map of environment A, B or C (smooth skies with sun lobes)."""
    return sum(part for part, _ in environment_parts(name, height))


@dataclass
class SceneSpec:
    """One test object: procedural shape/colour/pattern words and its material."""

    name: str
    shape: str
    color: str
    pattern: str = "plain"
    roughness: float = 0.5
    metallic: float = 0.0
    shadows: bool = False   # suns cast self-shadows: light the physical model cannot explain


SCENES = {
    "red_cube": SceneSpec("red_cube", "cube", "red", "striped", roughness=0.35, metallic=0.0),
    "gold_torus": SceneSpec("gold_torus", "torus", "yellow", "plain", roughness=0.3, metallic=1.0),
    "blue_sphere": SceneSpec("blue_sphere", "sphere", "blue", "checkered", roughness=0.6, metallic=0.0),
    "shadowed_torus": SceneSpec("shadowed_torus", "torus", "orange", "striped", roughness=0.4, metallic=0.0,
                                shadows=True),
}


def sun_visibility(vertices: Tensor, faces: Tensor, points: Tensor, normals: Tensor, direction,
                   chunk: int = 512) -> Tensor:
    """[N,1] 1 where the ray from each surface point [N,3] toward the sun leaves the mesh unblocked,
    else 0: Moller-Trumbore against every face, the start lifted off the surface along its normal."""
    d = torch.tensor(direction, dtype=torch.float32)
    d = d / d.norm()
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    e1, e2 = v1 - v0, v2 - v0
    p = torch.cross(d.expand_as(e2), e2, dim=-1)
    det = (e1 * p).sum(-1)
    ok = det.abs() > 1e-9
    inv = torch.where(ok, 1 / det, torch.zeros_like(det))
    out = []
    for start in range(0, len(points), chunk):
        o = points[start:start + chunk] + 1e-3 * normals[start:start + chunk]
        t_vec = o[:, None] - v0[None]                                   # [n,F,3]
        u = (t_vec * p[None]).sum(-1) * inv
        q_cross = torch.cross(t_vec, e1[None].expand_as(t_vec), dim=-1)
        v = (q_cross * d).sum(-1) * inv
        t = (q_cross * e2[None]).sum(-1) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-4)
        out.append((~hit.any(-1)).float())
    return torch.cat(out)[:, None]


def _object(spec: SceneSpec):
    from core.data.views import procedural_object

    obj = procedural_object(spec.shape, spec.color, "matte", spec.pattern)
    return replace(obj, roughness=spec.roughness, metallic=spec.metallic)


@torch.no_grad()
def render_ground_truth(spec: SceneSpec, cameras: Cameras, envs: dict[str, list], supersample: int = 2,
                        detail: int = 32) -> dict[str, Tensor]:
    """{"rgb_<env>": [B,H,W,3] display colours (straight), "alpha", "albedo" (linear), "normal",
    "roughness", "metallic"} of the object seen by `cameras`, box-filtered from `supersample`x.

    envs: {name: environment_parts(...)}; with spec.shadows each sun part's light is masked by
    its visibility from the surface point (hard self-shadows), the sky's is not."""
    from core.data.procedural_render import _pattern_mask, spec_mesh
    from renderers.mesh.mesh import vertex_normals
    from renderers.mesh.raster import interpolate, rasterize
    from renderers.shading import EnvironmentLight, shade, srgb_decode
    from renderers.shading.deferred import display_encode

    obj = _object(spec)
    mesh = spec_mesh(obj, detail)
    verts, faces = torch.from_numpy(mesh.vertices).float(), torch.from_numpy(mesh.faces).long()
    B, H, W = len(cameras), cameras.height, cameras.width
    hi = cameras.resized(W * supersample, H * supersample)
    rast = rasterize(verts, faces, hi)
    attrs = interpolate(torch.cat([verts, vertex_normals(verts, faces)], -1), rast, dense=False)
    pos, normal = attrs[:, :3], F.normalize(attrs[:, 3:], dim=-1)
    sample = rast.batch
    z = verts[:, 2]
    z_range = torch.tensor([[float(z.min()), float(z.max())]]).expand(B, 2)
    pattern = _pattern_mask(pos, torch.zeros_like(sample), [obj], z_range[:1])
    albedo = srgb_decode(torch.where(pattern[:, None], torch.tensor(obj.secondary_rgb), torch.tensor(obj.rgb)))
    view = F.normalize(cameras.positions[sample] - pos, dim=-1)
    maps = {"albedo": albedo, "normal": normal, "roughness": torch.full_like(albedo[:, :1], spec.roughness),
            "metallic": torch.full_like(albedo[:, :1], spec.metallic)}
    for key, parts in envs.items():
        if not spec.shadows:
            parts = [(sum(part for part, _ in parts), None)]
        radiance = 0.0
        for part, sun in parts:
            light = EnvironmentLight(part, levels=6, samples=128)
            lit = shade(normal, view, albedo, spec.roughness, spec.metallic, light)
            if sun is not None:
                lit = lit * sun_visibility(verts, faces, pos, normal, sun)
            radiance = radiance + lit
        maps[f"rgb_{key}"] = display_encode(radiance)
    mask = rast.mask

    def pool(x: Tensor) -> Tensor:
        return F.avg_pool2d(x.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)

    alpha = pool(mask)
    out = {"alpha": alpha}
    for key, value in maps.items():
        premultiplied = pool(rast.to_dense(value))
        out[key] = premultiplied / alpha.clamp_min(1e-6) * (alpha > 0)
    out["normal"] = F.normalize(out["normal"], dim=-1) * (alpha > 0)
    return out


def scene_cameras(n: int, size: int, seed: int, radius: float = 2.6, fov: float = 40.0) -> Cameras:
    """n cameras on a golden-angle spiral over elevations -10..60 degrees (offset by `seed`)."""
    i = torch.arange(n, dtype=torch.float32)
    azimuth = (i * 180.0 * (3 - math.sqrt(5)) + 37.0 * seed) % 360.0 - 180.0
    elevation = -10.0 + 70.0 * ((i + 0.5 + 0.37 * seed) % n) / n
    return spherical_cameras(elevation, azimuth, torch.full_like(i, radius), torch.full_like(i, fov), size, size)


def write_relight_scene(out_dir: str | Path, spec: SceneSpec, n_train: int = 32, n_test: int = 8, size: int = 64,
                        env_height: int = 32) -> Path:
    """Write one scene in the layout of the module docstring; returns `out_dir`."""
    from core.export.video import write_png
    from renderers.shading.envmap_files import write_envmap
    from renderers.shading.tonemap import srgb_encode

    out_dir = Path(out_dir)
    envs = {name: environment_parts(name, env_height) for name in ENVIRONMENTS}
    for name in ENVIRONMENTS:
        env = environment(name, env_height).numpy()
        write_envmap(out_dir / f"env_{name}.hdr", env)
        write_envmap(out_dir / f"env_{name}.npy", env)

    def write_split(folder: str, cams: Cameras, rgb: Tensor, alpha: Tensor, transforms: str) -> list[str]:
        names = [f"./{folder}/r_{i:03d}" for i in range(len(cams))]
        for i, name in enumerate(names):
            write_png(out_dir / f"{name}.png", torch.cat([rgb[i], alpha[i]], -1))
        save_nerf_synthetic(out_dir / transforms, cams, names)
        return names

    train = scene_cameras(n_train, size, seed=0)
    gt = render_ground_truth(spec, train, {"A": envs["A"]})
    write_split("train", train, gt["rgb_A"], gt["alpha"], "transforms_train.json")
    test = scene_cameras(n_test, size, seed=1)
    gt = render_ground_truth(spec, test, envs)
    write_split("test", test, gt["rgb_A"], gt["alpha"], "transforms_test.json")
    for name in ("B", "C"):
        write_split(f"test_{name}", test, gt[f"rgb_{name}"], gt["alpha"], f"transforms_test_{name}.json")
    images = {"albedo": srgb_encode(gt["albedo"]), "normal": (gt["normal"] + 1) / 2,
              "roughness": gt["roughness"].expand(-1, -1, -1, 3), "metallic": gt["metallic"].expand(-1, -1, -1, 3)}
    for key, image in images.items():
        for i in range(len(test)):
            write_png(out_dir / "gt" / key / f"r_{i:03d}.png", torch.cat([image[i], gt["alpha"][i]], -1))
    np.savez_compressed(out_dir / "gt.npz", **{k: v.numpy() for k, v in gt.items()})
    return out_dir
