"""Test videos with ground truth: procedural objects in rigid motion before a textured static
background, seen by a panning, dollying camera.

The scene (world +Z up, units of the procedural world): a back wall in the plane y = WALL_Y,
a floor in z = FLOOR_Z and a few static pillars between (CRATES, for parallax), textured
with random-coloured blocks at two scales so that feature matching and optical flow have
corners everywhere; in front of them, objects from
the procedural world (`core/data/procedural_shapes`: its shapes and colour words, a
checkered pattern in object space, Lambert shading under a fixed world light) each moving
rigidly: a straight path in x plus a turn about its own vertical axis, paths crossing so that
one object passes in front of another. The camera at height CAMERA_Z looks along +Y, turns
(yaw) by `pan_deg` and slides along x by `dolly` over the clip, linearly in time.

Rendering is the project's mesh rasteriser (`renderers/mesh/raster.py`), all surfaces in one
mesh per frame, so the z-buffer gives correct occlusion for colour, instance masks and depth
alike. Colour is supersampled (`supersample` x `supersample` samples per pixel, box
filtered); masks and depth are the centre sample of each pixel (hence `supersample` odd), so
they are exact at pixel centres, where the tracks are measured.

Ground truth, with pixel coordinates in the OpenCV convention (the centre of the top-left
pixel at (0, 0); K is the OpenCV matrix of `core.data.video.intrinsics_opencv`):
- c2w [T,4,4]: camera-to-world, OpenGL/Blender convention as `core/cameras.py`.
- depth [T,H,W]: camera z-depth at pixel centres.
- object_poses [n,T,4,4]: object-to-world of each object (canonical mesh -> frame t).
- query points on a grid at t = 0, lifted with depth[0]: a background point stays put, an
  object point x_0 moves to pose_t pose_0^-1 x_0. tracks [N,T,2] is its projection in frame t;
  occluded [N,T] is True where it leaves the frame (outside [-0.5, W-0.5] x [-0.5, H-0.5] or
  behind the camera) or where the surface rendered at its nearest pixel hides it: nearer than
  the point by more than `occlusion_tolerance` of its depth (5%: above the depth change across
  half a pixel on the slanted floor at 64 px, below any object's thickness; this catches an
  object turning a point to its back), or nearer at all and of another owner (an object in
  front of the floor right where it stands on it is less than 5% nearer).

    python -m core.data.video_synth --out DIR --frames 24 --size 128

writes DIR/frames/00000.png..., DIR/masks/00000.png... (8-bit ids) and DIR/gt.npz.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.cameras import Cameras, look_at
from core.data.procedural import COLOR_RGB
from core.data.procedural_render import object_mesh
from core.data.procedural_shapes import box
from core.data.video import intrinsics_opencv
from renderers.mesh.mesh import vertex_normals
from renderers.mesh.raster import interpolate, rasterize

WALL_Y = 6.0
FLOOR_Z = -1.0
CAMERA_Z = 0.2
OBJECT_SHAPES = ["cube", "cylinder", "capsule", "pyramid", "sphere"]
OBJECT_COLORS = ["red", "blue", "yellow", "green", "orange", "purple"]
LIGHT_DIRECTION = (0.4, -0.6, 0.7)  # towards the light, world space
# (x, y, half width, half height) of the static pillars, behind the objects' paths
CRATES = [(-1.9, 4.4, 0.3, 0.7), (1.8, 4.8, 0.35, 0.9), (-0.5, 5.3, 0.3, 0.5), (0.7, 4.6, 0.25, 0.4)]


@dataclass
class SyntheticVideoConfig:
    """frames, width, height: the clip; fov_x_deg: horizontal field of view; pan_deg: total yaw
    of the camera over the clip; dolly: total sideways camera travel (world units; 0 = a pure
    rotation); num_objects >= 1; crates: static textured pillars (0-4) standing between the
    objects' paths and the wall, for depth variety (parallax); supersample: odd samples per
    pixel side; query_stride: grid step of the t = 0 query points in pixels; occlusion_tolerance: relative depth margin."""

    frames: int = 24
    width: int = 128
    height: int = 128
    fov_x_deg: float = 60.0
    pan_deg: float = 12.0
    dolly: float = 0.4
    num_objects: int = 2
    crates: int = 4
    supersample: int = 3
    query_stride: int = 4
    occlusion_tolerance: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.frames < 2 or self.width < 8 or self.height < 8 or self.num_objects < 1:
            raise ValueError("need at least 2 frames, 8x8 pixels and one object")
        if self.supersample < 1 or self.supersample % 2 == 0:
            raise ValueError(f"supersample must be odd (masks and depth are the centre sample), got {self.supersample}")


@dataclass
class SyntheticVideo:
    """A rendered clip and its ground truth (shapes in the module docstring).

    frames [T,H,W,3] float32 in [0,1]; masks [T,H,W] int64 (0 = background, objects 1..n);
    depth [T,H,W]; c2w [T,4,4]; K [3,3] OpenCV; object_poses [n,T,4,4]; object_vertices: the
    canonical mesh vertices [V_k,3] of each object; query_points [N,3] as (t, x, y);
    tracks [N,T,2]; occluded [N,T] bool; track_owner [N] (0 = background, else object id)."""

    frames: Tensor
    masks: Tensor
    depth: Tensor
    c2w: Tensor
    K: Tensor
    object_poses: Tensor
    object_vertices: list[Tensor]
    query_points: Tensor
    tracks: Tensor
    occluded: Tensor
    track_owner: Tensor


def camera_path(cfg: SyntheticVideoConfig) -> Tensor:
    """[T,4,4] OpenGL c2w: yaw from -pan/2 to +pan/2 (positive turns towards +x), x from -dolly/2 to +dolly/2."""
    s = torch.linspace(0.0, 1.0, cfg.frames)
    yaw = torch.deg2rad(cfg.pan_deg * (s - 0.5))
    eye = torch.stack([cfg.dolly * (s - 0.5), torch.zeros_like(s), torch.full_like(s, CAMERA_Z)], -1)
    forward = torch.stack([torch.sin(yaw), torch.cos(yaw), torch.zeros_like(s)], -1)
    return look_at(eye, eye + forward)


def _rigid(angle_rad: float, translation: tuple[float, float, float]) -> Tensor:
    """[4,4] rotation about +Z then translation."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return torch.tensor([[c, -s, 0, translation[0]], [s, c, 0, translation[1]], [0, 0, 1, translation[2]],
                         [0, 0, 0, 1]], dtype=torch.float32)


