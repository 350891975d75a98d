"""Is a finished asset clean of its training background? Two checks on renders of any Scene.

Distillation composites every render over a training background (white by default). To
the prior an opaque Gaussian of that colour looks like background, so nothing stops the
optimisation from filling a torus's hole or the air around an object with "background"
geometry. Over the training background that filler is invisible; over any other it shows.

- leak: render the asset over the *opposite* background (each channel 0 where the training
  background's is >= 0.5, else 1: white -> black) and count, among the covered pixels
  (alpha >= `coverage`), those whose colour lies within `tolerance` (max over channels) of
  the training background. A clean red torus scores ~0; one whose hole is plugged with white
  scores the plug's share of its silhouette. The figure means nothing for an object whose
  own colour is the training background's (a white object trained over white): callers
  skip it there (`colour_near_background`).
- hole: for a torus (a ring lying flat, axis +Z, centred as every generated object is) the
  top view's central pixels must be see-through: alpha < 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from core.cameras import Cameras, orbit_cameras, spherical_cameras


def opposite_background(background) -> Tensor:
    """[3] the background farthest from `background` [3] in [0,1] with channels in {0, 1}."""
    bg = torch.as_tensor(background, dtype=torch.float32).reshape(3)
    return (bg < 0.5).float()


def colour_near_background(rgb, background, tolerance: float = 0.15) -> bool:
    """Whether an object colour rgb [3] is within `tolerance` (max over channels) of `background` [3]."""
    rgb = torch.as_tensor(rgb, dtype=torch.float32).reshape(3)
    return bool((rgb - torch.as_tensor(background, dtype=torch.float32).reshape(3)).abs().max() <= tolerance)


def judge_cameras(views: int = 8, size: int = 64, elevation_deg: float = 15.0) -> Cameras:
    """The orbit the quality bench judges from: `views` azimuths at `elevation_deg`, radius 2.5, fov 45."""
    return orbit_cameras(views, elevation_deg=elevation_deg, radius=2.5, fov_y_deg=45.0, width=size, height=size)


def leak_cameras(views: int = 8, size: int = 64) -> Cameras:
    """`judge_cameras` at 15 degrees and as many at 60 (the top of the training range), where a
    plugged hole shows: at 15 degrees the front of a ring hides most of what is in it."""
    low, high = judge_cameras(views, size, 15.0), judge_cameras(views, size, 60.0)
    return Cameras(torch.cat([low.c2w, high.c2w]), torch.cat([low.K, high.K]), size, size)


def top_camera(size: int = 64) -> Cameras:
    """One camera straight above the origin (radius 2.5, fov 45) looking down -Z."""
    one = torch.ones(1)
    return spherical_cameras(90.0 * one, 0.0 * one, 2.5 * one, 45.0 * one, size, size)


def scene_device(scene) -> torch.device:
    """The device a scene renders on (its `device`, else its first parameter's, else CPU)."""
    device = getattr(scene, "device", None)
    if device is not None:
        return torch.device(device)
    first = next(iter(scene.parameters()), None) if hasattr(scene, "parameters") else None
    return first.device if first is not None else torch.device("cpu")


@dataclass
class LeakReport:
    """leak: share in [0,1] of covered pixels near the training background (over the opposite
    one); covered: how many pixels were covered (alpha >= coverage) over all views."""

    leak: float
    covered: int


@torch.no_grad()
def background_leak(scene, training_background=(1.0, 1.0, 1.0), cameras: Cameras | None = None,
                    tolerance: float = 0.15, coverage: float = 0.5) -> LeakReport:
    """The leak figure of `scene` (module docstring) from `cameras` (default `leak_cameras()`)."""
    cameras = cameras if cameras is not None else leak_cameras()
    train_bg = torch.as_tensor(training_background, dtype=torch.float32).reshape(3)
    device = scene_device(scene)
    out = scene.render(cameras.to(device), opposite_background(train_bg).to(device))
    rgb, alpha = out.rgb.float().cpu(), out.alpha[..., 0].float().cpu()
    covered = alpha >= coverage
    near = (rgb - train_bg).abs().amax(-1) <= tolerance
    n = int(covered.sum())
    return LeakReport(leak=float((covered & near).sum()) / n if n else 0.0, covered=n)


@torch.no_grad()
def hole_alpha(scene, size: int = 64, patch: int = 3) -> float:
    """Mean alpha in [0,1] over the central `patch` x `patch` pixels of the top view (`top_camera`)."""
    device = scene_device(scene)
    out = scene.render(top_camera(size).to(device), torch.zeros(3, device=device))
    start = (size - patch) // 2
    return float(out.alpha[0, start:start + patch, start:start + patch, 0].mean())


def hole_open(scene, size: int = 64, patch: int = 3) -> bool:
    """Whether the top view's centre is see-through (alpha < 0.5): a torus's hole left open."""
    return hole_alpha(scene, size, patch) < 0.5
