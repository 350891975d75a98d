"""UV unwrapping (xatlas) and texture baking from multi-view renders of any Scene.

Baking gathers, per texel: the texel's surface point and normal come from rasterising the
mesh in UV space (a camera facing the UV square: a plane parallel to the image projects
affinely, so the ordinary rasteriser gives exact texel barycentrics). Each view of the
source (Gaussians, NeRF, a mesh) is then sampled where the texel projects, if the texel
is visible there (its depth matches the baked mesh's own depth buffer: the depth test),
weighted by cos^2 of the angle between its normal and the view ray and kept only where the
source is opaque (alpha >= 0.5), and the views are averaged. Texels no view saw, and the
gutter around UV charts (so bilinear lookups and mipmaps do not bleed background), take
the value of the nearest baked texel (dilation).

Sources that render material channels in `extras` (a MeshScene with PBR maps gives
"base_color", "roughness", "metallic") have those baked too; otherwise the base colour is
the rendered rgb, un-premultiplied by alpha. Fields with a colour function (NeRF) can be
baked directly at the texels' surface points instead (`bake_field`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from core.cameras import Cameras, spherical_cameras
from renderers.mesh import TriangleMesh, interpolate, rasterize

MATERIAL_CHANNELS = {"roughness": 1, "metallic": 1}


@dataclass
class BakeConfig:
    """Texture size and the views the source is seen from."""

    texture_size: int = 1024
    view_size: int = 512  # source renders are view_size x view_size
    azimuths: int = 8  # cameras per elevation ring
    elevations: tuple[float, ...] = (-40.0, 0.0, 40.0)  # rings; plus one camera straight above and below
    chunk: int = 2  # views rendered per call (bounds memory)

    def __post_init__(self) -> None:
        if not 8 <= self.texture_size <= 8192 or not 8 <= self.view_size <= 8192:
            raise ValueError(f"texture_size and view_size must be in 8..8192, got {self.texture_size}, "
                             f"{self.view_size}")
        if self.azimuths < 1:
            raise ValueError(f"azimuths must be >= 1, got {self.azimuths}")


def unwrap(mesh: TriangleMesh) -> TriangleMesh:
    """The mesh with per-vertex UVs [V',2] in [0,1] from xatlas; vertices on chart seams are
    duplicated (V' >= V). Vertex colours follow their vertices; textures are dropped."""
    import xatlas

    vertices = mesh.vertices.detach().cpu().numpy().astype(np.float32)
    faces = mesh.faces.cpu().numpy().astype(np.uint32)
    mapping, indices, uvs = xatlas.parametrize(vertices, faces)
    mapping = torch.from_numpy(mapping.astype(np.int64))
    colors = None if mesh.vertex_colors is None else mesh.vertex_colors.detach().cpu()[mapping]
    return TriangleMesh(
        vertices=torch.from_numpy(vertices)[mapping], faces=torch.from_numpy(indices.astype(np.int64)),
        vertex_colors=colors, uv=torch.from_numpy(uvs.astype(np.float32)),
    )


def bake_cameras(cfg: BakeConfig, radius: float) -> Cameras:
    """Rings of cfg.azimuths cameras at cfg.elevations plus the two poles, framing a sphere of `radius`."""
    elevation = [e for e in cfg.elevations for _ in range(cfg.azimuths)] + [90.0, -90.0]
    azimuth = [a * 360.0 / cfg.azimuths + (ring % 2) * 180.0 / cfg.azimuths
               for ring in range(len(cfg.elevations)) for a in range(cfg.azimuths)] + [0.0, 0.0]
    distance = 2.5 * radius
    fov = 2 * np.degrees(np.arcsin(radius / distance)) * 1.1
    n = len(elevation)
    return spherical_cameras(torch.tensor(elevation), torch.tensor(azimuth), torch.full((n,), distance),
                             torch.full((n,), fov), cfg.view_size, cfg.view_size)


def texel_surface(mesh: TriangleMesh, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Which texels of a size x size texture the mesh covers, and where.

    Returns texel indices [N] (flat, row-major, row 0 at v = 1), world positions [N,3] and
    unit normals [N,3] of the covered texels' surface points.
    """
    if mesh.uv is None:
        raise ValueError("texel_surface needs a mesh with uv coordinates (unwrap it first)")
    uv = mesh.uv.detach().float().cpu()
    flat = torch.cat([uv * 2 - 1, torch.zeros(len(uv), 1)], dim=-1)  # the UV square on z = 0
    c2w = torch.eye(4)[None].clone()
    c2w[0, 2, 3] = 1.0  # one unit in front of the square, looking down -z
    K = torch.tensor([[[size / 2, 0.0, size / 2], [0.0, size / 2, size / 2], [0.0, 0.0, 1.0]]])
    rast = rasterize(flat, mesh.uv_indices().cpu(), Cameras(c2w, K, size, size), backend="torch")
    vertices = mesh.vertices.detach().float().cpu()
    faces = mesh.faces.cpu()
    position = interpolate(vertices, rast, faces=faces, dense=False)
    normal = interpolate(mesh.vertex_normals().detach().float().cpu(), rast, faces=faces, dense=False)
    return rast.pixel, position, F.normalize(normal, dim=-1)


def dilate(texture: Tensor, valid: Tensor) -> Tensor:
    """Fill texels where valid [H,W] is False with their nearest valid texel's value.

    texture [H,W,C]. One exact Euclidean distance transform (scipy) finds every texel's
    nearest valid texel, so chart gutters and unseen texels fill in one pass whatever their
    width. Returns the filled [H,W,C] texture (unchanged when nothing is valid).
    """
    from scipy.ndimage import distance_transform_edt

    if not valid.any() or valid.all():
        return texture
    _, (rows, cols) = distance_transform_edt(~valid.numpy(), return_indices=True)
    return texture[torch.from_numpy(rows), torch.from_numpy(cols)]


@torch.no_grad()
def bake(mesh: TriangleMesh, source, cfg: BakeConfig | None = None, progress: bool = True) -> TriangleMesh:
    """A textured copy of `mesh` (unwrapped first when it has no uv) whose base colour (and
    roughness/metallic when the source renders them) is baked from `source`'s renders.

    source: any Scene; it is rendered over a black background from `bake_cameras` (progress: a
    tqdm bar over the views).
    Returns a TriangleMesh with uv, base_color [S,S,3] and optional roughness/metallic [S,S,1].
    """
    cfg = cfg or BakeConfig()
    if mesh.uv is None:
        mesh = unwrap(mesh)
    mesh = mesh.detach().to("cpu")
    size = cfg.texture_size
    texel, position, normal = texel_surface(mesh, size)
    radius = float(mesh.vertices.norm(dim=-1).max()) * 1.05
    cameras = bake_cameras(cfg, radius)
    sums: dict[str, Tensor] = {}
    weight_sum = torch.zeros(len(texel))
    device = getattr(source, "device", torch.device("cpu"))
    for start in tqdm(range(0, len(cameras), cfg.chunk), desc="bake", disable=not progress, leave=False):
        views = cameras[start:start + cfg.chunk]
        out = source.render(views.to(device), torch.zeros(3, device=device))
        images = _material_images(out)
        depth = rasterize(mesh.vertices, mesh.faces, views, backend="torch").depth[..., 0]  # [B,H,W]
        for b in range(len(views)):
            pixel, weight = _visible_texels(views[b], position, normal, depth[b])
            if pixel is None:
                continue
            samples = {name: _sample(image[b], pixel) for name, image in images.items()}
            alpha = samples.pop("alpha")[:, 0]
            weight = weight * (alpha >= 0.5)
            if "base_color" not in samples:  # rgb over black is premultiplied
                samples["base_color"] = samples.pop("rgb") / alpha.clamp_min(1e-6)[:, None]
            samples.pop("rgb", None)
            for name, value in samples.items():
                sums.setdefault(name, torch.zeros(len(texel), value.shape[-1]))
                sums[name] += weight[:, None] * value
            weight_sum += weight
    seen = weight_sum > 0
    if not seen.any():
        raise ValueError("no texel is visible in any bake view: is the mesh inside the source's bound?")
    maps = {}
    for name, total in sums.items():
        texture = torch.zeros(size * size, total.shape[-1])
        texture[texel[seen]] = (total[seen] / weight_sum[seen, None]).clamp(0, 1)
        valid = torch.zeros(size * size, dtype=torch.bool)
        valid[texel[seen]] = True
        maps[name] = dilate(texture.view(size, size, -1), valid.view(size, size))
    return replace(mesh, vertex_colors=None, base_color=maps["base_color"], roughness=maps.get("roughness"),
                   metallic=maps.get("metallic"), normal_map=None)


@torch.no_grad()
def bake_field(mesh: TriangleMesh, color_fn, texture_size: int = 1024, chunk: int = 1 << 16) -> TriangleMesh:
    """A textured copy of `mesh` whose base colour is color_fn(points [N,3], normals [N,3]) -> rgb
    [N,3] in [0,1] at each texel's surface point (unwrapped first when it has no uv).

    For sources that are fields (a NeRF's colour head), one query per texel replaces the
    multi-view renders of `bake`: the same colour where the surface is sharp, at a small
    fraction of the cost (dozens of full-image volume renders take many minutes on a CPU).
    """
    if mesh.uv is None:
        mesh = unwrap(mesh)
    mesh = mesh.detach().to("cpu")
    texel, position, normal = texel_surface(mesh, texture_size)
    colors = torch.cat([color_fn(position[s:s + chunk], normal[s:s + chunk]).float().cpu()
                        for s in range(0, len(position), chunk)])
    texture = torch.zeros(texture_size * texture_size, 3)
    texture[texel] = colors.clamp(0, 1)
    valid = torch.zeros(texture_size * texture_size, dtype=torch.bool)
    valid[texel] = True
    base_color = dilate(texture.view(texture_size, texture_size, 3), valid.view(texture_size, texture_size))
    return replace(mesh, vertex_colors=None, base_color=base_color, roughness=None, metallic=None, normal_map=None)


def _material_images(out) -> dict[str, Tensor]:
    """[B,H,W,C] images to bake: alpha, rgb, and the material channels the source rendered."""
    images = {"alpha": out.alpha, "rgb": out.rgb}
    if "base_color" in out.extras and "mask" in out.extras:  # mesh sources: unlit albedo, 0 off the mesh
        images["base_color"] = out.extras["base_color"]
    for name in MATERIAL_CHANNELS:
        if name in out.extras:
            images[name] = out.extras[name]
    return {name: image.detach().float().cpu() for name, image in images.items()}


def _visible_texels(camera: Cameras, position: Tensor, normal: Tensor, depth: Tensor):
    """Pixel coordinates [N,2] (x, y; NaN-free) where each texel point lands in `camera` and its
    weight [N] (cos^2 to the camera, 0 when occluded, behind or off-image); (None, None) if none land."""
    viewmat = camera.viewmats()[0]
    cam = position @ viewmat[:3, :3].T + viewmat[:3, 3]  # OpenCV camera space, z forward
    z = cam[:, 2]
    K = camera.K[0]
    x = K[0, 0] * cam[:, 0] / z.clamp_min(1e-6) + K[0, 2]
    y = K[1, 1] * cam[:, 1] / z.clamp_min(1e-6) + K[1, 2]
    H, W = depth.shape
    on_image = (z > 1e-3) & (x >= 0) & (x < W) & (y >= 0) & (y < H)
    if not on_image.any():
        return None, None
    ix, iy = x.long().clamp(0, W - 1), y.long().clamp(0, H - 1)
    surface = depth[iy, ix]
    # depth test against the mesh's own z-buffer, with slack for a pixel's depth range
    slack = 2.0 * z / K[0, 0] + 1e-4
    visible = on_image & (surface > 0) & (z <= surface + slack)
    to_camera = F.normalize(camera.positions[0] - position, dim=-1)
    cosine = (normal * to_camera).sum(-1).clamp_min(0)
    return torch.stack([x, y], -1), cosine ** 2 * visible


def _sample(image: Tensor, pixel: Tensor) -> Tensor:
    """[N,C] bilinear samples of image [H,W,C] at pixel coordinates [N,2] (x, y; centres at +0.5)."""
    H, W, _ = image.shape
    grid = torch.stack([pixel[:, 0] / W * 2 - 1, pixel[:, 1] / H * 2 - 1], -1).view(1, 1, -1, 2)
    out = F.grid_sample(image.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[0, :, 0].t()
