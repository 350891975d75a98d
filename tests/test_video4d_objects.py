"""Video-to-4D objects: crop, lift and placement (core/pipelines/video4d/objects.py, placement.py).

References are independent of the code under test: slices of the frame, numpy's lstsq, a
closed-form ray-sphere intersection for masks and depth, a pinhole projection written out, and
renders of a canonical sphere of Gaussians through the rasteriser."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.cameras import Cameras, look_at
from core.pipelines.video4d.objects import ObjectLiftConfig, crop_object, lift_config, lift_object
from core.pipelines.video4d.placement import align_depth, init_object_to_world, occlusion_disagreements
from renderers.gaussian.rasterize import rasterize


def disc(H, W, cx, cy, r):
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_crop_of_a_disc_is_the_frame_slice_when_the_square_maps_pixel_to_pixel():
    # pixels 27..74 in x and 17..64 in y: a 48 px box centred at (50.5, 40.5); 48 / 0.75 = 64
    mask = disc(100, 120, 50.5, 40.5, 24.0)
    frame = torch.rand(100, 120, 3, generator=torch.Generator().manual_seed(0))
    crop = crop_object(frame, mask, size=64, fill=0.75)
    assert crop.box == (18.5, 8.5, 64.0)               # centre - side / 2
    alpha = crop.rgba[0, 3]
    assert torch.equal(alpha, mask[9:73, 19:83].float())   # crop pixel u has its centre at x0 + u + 1/2
    inside = mask[9:73, 19:83]
    assert torch.allclose(crop.rgba[0, :3].permute(1, 2, 0)[inside], frame[9:73, 19:83][inside], atol=1e-6)
    assert (crop.rgba[0, :3].permute(1, 2, 0)[~inside] == 0).all()          # transparent, no colour
    xs = torch.nonzero(alpha.any(0))[:, 0]
    assert xs.max() - xs.min() + 1 == 48                                     # fills 0.75 of 64


def test_crop_fill_and_centre_at_another_size_and_transparent_outside_the_frame():
    mask = disc(60, 80, 6.0, 30.0, 10.5)          # cut by the left border: pixels x 0..16, y 20..40
    frame = torch.full((60, 80, 3), 0.25)
    crop = crop_object(frame, mask, size=32, fill=0.6)
    x0, y0, side = crop.box
    assert side == math.ceil(21 / 0.6) and (x0, y0) == (8.0 - side / 2, 30.0 - side / 2)
    alpha = crop.rgba[0, 3]
    # the mask's area, scaled by (S / side)^2, is kept by the area filter
    assert alpha.sum() == pytest.approx(float(mask.sum()) * (32 / side) ** 2, rel=1e-4)
    # frame x = x0 + (u + 1/2) side / S: columns left of the frame edge (x < -1/2) are empty
    u_edge = (-0.5 - x0) * 32 / side
    assert (alpha[:, : int(math.floor(u_edge))] == 0).all()
    rows = torch.nonzero(alpha.sum(1) > 0.5)[:, 0]
    assert abs((rows.min() + rows.max()).item() / 2 - 15.5) <= 0.5            # vertically re-centred
    assert torch.allclose(crop.rgba[0, :3][:, alpha > 0.01], torch.tensor(0.25), atol=1e-5)


def test_align_depth_recovers_an_affine_map_and_matches_numpy_lstsq():
    g = torch.Generator().manual_seed(1)
    rel = torch.rand(20, 30, generator=g, dtype=torch.float64)
    valid = torch.rand(20, 30, generator=g) > 0.3
    scale, shift = align_depth(rel, 2.5 * rel + 0.3, valid)
    assert scale == pytest.approx(2.5, abs=1e-9) and shift == pytest.approx(0.3, abs=1e-9)
    target = 1.7 * rel - 0.4 + 0.05 * torch.randn(20, 30, generator=g, dtype=torch.float64)
    target[~valid] = 1e3                                                     # ignored
    a = np.stack([rel[valid].double().numpy(), np.ones(int(valid.sum()))], 1)
    ref = np.linalg.lstsq(a, target[valid].double().numpy(), rcond=None)[0]
    assert np.allclose(align_depth(rel, target, valid), ref, atol=1e-10)


# --- placement on a synthetic frame --------------------------------------------------------

W = H = 192
FOV_X = 60.0


def opencv_K():
    f = 0.5 * W / math.tan(math.radians(FOV_X) / 2)
    return torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]], dtype=torch.float64)


def sphere_mask_and_depth(K, c2w, centre, radius):
    """Closed form: the ray through each pixel centre, d = Q (x_n, -y_n, -1) (z-depth 1 per unit
    of the parameter), meets |C + l d - P| = radius at the smaller root l = z-depth."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    d_gl = torch.stack([(xs - K[0, 2]) / K[0, 0], -(ys - K[1, 2]) / K[1, 1], -torch.ones_like(xs)], -1)
    d = d_gl @ c2w[:3, :3].double().T
    oc = c2w[:3, 3].double() - centre
    a, b, c = (d * d).sum(-1), 2 * (d * oc).sum(-1), float(oc @ oc) - radius ** 2
    disc_ = b * b - 4 * a * c
    hit = disc_ >= 0
    depth = torch.where(hit, (-b - disc_.clamp_min(0).sqrt()) / (2 * a), torch.zeros_like(a))
    return hit, depth


