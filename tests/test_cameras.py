import json
import math

import pytest
import torch

from core.cameras import (
    CameraSamplerConfig,
    Cameras,
    RandomCameraSampler,
    c2w_to_viewmats,
    load_nerf_synthetic,
    look_at,
    orbit_cameras,
    save_nerf_synthetic,
)


def project(cams: Cameras, points: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates [B,N,2] and z-depth [B,N] of world points through OpenCV viewmats."""
    vm = cams.viewmats()
    pc = torch.einsum("bij,nj->bni", vm[:, :3, :3], points) + vm[:, None, :3, 3]
    uv = torch.einsum("bij,bnj->bni", cams.K, pc)
    return uv[..., :2] / uv[..., 2:], pc[..., 2]


def test_look_at_origin_projects_to_image_centre():
    cams = orbit_cameras(6, elevation_deg=30, radius=3.0, width=64, height=48)
    uv, z = project(cams, torch.zeros(1, 3))
    assert torch.allclose(uv[:, 0], torch.tensor([32.0, 24.0]).expand(6, 2), atol=1e-4)
    assert torch.allclose(z[:, 0], torch.full((6,), 3.0), atol=1e-5)


def test_world_up_is_image_up():
    # A point above the origin (+Z) must appear above the image centre (smaller v).
    cams = orbit_cameras(4, elevation_deg=0, radius=3.0, width=64, height=64)
    uv, _ = project(cams, torch.tensor([[0.0, 0.0, 0.5]]))
    assert (uv[:, 0, 1] < 32 - 1).all()


def test_azimuth_zero_camera_sits_on_plus_x_and_spherical_roundtrip():
    cams = orbit_cameras(8, elevation_deg=20, radius=2.0)
    assert torch.allclose(cams.positions[0], torch.tensor([2 * math.cos(math.radians(20)), 0, 2 * math.sin(math.radians(20))]), atol=1e-5)
    el, az, r = cams.spherical()
    assert torch.allclose(el, torch.full((8,), 20.0), atol=1e-4)
    assert torch.allclose(r, torch.full((8,), 2.0), atol=1e-5)
    expected = torch.arange(8) * 45.0
    assert torch.allclose(torch.remainder(az, 360), expected, atol=1e-3)


def test_viewmats_invert_c2w_with_flipped_axes():
    c2w = look_at(torch.tensor([[1.0, 2.0, 3.0]]))
    vm = c2w_to_viewmats(c2w)
    cv_c2w = c2w.clone()
    cv_c2w[:, :3, 1:3] *= -1
    assert torch.allclose(vm @ cv_c2w, torch.eye(4).expand(1, 4, 4), atol=1e-5)


def test_look_at_straight_down_is_not_degenerate():
    c2w = look_at(torch.tensor([[0.0, 0.0, 3.0]]))
    assert torch.isfinite(c2w).all()
    assert torch.allclose(c2w[0, :3, :3].det(), torch.tensor(1.0), atol=1e-5)


def test_rays_pass_through_projected_pixels():
    cams = orbit_cameras(2, width=16, height=12)
    origins, dirs = cams.rays()
    assert origins.shape == dirs.shape == (2, 12, 16, 3)
    pts = origins + 2.0 * dirs
    uv, _ = project(cams[0], pts[0].reshape(-1, 3))
    ys, xs = torch.meshgrid(torch.arange(12) + 0.5, torch.arange(16) + 0.5, indexing="ij")
    assert torch.allclose(uv[0], torch.stack([xs, ys], -1).reshape(-1, 2), atol=1e-3)


def test_random_sampler_is_deterministic_and_in_range():
    cfg = CameraSamplerConfig(batch_size=64, elevation_range=(0, 30), radius_range=(2, 3))
    a, b = RandomCameraSampler(cfg, seed=3)(0), RandomCameraSampler(cfg, seed=3)(0)
    assert torch.equal(a.c2w, b.c2w)
    el, _, r = a.spherical()
    assert el.min() >= -1e-4 and el.max() <= 30 + 1e-4
    assert r.min() >= 2 - 1e-5 and r.max() <= 3 + 1e-5
    s = RandomCameraSampler(cfg, seed=3)
    s(0)
    state = s.state_dict()
    nxt = s(1)
    s.load_state_dict(state)
    assert torch.equal(s(1).c2w, nxt.c2w)


def test_nerf_synthetic_roundtrip_and_resize(tmp_path):
    cams = orbit_cameras(3, width=40, height=30)
    save_nerf_synthetic(tmp_path / "transforms_train.json", cams, ["./train/r_0", "./train/r_1", "./train/r_2"])
    loaded, names = load_nerf_synthetic(tmp_path / "transforms_train.json")
    assert names == ["./train/r_0", "./train/r_1", "./train/r_2"]
    assert (loaded.width, loaded.height) == (40, 30)
    assert torch.allclose(loaded.c2w, cams.c2w) and torch.allclose(loaded.K, cams.K)
    half, _ = load_nerf_synthetic(tmp_path / "transforms_train.json", width=20, height=15)
    assert torch.allclose(half.K[:, 0, 0], cams.K[:, 0, 0] / 2)


def test_nerf_synthetic_camera_angle_x_form(tmp_path):
    meta = {"camera_angle_x": 0.6911112070083618, "frames": [{"file_path": "./test/r_0", "transform_matrix": torch.eye(4).tolist()}]}
    (tmp_path / "t.json").write_text(json.dumps(meta))
    cams, _ = load_nerf_synthetic(tmp_path / "t.json")
    assert (cams.width, cams.height) == (800, 800)
    assert cams.K[0, 0, 0].item() == pytest.approx(0.5 * 800 / math.tan(0.5 * 0.6911112070083618))


def test_nerf_synthetic_bad_files_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="camera file not found"):
        load_nerf_synthetic(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_nerf_synthetic(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'frames'"):
        load_nerf_synthetic(tmp_path / "empty.json")


def test_cameras_validate_shapes():
    with pytest.raises(ValueError, match="c2w must be"):
        Cameras(torch.eye(4), torch.eye(3)[None], 8, 8)
