"""The recomposed 4D scene and its point tracks, against closed forms.

- object-to-world: an object on the optical axis, placed at distance d with scale d / r_ref,
  projects exactly where the canonical object projects through its reference camera (same
  focal length); L(d) is a rotation taking the optical axis onto d;
- tracks of a static scene seen by known cameras are the projections of the ray / plane
  intersections of the queries; a moving rigid object's tracks follow
  X(t') = T_t' + (s_t'/s_t) R_t' R_t^T (X - T_t), projected.
"""

import math

import numpy as np
import pytest
import torch
from gsplat.utils import normalized_quat_to_rotmat
from torch import nn

from core.cameras import look_at, spherical_cameras
from core.pipelines.video4d.scene4d import DynamicObject, Scene4D, axis_to_direction, object_rotation
from core.pipelines.video4d.tracks import QueryError, check_queries, project, track_points, unproject
from renderers.gaussian.ply import SH_C0, GaussianData


class Rigid(nn.Module):
    """A deformation that is the identity at every time (a test double for the HexPlane field)."""

    def deform(self, means, quats, log_scales, tau):
        return means, torch.nn.functional.normalize(quats, dim=-1), log_scales


def K_of(f, W, H):
    return torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])


def plane_of_gaussians(z=-3.0, half=3.0, n=120, colour=(0.5, 0.5, 0.5), seed=0):
    """Opaque, flat, overlapping Gaussians tiling the plane z = const (world = camera 0)."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.linspace(-half, half, n)
    X, Y = torch.meshgrid(xs, xs, indexing="xy")
    means = torch.stack([X.flatten(), Y.flatten(), torch.full((n * n,), z)], -1)
    spacing = 2 * half / (n - 1)
    log_scales = torch.log(torch.tensor([spacing, spacing, 1e-3])).expand(n * n, 3).clone()
    colours = torch.rand(n * n, 3, generator=g) * 0.5 + torch.tensor(colour) * 0.5
    return GaussianData(means, torch.tensor([[1.0, 0, 0, 0]]).expand(n * n, 4).clone(), log_scales,
                        torch.full((n * n,), 6.0), ((colours - 0.5) / SH_C0)[:, None], torch.zeros(n * n, 0, 3))


def test_axis_to_direction_is_a_rotation_onto_the_direction():
    d = torch.nn.functional.normalize(torch.randn(50, 3) * torch.tensor([0.5, 0.5, 1]) - torch.tensor([0, 0, 1.0]),
                                      dim=-1)
    d = d[d[:, 2] < -0.2]
    L = axis_to_direction(d)
    assert torch.allclose(L @ torch.tensor([0, 0, -1.0]), d, atol=1e-5)
    assert torch.allclose(L @ L.transpose(-1, -2), torch.eye(3).expand_as(L), atol=1e-5)
    assert torch.allclose(torch.linalg.det(L), torch.ones(len(d)), atol=1e-5)


def test_an_object_on_the_optical_axis_projects_as_its_reference_view():
    W = H = 64
    fov = 45.0
    ref = spherical_cameras(torch.tensor([15.0]), torch.tensor([0.0]), torch.tensor([2.5]), torch.tensor([fov]), W, H)
    points = torch.randn(100, 3) * 0.3
    # reference projection (Cameras convention: pixel centres at +0.5)
    vm = ref.viewmats()[0]
    p = points @ vm[:3, :3].T + vm[:3, 3]
    Kc = ref.K[0]
    ref_px = torch.stack([Kc[0, 0] * p[:, 0] / p[:, 2] + Kc[0, 2], Kc[1, 1] * p[:, 1] / p[:, 2] + Kc[1, 2]], -1)
    # a real camera somewhere, the object straight ahead of it at distance 4
    c2w = look_at(torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[0.0, 1.0, 0.2]]))
    dist = 4.0
    centre = c2w[0, :3, 3] - dist * c2w[0, :3, 2]
    R = object_rotation(c2w, centre[None], ref.c2w[0, :3, :3])[0]
    world = centre + (dist / 2.5) * points @ R.T
    K = Kc.clone()
    K[:2, 2] -= 0.5       # OpenCV
    px, z = project(world, c2w[0], K)
    assert torch.allclose(px + 0.5, ref_px, atol=1e-3)
    assert (z > 0).all()


def two_frame_cameras():
    c2w = torch.eye(4)[None].repeat(3, 1, 1)
    c2w[1, :3, 3] = torch.tensor([0.15, 0.0, 0.0])
    angle = math.radians(4)
    c2w[2, :3, :3] = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0],
                                   [-math.sin(angle), 0, math.cos(angle)]])
    return c2w


def test_tracks_of_a_static_scene_are_the_projected_surface_points():
    W = H = 48
    K = K_of(50.0, W, H)
    c2w = two_frame_cameras()
    scene = Scene4D(plane_of_gaussians(), [], c2w, K, W, H)
    xs = torch.tensor([10.0, 24.0, 31.5, 40.0])
    q = torch.stack([torch.zeros(4), xs, torch.tensor([12.0, 24.0, 30.25, 36.0])], -1)
    tracks, occluded = track_points(scene, q)
    # closed form: the query ray meets z = -3 at depth 3 in camera 0 (identity)
    X = unproject(q[:, 1:], torch.full((4,), 3.0), torch.eye(4), K)
    for t in range(3):
        expected, _ = project(X, c2w[t], K)
        assert torch.allclose(tracks[:, t], expected, atol=0.05), (t, tracks[:, t], expected)
    assert torch.allclose(tracks[:, 0], q[:, 1:], atol=0.05)
    assert not occluded.any()


def test_tracks_leaving_the_picture_are_occluded():
    W = H = 48
    K = K_of(50.0, W, H)
    c2w = torch.eye(4)[None].repeat(2, 1, 1)
    c2w[1, :3, 3] = torch.tensor([1.0, 0.0, 0.0])      # 1 unit right at depth 3: ~17 px
    scene = Scene4D(plane_of_gaussians(), [], c2w, K, W, H)
    q = torch.tensor([[0.0, 3.0, 24.0], [0.0, 40.0, 24.0]])
    tracks, occluded = track_points(scene, q)
    assert tracks[0, 1, 0] < -0.5 and occluded[0, 1]     # went off the left edge
    assert not occluded[1].any()


def sphere_object(object_id=1, n=400, radius=0.5):
    g = torch.Generator().manual_seed(3)
    v = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * radius
    colours = torch.rand(n, 3, generator=g)
    return GaussianData(v, torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
                        torch.full((n, 3), math.log(0.08)), torch.full((n,), 6.0), ((colours - 0.5) / SH_C0)[:, None],
                        torch.zeros(n, 0, 3))


def test_tracks_on_a_moving_object_follow_its_rigid_motion():
    W = H = 48
    K = K_of(50.0, W, H)
    c2w = two_frame_cameras()
    ref = spherical_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.5]), torch.tensor([45.0]), 64, 64)
    T = torch.tensor([[0.0, 0.0, -2.0], [0.3, 0.1, -2.2], [0.45, -0.1, -2.1]])
    log_s = torch.log(torch.tensor([0.6, 0.65, 0.6]))
    obj = DynamicObject(1, sphere_object(), Rigid(), ref.c2w[0, :3, :3], T, log_s, torch.ones(3, dtype=torch.bool))
    scene = Scene4D(plane_of_gaussians(), [obj], c2w, K, W, H)
    q = torch.tensor([[0.0, 24.0, 24.0], [0.0, 21.0, 26.0]])     # on the sphere's front in frame 0
    tracks, occluded = track_points(scene, q)
    with torch.no_grad():
        out = scene.render(0)
    z = torch.tensor([float(out["depth"][0, 24, 24, 0]), float(out["depth"][0, 26, 21, 0])])
    assert (z < 2.0).all()                     # the queries hit the sphere, not the wall at 3
    X = unproject(q[:, 1:], z, c2w[0], K)
    R = object_rotation(c2w, T, ref.c2w[0, :3, :3])
    for t in range(3):
        Xt = T[t] + (log_s[t] - log_s[0]).exp() * (X - T[0]) @ (R[t] @ R[0].T).T
        expected, _ = project(Xt, c2w[t], K)
        assert torch.allclose(tracks[:, t], expected, atol=0.3), (t, tracks[:, t], expected)
    assert not occluded[:, 0].any()


def test_query_checks_name_the_problem():
    with pytest.raises(QueryError, match=r"\[N,3\]"):
        check_queries(np.zeros((4, 2)), 5, 32, 32)
    with pytest.raises(QueryError, match="frame indices in 0..4"):
        check_queries(np.array([[5.0, 1, 1]]), 5, 32, 32)
    with pytest.raises(QueryError, match="inside the 32x32"):
        check_queries(np.array([[0.0, 40, 1]]), 5, 32, 32)
    assert check_queries(np.array([[2.0, 31.4, 0]]), 5, 32, 32).shape == (1, 3)


def test_an_object_placed_behind_the_background_is_pulled_in_front_without_changing_its_picture():
    from core.pipelines.video4d.placement_stage import order_in_depth

    W = H = 48
    K = K_of(50.0, W, H)
    c2w = torch.eye(4)[None].repeat(2, 1, 1)
    ref = spherical_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.5]), torch.tensor([45.0]), 64, 64)
    T = torch.tensor([[0.2, 0.0, -3.6], [0.5, 0.1, -3.6]])            # behind the wall at z = -3
    obj = DynamicObject(1, sphere_object(), Rigid(), ref.c2w[0, :3, :3], T, torch.log(torch.tensor([0.8, 0.8])),
                        torch.ones(2, dtype=torch.bool))
    scene = Scene4D(plane_of_gaussians(), [obj], c2w, K, W, H)
    with torch.no_grad():
        alone = [scene.render(t, include_background=False)["alpha"][0, ..., 0] for t in range(2)]
        masks = torch.stack([(a > 0.5).long() for a in alone])
        assert all(scene.render(t, owners=True)["owner"][0, ..., 1][masks[t] == 1].mean() < 0.1 for t in range(2))
        moved = order_in_depth(scene, masks)
        assert moved["in_front_of_background"] == 2
        for t in range(2):
            # in front of an opaque wall, the object's share of each pixel is its own alpha
            share = scene.render(t, owners=True)["owner"][0, ..., 1]
            after = scene.render(t, include_background=False)["alpha"][0, ..., 0]
            gap = (share - after)[masks[t] == 1].abs()
            assert gap.mean() < 0.03 and torch.quantile(gap, 0.95) < 0.1, gap   # wall splats at the rim
            assert (after - alone[t]).abs().max() < 0.05   # same picture, nearer
        assert (obj.T[:, 2] > -3.0).all()
