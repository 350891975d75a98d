"""The K-planes deformation field (core/pipelines/video4d/deformation.py): identity at init,
features against a numpy bilinear reference, gradients, regularisers in closed form."""

from __future__ import annotations

import numpy as np
import torch

from core.pipelines.video4d.deformation import DeformationConfig, DeformationField

SMALL = DeformationConfig(resolution=8, time_resolution=5, multires=(1, 2), features=4, hidden=16)


def random_gaussians(n: int = 200):
    means = (torch.rand(n, 3) * 2 - 1) * 0.9
    quats = torch.randn(n, 4)
    log_scales = torch.randn(n, 3) - 3
    return means, quats, log_scales


def test_identity_at_init_is_exact():
    field = DeformationField(SMALL)
    means, quats, log_scales = random_gaussians()
    for tau in (0.0, 0.37, 1.0, torch.rand(means.shape[0])):
        m, q, s = field.deform(means, quats, log_scales, tau)
        assert torch.equal(m, means) and torch.equal(q, quats) and torch.equal(s, log_scales)
    d_means, d_quats, d_log_scales = field(means, 0.5)
    assert torch.equal(d_means, torch.zeros_like(means))
    assert torch.equal(d_quats, torch.tensor([1.0, 0.0, 0.0, 0.0]).expand_as(d_quats))
    assert torch.equal(d_log_scales, torch.zeros_like(log_scales))


def bilerp(plane: np.ndarray, u: float, v: float) -> np.ndarray:
    """plane [C,rows,cols]; u in [-1,1] along cols, v along rows, corners at the edge centres."""
    rows, cols = plane.shape[1:]
    x, y = (u + 1) / 2 * (cols - 1), (v + 1) / 2 * (rows - 1)
    x0, y0 = min(int(np.floor(x)), cols - 2), min(int(np.floor(y)), rows - 2)
    fx, fy = x - x0, y - y0
    return (
        plane[:, y0, x0] * (1 - fx) * (1 - fy) + plane[:, y0, x0 + 1] * fx * (1 - fy)
        + plane[:, y0 + 1, x0] * (1 - fx) * fy + plane[:, y0 + 1, x0 + 1] * fx * fy
    )


def test_features_are_the_hadamard_product_of_six_bilinear_planes():
    cfg = DeformationConfig(bounds=1.5, resolution=6, time_resolution=4, multires=(1, 2), features=3, hidden=8)
    field = DeformationField(cfg)
    with torch.no_grad():
        for level in field.grids:
            for plane in level.values():
                plane.uniform_(0.5, 1.5)  # time planes too, so every plane matters
    point, tau = np.array([0.3, -1.1, 0.7]), 0.8
    coord = {"x": point[0] / 1.5, "y": point[1] / 1.5, "z": point[2] / 1.5, "t": 2 * tau - 1}
    expected = []
    for level in field.grids:
        product = np.ones(3)
        # the plane over axes (a, c) stores a along its columns, c along its rows
        for a, c in ("xy", "xz", "yz", "xt", "yt", "zt"):
            product = product * bilerp(level[a + c].detach()[0].numpy().astype(np.float64), coord[a], coord[c])
        expected.append(product)
    got = field.features(torch.from_numpy(point[None]).float(), tau)[0].detach().numpy()
    np.testing.assert_allclose(got, np.concatenate(expected), rtol=1e-5)
    # a point beyond the bounds reads the border (padding_mode="border")
    far = field.features(torch.tensor([[5.0, -1.1, 0.7]]), tau)
    edge = field.features(torch.tensor([[1.5, -1.1, 0.7]]), tau)
    torch.testing.assert_close(far, edge)


def test_gradient_reaches_grid_and_mlp():
    field = DeformationField(SMALL)
    opt = torch.optim.Adam([{k: v for k, v in g.items() if k != "name"} for g in field.param_groups()])
    means, quats, log_scales = random_gaussians(64)
    target = means + torch.tensor([0.05, -0.02, 0.03])
    for step in range(2):
        opt.zero_grad()
        m, q, s = field.deform(means, quats, log_scales, 0.6)
        loss = (m - target).square().mean() + (s - log_scales - 0.1).square().mean() + (1 - (q * quats).sum(-1)).mean()
        loss.backward()
        if step == 0:  # heads' last layers are zero: they get gradient, the grid not yet
            assert field.head_means[-1].weight.grad.abs().sum() > 0
        opt.step()
    grid_grad = sum(p.grad.abs().sum() for p in field.grids.parameters())
    mlp_grad = sum(p.grad.abs().sum() for g in field.param_groups() if g["name"] == "deformation_mlp" for p in g["params"])
    assert grid_grad > 0 and mlp_grad > 0
    # the time planes get a gradient, so the deformation can vary with tau
    assert field.grids[0]["xt"].grad.abs().sum() > 0
    # trained at tau = 0.6 only: the time planes changed at the rows around it, not at tau = 0
    m0, _, _ = field.deform(means, quats, log_scales, 0.0)
    m6, _, _ = field.deform(means, quats, log_scales, 0.6)
    assert not torch.equal(m0, means) and not torch.equal(m0, m6)


def test_param_groups_cover_every_parameter_once_with_their_rates():
    field = DeformationField(SMALL)
    groups = {g["name"]: g for g in field.param_groups()}
    assert groups["deformation_grid"]["lr"] == SMALL.lr_grid and groups["deformation_mlp"]["lr"] == SMALL.lr_mlp
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(field.parameters()))
    assert len(groups["deformation_grid"]["params"]) == 6 * len(SMALL.multires)


def test_regulariser_closed_forms():
    cfg = DeformationConfig(resolution=5, time_resolution=6, multires=(1,), features=2, hidden=8)
    field = DeformationField(cfg)
    terms = field.regulariser_terms()
    assert terms["time_smoothness"] == 0 and terms["time_l1"] == 0  # time planes are 1 at init
    with torch.no_grad():
        cols = torch.arange(5.0)
        for name in ("xy", "xz", "yz"):
            field.grids[0][name].copy_(0.3 * cols.expand(1, 2, 5, 5))  # ramp along columns
        t = torch.arange(6.0)[:, None]
        for name in ("xt", "yt", "zt"):  # plane [1,C,T,space]: a parabola in t, slope 2 per step^2
            field.grids[0][name].copy_((1 + t**2).expand(1, 2, 6, 5))
    terms = field.regulariser_terms()
    # TV: column differences 0.3 everywhere, row differences 0 -> 2 * 0.09 per plane, 3 planes
    np.testing.assert_allclose(terms["tv"].item(), 3 * 2 * 0.09, rtol=1e-6)
    # second difference of t^2 is 2 -> 4 per plane
    np.testing.assert_allclose(terms["time_smoothness"].item(), 3 * 4.0, rtol=1e-6)
    # |1 - (1 + t^2)| averaged over t = 0..5: (0+1+4+9+16+25)/6
    np.testing.assert_allclose(terms["time_l1"].item(), 3 * 55 / 6, rtol=1e-6)
    total = field.regulariser()
    np.testing.assert_allclose(total.item(), 1e-4 * 0.54 + 0.01 * 12 + 1e-4 * 27.5, rtol=1e-6)