def _objects(cfg: SyntheticVideoConfig, rng: np.random.Generator):
    """Canonical vertices, faces, albedo pair and poses [T,4,4] of each object. Object k walks
    at depth y = 2.6 + 1.1 k, alternating direction, so consecutive objects cross."""
    out = []
    s = np.linspace(0.0, 1.0, cfg.frames)
    colours = rng.choice(OBJECT_COLORS, size=cfg.num_objects, replace=cfg.num_objects > len(OBJECT_COLORS))
    for k in range(cfg.num_objects):
        shape = str(rng.choice(OBJECT_SHAPES))
        mesh = object_mesh(shape, int(rng.integers(1 << 30)), 0.45, 12)
        verts = torch.from_numpy(mesh.vertices).float()
        direction = 1.0 if k % 2 == 0 else -1.0
        x0, x1 = -1.1 * direction + rng.uniform(-0.1, 0.1), 1.0 * direction + rng.uniform(-0.1, 0.1)
        y = 2.6 + 1.1 * k
        z = FLOOR_Z - float(verts[:, 2].min())  # resting on the floor
        spin = math.radians(rng.uniform(40, 80)) * direction
        poses = torch.stack([_rigid(spin * si, (x0 + (x1 - x0) * si, y, z)) for si in s])
        second = (0.95, 0.95, 0.95) if colours[k] != "white" else (0.45, 0.45, 0.45)
        out.append((verts, torch.from_numpy(mesh.faces), (COLOR_RGB[colours[k]], second), poses))
    return out


def _plane(origin, edge_u, edge_v, n: int) -> tuple[Tensor, Tensor]:
    """A tessellated parallelogram: vertices [(n+1)^2,3], faces [2n^2,3]."""
    u, v = torch.meshgrid(torch.linspace(0, 1, n + 1), torch.linspace(0, 1, n + 1), indexing="ij")
    verts = (torch.tensor(origin) + u[..., None] * torch.tensor(edge_u) + v[..., None] * torch.tensor(edge_v))
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    a = (i * (n + 1) + j).reshape(-1)
    b, c, d = a + n + 1, a + n + 2, a + 1
    return verts.reshape(-1, 3).float(), torch.cat([torch.stack([a, b, c], 1), torch.stack([a, c, d], 1)])


def _block_texture(coords: Tensor, tables: Tensor) -> Tensor:
    """Random-coloured blocks at cells of 0.9 and 0.3 units: coords [N,2] -> colour [N,3]."""
    colour = torch.zeros(coords.shape[0], 3)
    for table, cell, weight in zip(tables, (0.9, 0.3), (0.6, 0.4)):
        ij = torch.floor(coords / cell).long()
        index = (ij[:, 0] * 73856093 ^ ij[:, 1] * 19349663) % table.shape[0]
        colour += weight * table[index]
    return colour


