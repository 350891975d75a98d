"""Cameras: the one camera type of scorelift, samplers, and convention conversions.

Conventions (DESIGN.md): `c2w` is camera-to-world in the OpenGL/Blender convention
(the camera looks down its -Z axis, +Y is up in the image), as in NeRF-synthetic
`transforms.json`. The world is +Z up and a generated object lives in the unit sphere.
Spherical camera coordinates: elevation is the angle above the XY plane, azimuth is
measured from +X towards +Y, so the camera at azimuth 0 sits on +X looking at the
origin ("front" view). gsplat wants OpenCV world-to-camera matrices; `c2w_to_viewmats`
is the only place that conversion happens.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from core.errors import MissingFileError, UserError

# OpenGL camera axes (x right, y up, z back) -> OpenCV axes (x right, y down, z forward).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass
class Cameras:
    """A batch of pinhole cameras sharing one image size.

    c2w: [B,4,4] camera-to-world, OpenGL convention.
    K:   [B,3,3] intrinsics in pixels (fx, fy, cx, cy), pixel centres at +0.5.
    """

    c2w: Tensor
    K: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.c2w.ndim != 3 or self.c2w.shape[1:] != (4, 4):
            raise ValueError(f"c2w must be [B,4,4], got {tuple(self.c2w.shape)}")
        if self.K.shape != (self.c2w.shape[0], 3, 3):
            raise ValueError(f"K must be [B,3,3] with B={self.c2w.shape[0]}, got {tuple(self.K.shape)}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> "Cameras":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Cameras(self.c2w[index], self.K[index], self.width, self.height)

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def to(self, device) -> "Cameras":
        return Cameras(self.c2w.to(device), self.K.to(device), self.width, self.height)

    def viewmats(self) -> Tensor:
        """[B,4,4] OpenCV world-to-camera matrices, as gsplat's `viewmats`."""
        return c2w_to_viewmats(self.c2w)

    @property
    def positions(self) -> Tensor:
        """[B,3] camera centres in world space."""
        return self.c2w[:, :3, 3]

    def spherical(self) -> tuple[Tensor, Tensor, Tensor]:
        """Elevation and azimuth in degrees and radius of each camera centre, each [B]."""
        p = self.positions
        radius = p.norm(dim=-1)
        elevation = torch.rad2deg(torch.asin((p[:, 2] / radius.clamp_min(1e-8)).clamp(-1, 1)))
        azimuth = torch.rad2deg(torch.atan2(p[:, 1], p[:, 0]))
        return elevation, azimuth, radius

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras rendering a different image size (intrinsics scaled)."""
        K = self.K.clone()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return Cameras(self.c2w, K, width, height)

    def rays(self) -> tuple[Tensor, Tensor]:
        """World-space rays through pixel centres.

        Returns origins [B,H,W,3] and unit directions [B,H,W,3].
        """
        B, H, W = len(self), self.height, self.width
        ys, xs = torch.meshgrid(
            torch.arange(H, device=self.device, dtype=self.c2w.dtype) + 0.5,
            torch.arange(W, device=self.device, dtype=self.c2w.dtype) + 0.5,
            indexing="ij",
        )
        fx, fy = self.K[:, 0, 0].view(B, 1, 1), self.K[:, 1, 1].view(B, 1, 1)
        cx, cy = self.K[:, 0, 2].view(B, 1, 1), self.K[:, 1, 2].view(B, 1, 1)
        # OpenGL camera: +x right, +y up, looking down -z.
        d_cam = torch.stack([(xs - cx) / fx, -(ys - cy) / fy, -torch.ones_like(xs).expand(B, H, W)], dim=-1)
        dirs = torch.einsum("bij,bhwj->bhwi", self.c2w[:, :3, :3], d_cam)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = self.positions.view(B, 1, 1, 3).expand(B, H, W, 3)
        return origins, dirs


def c2w_to_viewmats(c2w: Tensor) -> Tensor:
    """OpenGL camera-to-world [B,4,4] -> OpenCV world-to-camera [B,4,4] (gsplat's viewmats)."""
    c2w_cv = c2w @ _GL_TO_CV.to(c2w)
    return torch.linalg.inv(c2w_cv)


def focal_from_fov(fov_y_deg: Tensor | float, height: int) -> Tensor:
    """Focal length in pixels for a vertical field of view in degrees."""
    fov = torch.as_tensor(fov_y_deg, dtype=torch.float32)
    return 0.5 * height / torch.tan(torch.deg2rad(fov) / 2)


def intrinsics(fov_y_deg: Tensor | float, width: int, height: int) -> Tensor:
    """[B,3,3] pinhole intrinsics (square pixels, centred principal point) from fov_y [B] or scalar."""
    f = focal_from_fov(fov_y_deg, height).reshape(-1)
    K = torch.zeros(f.shape[0], 3, 3)
    K[:, 0, 0] = f
    K[:, 1, 1] = f
    K[:, 0, 2] = width / 2
    K[:, 1, 2] = height / 2
    K[:, 2, 2] = 1
    return K


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """OpenGL c2w [B,4,4] for cameras at `eye` [B,3] looking at `target` [B,3] (default origin).

    `up` defaults to world +Z; a camera looking straight along +-Z uses +Y as up instead.
    """
    eye = torch.as_tensor(eye, dtype=torch.float32).reshape(-1, 3)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target, dtype=eye.dtype).expand_as(eye)
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else torch.as_tensor(up, dtype=eye.dtype)
    up = up.to(eye).expand_as(eye).clone()
    forward = target - eye
    forward = forward / forward.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    degenerate = torch.cross(forward, up, dim=-1).norm(dim=-1) < 1e-6
    up[degenerate] = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device)
    right = torch.cross(forward, up, dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    cam_up = torch.cross(right, forward, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = cam_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = eye
    return c2w


def spherical_to_position(elevation_deg: Tensor, azimuth_deg: Tensor, radius: Tensor) -> Tensor:
    """[B,3] world positions from elevation/azimuth in degrees and radius, each [B]."""
    el, az = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack(
        [radius * torch.cos(el) * torch.cos(az), radius * torch.cos(el) * torch.sin(az), radius * torch.sin(el)],
        dim=-1,
    )


def spherical_cameras(
    elevation_deg: Tensor, azimuth_deg: Tensor, radius: Tensor, fov_y_deg: Tensor, width: int, height: int
) -> Cameras:
    """Cameras on spheres around the origin, all looking at it. Inputs are [B] tensors."""
    eye = spherical_to_position(elevation_deg.float(), azimuth_deg.float(), radius.float())
    return Cameras(look_at(eye), intrinsics(fov_y_deg, width, height).expand(len(eye), 3, 3).clone(), width, height)


def orbit_cameras(
    n: int,
    elevation_deg: float = 15.0,
    radius: float = 2.5,
    fov_y_deg: float = 45.0,
    width: int = 128,
    height: int = 128,
    azimuth_start_deg: float = 0.0,
) -> Cameras:
    """`n` cameras evenly spaced in azimuth on one circle (a turntable)."""
    az = azimuth_start_deg + torch.arange(n, dtype=torch.float32) * 360.0 / n
    return spherical_cameras(
        torch.full((n,), float(elevation_deg)), az, torch.full((n,), float(radius)),
        torch.full((n,), float(fov_y_deg)), width, height,
    )


@dataclass
class CameraSamplerConfig:
    """Random cameras on a sphere shell, as text-to-3D training samples them."""

    batch_size: int = 2
    width: int = 64
    height: int = 64
    elevation_range: tuple[float, float] = (-10.0, 60.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    radius_range: tuple[float, float] = (2.2, 2.8)
    fov_range: tuple[float, float] = (40.0, 50.0)


@dataclass
class RandomCameraSampler:
    """Draws `Cameras` uniformly in elevation/azimuth/radius/FOV ranges, deterministic per seed."""

    cfg: CameraSamplerConfig
    seed: int = 0
    _generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, step: int, width: int | None = None, height: int | None = None) -> Cameras:
        """One batch. `step` is accepted for schedules; the stream depends only on the seed and call count."""
        B = self.cfg.batch_size

        def uniform(lo_hi):
            lo, hi = lo_hi
            return lo + (hi - lo) * torch.rand(B, generator=self._generator)

        el, az = uniform(self.cfg.elevation_range), uniform(self.cfg.azimuth_range)
        r, fov = uniform(self.cfg.radius_range), uniform(self.cfg.fov_range)
        return spherical_cameras(el, az, r, fov, width or self.cfg.width, height or self.cfg.height)

    def state_dict(self) -> dict:
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._generator.set_state(state["generator"])


def load_nerf_synthetic(
    transforms_path: str | Path, width: int | None = None, height: int | None = None
) -> tuple[Cameras, list[str]]:
    """Cameras and frame `file_path`s from a NeRF-synthetic/Blender `transforms_*.json`.

    The image size comes from `w`/`h` in the file when present, else `width`/`height`
    (else 800x800, the NeRF-synthetic size); `width`/`height` given rescale the intrinsics.
    """
    path = Path(transforms_path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f"camera file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not frames or not isinstance(frames, list):
        raise UserError(f"{path} has no 'frames': expected a NeRF-synthetic transforms.json")
    try:  # every value below comes from the user's file: a wrong one is their mistake
        src_w = int(meta.get("w", width or 800))
        src_h = int(meta.get("h", height or 800))
        if "fl_x" in meta:
            fx = float(meta["fl_x"])
            fy = float(meta.get("fl_y", fx))
        elif "camera_angle_x" in meta:
            fx = 0.5 * src_w / math.tan(0.5 * float(meta["camera_angle_x"]))
            fy = 0.5 * src_h / math.tan(0.5 * float(meta["camera_angle_y"])) if "camera_angle_y" in meta else fx
        else:
            raise UserError(f"{path} has neither 'camera_angle_x' nor 'fl_x'")
        cx, cy = float(meta.get("cx", src_w / 2)), float(meta.get("cy", src_h / 2))
        c2w = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float32)
        names = [str(f.get("file_path", f"frame_{i:04d}")) for i, f in enumerate(frames)]
    except UserError:
        raise
    except KeyError:
        raise UserError(f"{path}: every frame needs a 'transform_matrix'") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: not a NeRF-synthetic transforms.json ({e})") from None
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise UserError(f"{path}: transform_matrix must be 4x4, got {tuple(c2w.shape[1:])}")
    K = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float32).expand(len(c2w), 3, 3).clone()
    cams = Cameras(c2w, K, src_w, src_h)
    if (width and width != src_w) or (height and height != src_h):
        cams = cams.resized(width or src_w, height or src_h)
    return cams, names


def save_nerf_synthetic(path: str | Path, cameras: Cameras, file_paths: list[str]) -> None:
    """Write cameras as a NeRF-synthetic `transforms.json` (fl_x/fl_y/cx/cy/w/h form)."""
    K = cameras.K[0]
    meta = {
        "camera_angle_x": float(2 * math.atan(0.5 * cameras.width / float(K[0, 0]))),
        "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
        "w": cameras.width, "h": cameras.height,
        "frames": [
            {"file_path": name, "transform_matrix": cameras.c2w[i].tolist()} for i, name in enumerate(file_paths)
        ],
    }
    Path(path).write_text(json.dumps(meta, indent=1))


def world_to_camera_normals(normal: Tensor, cameras: Cameras) -> Tensor:
    """World normals [B,H,W,3] -> OpenGL camera-space normals [B,H,W,3] (x right, y up, z toward
    the viewer), the convention of Marigold's normal maps."""
    rotation = cameras.c2w[:, :3, :3].to(normal)              # camera axes as columns
    return torch.einsum("bji,bhwj->bhwi", rotation, normal)