def project(K, c2w, point):
    q = c2w[:3, :3].double().T @ (point.double() - c2w[:3, 3].double())
    x_cv, y_cv, z_cv = q[0], -q[1], -q[2]
    return torch.stack([K[0, 0] * x_cv / z_cv + K[0, 2], K[1, 1] * y_cv / z_cv + K[1, 2]])


def fibonacci_sphere(n, radius):
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    r = (1 - z * z).sqrt()
    return (torch.stack([r * phi.cos(), r * phi.sin(), z], -1) * radius).float()


def render_points(means, scale, colors, c2w, K_pixels_at_half, width, height):
    cams = Cameras(c2w[None].float(), K_pixels_at_half[None].float(), width, height)
    n = len(means)
    rgb, alpha, _ = rasterize(means, torch.tensor([1.0, 0, 0, 0]).repeat(n, 1), torch.full((n, 3), float(scale)),
                              torch.full((n,), 0.95), colors, cams.viewmats(), cams.K, width, height,
                              backgrounds=torch.zeros(1, 3))
    return rgb[0], alpha[0, ..., 0]


def iou(a, b):
    return float((a & b).sum() / (a | b).sum())


def test_init_object_to_world_projects_onto_the_mask_and_renders_like_the_recentred_reference():
    K = opencv_K()
    fill, r_ref, fov_ref = 0.75, 2.5, 45.0
    # three frames of a turning, moving camera; the sphere is out of view in frame 1
    eyes = [torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.2, 0.0, 0.1]), torch.tensor([0.4, 0.1, 0.0])]
    targets = [torch.tensor([1.0, 5.0, 0.3]), torch.tensor([-6.0, 2.0, 0.0]), torch.tensor([-0.5, 5.0, -0.4])]
    c2w = torch.stack([look_at(e[None], t[None])[0] for e, t in zip(eyes, targets)])
    centre, radius = torch.tensor([0.7, 3.5, 0.6], dtype=torch.float64), 0.6
    masks, depths = zip(*[sphere_mask_and_depth(K, c, centre, radius) for c in c2w])
    masks, depths = torch.stack(masks), torch.stack(depths)
    assert masks[0].any() and not masks[1].any() and masks[2].any()
    init = init_object_to_world(masks, K.float(), c2w, depths.float(), fill, r_ref, fov_ref, 0.0)
    assert init.visible.tolist() == [True, False, True]
    assert torch.allclose(init.T[1], (init.T[0] + init.T[2]) / 2, atol=1e-6)
    assert init.log_scale[1] == pytest.approx(float(init.log_scale[0] + init.log_scale[2]) / 2, abs=1e-6)
    assert torch.allclose(init.R @ init.R.T, torch.eye(3), atol=1e-5) and torch.det(init.R) > 0
    for t in (0, 2):
        ys, xs = torch.nonzero(masks[t], as_tuple=True)
        centroid = torch.stack([xs.double().mean(), ys.double().mean()])
        assert torch.allclose(project(K, c2w[t], init.T[t]), centroid, atol=1e-3)

    # A canonical sphere obeying the crop convention: its image spans `fill` of the reference
    # view at r_ref, i.e. tan(asin(rho / r_ref)) = fill tan(fov_ref / 2); coloured by position.
    rho = r_ref * math.sin(math.atan(fill * math.tan(math.radians(fov_ref) / 2)))
    points = fibonacci_sphere(8000, rho)
    colors = 0.5 + 0.5 * torch.sin(2 * math.pi * points / rho)             # one period per radius
    K_half = K.clone()
    K_half[0, 2] += 0.5
    K_half[1, 2] += 0.5
    S = 64
    from core.cameras import spherical_cameras

    ref_cam = spherical_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([r_ref]),
                                torch.tensor([fov_ref]), S, S)
    ref_rgb, ref_alpha = render_points(points, 0.012, colors, ref_cam.c2w[0], ref_cam.K[0], S, S)
    for t in (0, 2):
        s = float(init.log_scale[t].exp())
        world = s * points @ init.R.T + init.T[t]
        rgb, alpha = render_points(world, 0.012 * s, colors, c2w[t], K_half, W, H)
        assert iou(alpha > 0.5, masks[t]) > 0.8
        # the reference render re-sampled into the crop box (side = ceil(longer side / fill),
        # centred on the box; crop pixel u has its centre at frame x0 + (u + 1/2) side / S)
        ys, xs = torch.nonzero(masks[t], as_tuple=True)
        side = math.ceil(max(int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1) / fill)
        x0 = (xs.min() + xs.max()).item() / 2 - side / 2
        y0 = (ys.min() + ys.max()).item() / 2 - side / 2
        gy, gx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                                indexing="ij")
        u = (gx - x0) * S / side - 0.5
        v = (gy - y0) * S / side - 0.5
        grid = torch.stack([(u + 0.5) / S * 2 - 1, (v + 0.5) / S * 2 - 1], -1)[None]
        placed = F.grid_sample(torch.cat([ref_rgb, ref_alpha[..., None]], -1).permute(2, 0, 1)[None], grid,
                               align_corners=False)[0].permute(1, 2, 0)
        both = (alpha > 0.5) & (placed[..., 3] > 0.5)
        assert iou(alpha > 0.5, placed[..., 3] > 0.5) > 0.8
        colour_error = (rgb[both] / alpha[both, None] - placed[..., :3][both] / placed[..., 3][both, None]).abs()
        # measured 0.087 (frame 0, near the optical axis) and 0.114 (frame 2, 16 deg off the axis,
        # where the re-centred crop ignores the off-centre ray's perspective); turning the canonical
        # object by 10 deg about the view axis gives 0.135 in frame 0
        assert colour_error.mean() < (0.1 if t == 0 else 0.125), (t, float(colour_error.mean()))