def render_video(cfg: SyntheticVideoConfig) -> SyntheticVideo:
    """Render the clip of `cfg` and compute its ground truth (module docstring)."""
    rng = np.random.default_rng(cfg.seed)
    T, H, W, s = cfg.frames, cfg.height, cfg.width, cfg.supersample
    K = intrinsics_opencv(W, H, cfg.fov_x_deg)
    c2w = camera_path(cfg)
    K_cameras = K.clone()
    K_cameras[:2, 2] += 0.5  # Cameras put pixel centres at +0.5
    cameras = Cameras(c2w, K_cameras.expand(T, 3, 3).clone(), W, H)

    wall = _plane((-14.0, WALL_Y, FLOOR_Z), (28.0, 0.0, 0.0), (0.0, 0.0, 12.0), 16)
    floor = _plane((-14.0, -2.0, FLOOR_Z), (0.0, WALL_Y + 2.0, 0.0), (28.0, 0.0, 0.0), 16)
    objects = _objects(cfg, rng)
    crates = []
    for x, y, half_w, half_h in CRATES[:cfg.crates]:
        v, f = box(half_w, half_w, half_h, 4)
        crates.append((torch.from_numpy(v).float() + torch.tensor([x, y, FLOOR_Z + half_h]), torch.from_numpy(f)))
    first = 2 + len(crates)  # parts: wall, floor, crates, objects
    parts = [wall, floor] + crates + [(v, f) for v, f, _, _ in objects]
    offsets = np.cumsum([0] + [len(v) for v, _ in parts])
    faces = torch.cat([f + int(o) for (_, f), o in zip(parts, offsets[:-1])])
    face_owner = torch.cat([torch.full((len(f),), k - first + 1 if k >= first else 0)
                            for k, (_, f) in enumerate(parts)])
    face_part = torch.cat([torch.full((len(f),), k) for k, (_, f) in enumerate(parts)])
    object_poses = torch.stack([poses for _, _, _, poses in objects])  # [n,T,4,4]
    # per frame: world vertices (objects moved), and each vertex's canonical coordinates
    canonical = torch.cat([v for v, _ in parts])
    world = canonical.expand(T, -1, -1).clone()
    for k, (v, _, _, poses) in enumerate(objects):
        lo, hi = offsets[first + k], offsets[first + k + 1]
        world[:, lo:hi] = torch.einsum("tij,vj->tvi", poses[:, :3, :3], v) + poses[:, None, :3, 3]
    tables = torch.from_numpy(rng.uniform(0.05, 0.95, size=(2, 997, 3))).float()
    light = torch.tensor(LIGHT_DIRECTION) / torch.tensor(LIGHT_DIRECTION).norm()

    rgb, masks, depth = [], [], []
    hi_res = cameras.resized(W * s, H * s)
    for t in range(T):  # one frame at a time bounds memory at any size
        rast = rasterize(world[t:t + 1], faces, hi_res[t])
        pix_face = rast.face
        attrs = interpolate(torch.cat([world[t:t + 1], canonical[None], vertex_normals(world[t:t + 1], faces)], -1),
                            rast, dense=False)
        position, local, normal = attrs[:, :3], attrs[:, 3:6], attrs[:, 6:]
        part = face_part[pix_face]
        colour = torch.zeros_like(position)
        on_wall, on_floor = part == 0, part == 1
        colour[on_wall] = _block_texture(position[on_wall][:, [0, 2]], tables)
        colour[on_floor] = _block_texture(position[on_floor][:, [0, 1]] + 100.0, tables)
        on_crate = (part >= 2) & (part < first)
        crate_uv = torch.stack([position[on_crate][:, 0] + position[on_crate][:, 1], position[on_crate][:, 2]], -1)
        colour[on_crate] = _block_texture(crate_uv * 1.7 + 50.0, tables)
        for k, (_, _, (base, second), _) in enumerate(objects):
            here = part == first + k
            checks = torch.floor(local[here] / 0.18).long().sum(-1) % 2 == 1
            albedo = torch.where(checks[:, None], torch.tensor(second), torch.tensor(base))
            n = normal[here] / normal[here].norm(dim=-1, keepdim=True).clamp_min(1e-12)
            colour[here] = albedo * (0.35 + 0.65 * (n @ light).clamp_min(0))[:, None]
        image = rast.to_dense(colour)[0]
        rgb.append(F.avg_pool2d(image.permute(2, 0, 1)[None], s)[0].permute(1, 2, 0))
        centre = slice(s // 2, None, s)
        masks.append(rast.to_dense(face_owner[pix_face][:, None].float(), fill=0.0)[0, centre, centre, 0].long())
        depth.append(rast.depth[0, centre, centre, 0].detach())
    frames, masks, depth = torch.stack(rgb).clamp(0, 1), torch.stack(masks), torch.stack(depth)
    queries, tracks, occluded, owner = point_tracks(depth, masks, c2w, K, object_poses, cfg)
    return SyntheticVideo(frames, masks, depth, c2w, K, object_poses, [v for v, _, _, _ in objects],
                          queries, tracks, occluded, owner)


def _gl_to_cv(c2w: Tensor) -> Tensor:
    """OpenGL c2w [...,4,4] -> OpenCV world-to-camera [...,4,4] (camera y, z axes flipped)."""
    return torch.linalg.inv(c2w @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=c2w.dtype)))


