"""Pieces of the object-centric motion stage against independent references: the box crop
(objects.crop_image) area-averages exactly (a linear ramp, a box half outside); chained flows
equal the cumulative sum of constant flows and stop where a forward-backward check failed;
the stage moves a deformation field toward a crop sequence's motion."""

import math

import torch

from core.pipelines.video4d.motion_stage import chain_flows
from core.pipelines.video4d.objects import crop_image


def test_crop_image_area_averages_over_the_box():
    # Brute force: each crop pixel's footprint sampled on a fine grid, each sample reading the
    # frame pixel it falls in (pixel j spans [j - 1/2, j + 1/2]).
    H, W = 40, 50
    image = torch.rand(H, W, 1, generator=torch.Generator().manual_seed(0))
    x0, y0, side, S, n = 7.3, 4.9, 24.0, 16, 120
    out = crop_image(image, (x0, y0, side), S)[..., 0]
    t = (torch.arange(S * n, dtype=torch.float64) + 0.5) * side / (S * n)
    cols = torch.floor(x0 + t + 0.5).long()
    rows = torch.floor(y0 + t + 0.5).long()
    fine = image[..., 0].double()[rows][:, cols]                                 # [S*n, S*n]
    expected = fine.view(S, n, S, n).mean((1, 3)).float()
    assert torch.allclose(out, expected, atol=0.02), (out - expected).abs().max()
    # a box hanging half over the left edge: its left half sees zero, the right half all of a constant
    ones = torch.ones(H, W, 1)
    half = crop_image(ones, (-10.5, 5.5, 20.0), 4)[..., 0]     # edges -10.5 .. 9.5; the picture starts at -0.5
    assert torch.allclose(half[:, :2], torch.zeros(4, 2)) and torch.allclose(half[:, 2:], torch.ones(4, 2))


def test_chained_flows_add_up_constant_flows_and_stop_at_a_failed_check():
    F_, S = 4, 16
    flows = torch.zeros(F_, S, S, 2)
    flows[..., 0] = 1.0                      # one pixel right per frame
    flows[..., 1] = -1.0                     # one pixel up
    valid = torch.ones(F_, S, S, 1)
    valid[-1] = 0                            # the last frame has no next
    valid[1, 4, 5] = 0                       # frame 1 -> 2 fails at (x=5, y=4), where pixel (4, 5) of frame 0 is
    alpha0 = torch.zeros(S, S)
    alpha0[4:10, 3:9] = 1
    disp, ok = chain_flows(flows, valid, alpha0)
    for f in range(F_):
        assert torch.allclose(disp[f][alpha0 > 0.5], torch.tensor([f * 1.0, -1.0 * f]).expand(36, 2), atol=1e-5)
    assert ok[0, 5, 4, 0] == 1 and ok[1, 5, 4, 0] == 1
    assert ok[2, 5, 4, 0] == 0 and ok[3, 5, 4, 0] == 0   # pixel (x=4, y=5) passed through the failed check
    assert ok[3, 9, 8, 0] == 1                           # a neighbour that never did keeps going
    assert ok[:, 0, 0, 0].sum() == 0                     # not an object pixel: never tracked


def test_the_motion_stage_learns_a_turn_from_crops(tmp_path):
    """Canonical Gaussians on a sphere, 'video' crops rendered from them turned about the
    vertical by 6 degrees per frame: the stage fitted for 60 steps reproduces the chained
    flow better than the unmoved field (a measurable move toward the truth)."""
    from core.pipelines.video4d.deformation import DeformationConfig, DeformationField
    from core.pipelines.video4d.motion_stage import (MotionConfig, ObjectFrames, TimedCameras, build_motion_stage,
                                                     chain_flows, reference_camera)
    from core.pipelines.video4d.scene4d import DynamicObject
    from core.runner import RunFolder, SilentCallbacks, run_stage
    from renderers.gaussian.ply import SH_C0, GaussianData
    from renderers.gaussian.rasterize import rasterize

    g = torch.Generator().manual_seed(0)
    n, S, T = 600, 32, 5
    pts = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 0.5
    colours = (torch.sin(pts[:, :1] * 12) * torch.sin(pts[:, 2:3] * 12) > 0).float().expand(n, 3) * 0.8 + 0.1
    data = GaussianData(pts, torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).clone(), torch.full((n, 3), math.log(0.06)),
                        torch.full((n,), 4.0), ((colours - 0.5) / SH_C0)[:, None], torch.zeros(n, 0, 3))
    ref = reference_camera(S, 0.0, 2.5, 45.0)
    truth = []
    for t in range(T):
        a = math.radians(6 * t)
        R = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])  # about +z, up
        truth.append(pts @ R.T)
    rgba, flows, valid = [], torch.zeros(T, S, S, 2), torch.zeros(T, S, S, 1)
    from core.pipelines.video4d.tracks import project
    for t in range(T):
        c, a_, _ = rasterize(truth[t], data.quats, data.log_scales.exp(), torch.sigmoid(data.logit_opacities), colours,
                             ref.viewmats(), ref.K, S, S)
        rgba.append(torch.cat([(c[0] / a_[0].clamp_min(1e-6)).clamp(0, 1), a_[0]], -1))
        if t < T - 1:
            d = project(truth[t + 1], ref.c2w[0], ref.K[0])[0] - project(truth[t], ref.c2w[0], ref.K[0])[0]
            f, a2, _ = rasterize(truth[t], data.quats, data.log_scales.exp(), torch.sigmoid(data.logit_opacities), d,
                                 ref.viewmats(), ref.K, S, S)
            flows[t] = f[0] / a2[0].clamp_min(1e-6)
            valid[t] = (a2[0] > 0.5).float()
    rgba = torch.stack(rgba)
    chain, chain_ok = chain_flows(flows, valid, rgba[0, ..., 3])
    frames = ObjectFrames(list(range(T)), rgba, torch.ones(T, S, S, 1), flows, valid, chain, chain_ok)
    obj = DynamicObject(1, data, DeformationField(DeformationConfig()), ref.c2w[0, :3, :3], torch.zeros(T, 3),
                        torch.zeros(T), torch.ones(T, dtype=torch.bool))

    def chain_error():
        errs = []
        with torch.no_grad():
            for f in range(1, T):
                v = chain_ok[f, ..., 0] > 0.5
                o = obj_model.render(TimedCameras(ref, torch.tensor([0.0]), torch.tensor([f / (T - 1)])))
                errs.append(float((o.extras["flow"][0][v] - chain[f][v]).norm(dim=-1).mean()))
        return sum(errs) / len(errs)

    stage = build_motion_stage("m", obj, frames, T, MotionConfig(steps=60, sds_every=0), ref, 0)
    obj_model = stage.scene
    before = chain_error()
    run_stage(stage, RunFolder(tmp_path / "run"), callbacks=SilentCallbacks())
    after = chain_error()
    assert before > 1.0                  # the turn moves the front by more than a pixel per frame on average
    assert after < 0.6 * before, (before, after)