def test_occlusion_disagreements_report_the_pairs_the_masks_contradict():
    coverage = {1: torch.zeros(2, 8, 12, dtype=torch.bool), 2: torch.zeros(2, 8, 12, dtype=torch.bool)}
    coverage[1][:, 2:6, 1:7] = True
    coverage[2][:, 2:6, 5:11] = True                      # overlap: columns 5, 6 (8 pixels)
    masks = torch.zeros(2, 8, 12, dtype=torch.long)
    masks[coverage[2]] = 2
    masks[coverage[1]] = 1                                # the mask shows 1 in front
    near, far = torch.full((2, 8, 12), 2.0), torch.full((2, 8, 12), 3.0)
    assert occlusion_disagreements(masks, coverage, {1: near, 2: far}) == []
    depth = {1: near.clone(), 2: far.clone()}
    depth[1][1] = 4.0                                     # frame 1: object 1 placed behind
    found = occlusion_disagreements(masks, coverage, depth)
    assert [(d.t, d.front, d.behind, d.pixels, d.wrong) for d in found] == [(1, 1, 2, 8, 8)]


# --- lifting --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_zero123(tmp_path_factory):
    from core.priors.tiny import build_tiny_zero123

    return str(build_tiny_zero123(tmp_path_factory.mktemp("z") / "zero123"))


def test_lift_config_follows_dreamscene4d_schedules():
    from core.distill.schedules import sample_timesteps

    crop = crop_object(torch.rand(40, 40, 3), disc(40, 40, 20, 20, 8), size=32)
    cfg = lift_config(crop, "crop.png", ObjectLiftConfig(steps=100))
    (stage,) = cfg.stages
    assert stage.representation == "gaussian" and stage.steps == 100 and cfg.export == ["ply"]
    # DreamScene4D main.py: 128 / 256 / 512 px from progress 0 / 0.3 / 0.6 with a 256 px reference
    assert [stage.size_at(p) for p in (0.0, 0.29, 0.3, 0.59, 0.6, 1.0)] == [16, 16, 32, 32, 64, 64]
    # zero123_utils.train_step: t = round((1 - p) T) clipped to [0.02 T, 0.98 T], one t per step
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        t = sample_timesteps(stage.objective.schedule, p, 4, 1000)
        assert len(set(t.tolist())) == 1
        assert abs(int(t[0]) - float(np.clip(round((1 - p) * 1000), 20, 980))) <= 20
    assert cfg.rgb_weight(0.5) == pytest.approx(5000.0) and cfg.mask_weight(1.0) == pytest.approx(1000.0)
    assert cfg.object_fill == 0.75 and cfg.reference_size == 32


def test_lift_object_returns_a_scene_and_resumes(tiny_zero123, tmp_path):
    from core.runner import Cancelled
    from stop_after import StopAfter

    frame = torch.ones(40, 40, 3) * torch.tensor([0.9, 0.2, 0.1])
    crop = crop_object(frame, disc(40, 40, 18, 22, 9), size=32)
    cfg = ObjectLiftConfig(steps=3, batch_size=1, num_points=100, prior_model=tiny_zero123, checkpoint_every=1)
    full = lift_object(crop, tmp_path / "full", cfg)
    assert len(full) > 0 and (tmp_path / "full" / "model.ply").is_file() and (tmp_path / "full" / "crop.png").is_file()
    with pytest.raises(Cancelled):
        lift_object(crop, tmp_path / "cut", cfg, callbacks=StopAfter(2))
    assert torch.load(tmp_path / "cut" / "checkpoints" / "coarse.pt", weights_only=False)["step"] == 2
    torch.manual_seed(1234)
    resumed = lift_object(crop, tmp_path / "cut", cfg)
    a, b = full.to_data(), resumed.to_data()
    assert torch.equal(a.means, b.means) and torch.equal(a.sh0, b.sh0) and torch.equal(a.log_scales, b.log_scales)