def point_tracks(depth: Tensor, masks: Tensor, c2w: Tensor, K: Tensor, object_poses: Tensor,
                 cfg: SyntheticVideoConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Ground-truth tracks of grid queries at t = 0 (module docstring).

    depth [T,H,W], masks [T,H,W], c2w [T,4,4] OpenGL, K [3,3] OpenCV, object_poses [n,T,4,4].
    Returns query_points [N,3] (t, x, y), tracks [N,T,2], occluded [N,T] bool, owner [N].
    """
    T, H, W = depth.shape
    step = cfg.query_stride
    ys, xs = torch.meshgrid(torch.arange(step // 2, H, step), torch.arange(step // 2, W, step), indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    owner = masks[0, ys, xs]
    z = depth[0, ys, xs].double()
    w2c = _gl_to_cv(c2w.double())                                          # [T,4,4]
    K = K.double()
    cam0 = torch.stack([(xs - K[0, 2]) / K[0, 0] * z, (ys - K[1, 2]) / K[1, 1] * z, z], -1)
    world0 = (torch.linalg.inv(w2c[0]) @ torch.cat([cam0, torch.ones_like(z)[:, None]], -1).T).T  # [N,4]
    # motion of each point's owner from frame 0 to t: identity for the background
    motion = torch.eye(4, dtype=torch.float64).expand(len(owner), T, 4, 4).clone()
    poses = object_poses.double()
    for k in range(poses.shape[0]):
        mine = owner == k + 1
        motion[mine] = poses[k] @ torch.linalg.inv(poses[k, 0])
    world_t = torch.einsum("ntij,nj->nti", motion, world0)                 # [N,T,4]
    cam_t = torch.einsum("tij,ntj->nti", w2c, world_t)[..., :3]            # [N,T,3]
    zt = cam_t[..., 2]
    uv = torch.stack([K[0, 0] * cam_t[..., 0] / zt + K[0, 2], K[1, 1] * cam_t[..., 1] / zt + K[1, 2]], -1)
    outside = (zt <= 1e-6) | (uv[..., 0] < -0.5) | (uv[..., 0] > W - 0.5) | (uv[..., 1] < -0.5) | (uv[..., 1] > H - 0.5)
    col = uv[..., 0].round().long().clamp(0, W - 1)
    row = uv[..., 1].round().long().clamp(0, H - 1)
    seen = depth.double()[torch.arange(T)[None].expand_as(col), row, col]  # [N,T]
    seen_owner = masks[torch.arange(T)[None].expand_as(col), row, col]
    # another surface clearly in front; or another object's (or the background's) surface
    # in front at all, which catches points where an object touches the floor
    hidden = (seen > 0) & ((seen < zt * (1 - cfg.occlusion_tolerance)) | ((seen_owner != owner[:, None]) & (seen < zt)))
    queries = torch.stack([torch.zeros_like(z), xs.double(), ys.double()], -1)
    return queries.float(), uv.float(), outside | hidden, owner


def write_video(video: SyntheticVideo, out: str | Path) -> None:
    """DIR/frames/00000.png..., DIR/masks/00000.png... (8-bit ids) and DIR/gt.npz."""
    from PIL import Image

    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for t in range(video.frames.shape[0]):
        Image.fromarray((video.frames[t].numpy() * 255).round().astype(np.uint8)).save(out / "frames" / f"{t:05d}.png")
        Image.fromarray(video.masks[t].numpy().astype(np.uint8)).save(out / "masks" / f"{t:05d}.png")
    np.savez_compressed(
        out / "gt.npz", c2w=video.c2w.numpy(), K=video.K.numpy(), depth=video.depth.numpy(),
        object_poses=video.object_poses.numpy(), query_points=video.query_points.numpy(),
        tracks=video.tracks.numpy(), occluded=video.occluded.numpy(), track_owner=video.track_owner.numpy(),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=128, help="width and height in pixels")
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--pan", type=float, default=12.0, help="total camera yaw in degrees")
    parser.add_argument("--dolly", type=float, default=0.4, help="total sideways camera travel")
    parser.add_argument("--crates", type=int, default=4, help="static pillars for parallax (0-4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = SyntheticVideoConfig(frames=args.frames, width=args.size, height=args.size, num_objects=args.objects,
                               pan_deg=args.pan, dolly=args.dolly, crates=args.crates, seed=args.seed)
    write_video(render_video(cfg), args.out)


if __name__ == "__main__":
    main()
