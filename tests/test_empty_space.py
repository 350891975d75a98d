"""Regularisers that prefer empty space: alpha sparsity cannot reach Gaussians hidden behind an
opaque stack; the per-Gaussian opacity term reaches every one."""

import math

import torch

from core.export.cleanliness import top_camera
from core.regularisers import RegulariserConfig, regularise
from tests.synthetic_scenes import torus_scene


def test_alpha_sparsity_misses_a_thick_plug_that_gaussian_opacity_reaches():
    scene = torus_scene(plug=True)
    cams = top_camera(64)
    n = len(scene)
    logits = scene.params["opacities"]

    out = scene.render(cams)
    total, stats = regularise(RegulariserConfig(opacity=1.0), scene, out, cams, 0.5)
    total.backward()
    alpha_grad = logits.grad.clone()
    logits.grad = None
    out = scene.render(cams)
    total, stats = regularise(RegulariserConfig(gaussian_opacity=2.0), scene, out, cams, 0.5)
    total.backward()
    # d/dx of 2 * mean(sigmoid(x)) = 2 sigmoid'(x) / N, for every Gaussian, seen or not
    o = torch.sigmoid(logits.detach())
    assert torch.allclose(logits.grad, 2 * o * (1 - o) / n, rtol=1e-5)
    assert math.isclose(stats["reg_gaussian_opacity"], float(o.mean()), rel_tol=1e-6)
    # the plug's lower layers (z < 0, under the upper ones from above) get next to nothing
    # from alpha sparsity, against a visible top layer
    means = scene.params["means"].detach()
    plug = means[:, :2].norm(dim=-1) < 0.2
    top_layer = plug & (means[:, 2] > 0.05)
    hidden = plug & (means[:, 2] < -0.05)
    assert hidden.any() and top_layer.any()
    assert alpha_grad[hidden].abs().max() < 0.01 * alpha_grad[top_layer].abs().mean()
