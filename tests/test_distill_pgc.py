import pytest
import torch

from core.distill import PGCConfig, PixelGradientClipper, clip_pixel_gradients
from core.distill.diagnostics import flatten, gradient_magnitude_map
from core.distill.pgc import pixel_norms


def _grad_with_known_norms(norm: str):
    """[2,3,4,4] gradient whose pixels have norms spread over (0, 1]."""
    g = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    n = pixel_norms(g, norm)
    target = torch.linspace(0.01, 1.0, n.numel()).view_as(n)
    return g / n * target


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_small_gradients_pass_untouched_and_large_ones_get_norm_c(norm):
    c = 0.3
    g = _grad_with_known_norms(norm)
    out = clip_pixel_gradients(g, c, norm)
    n = pixel_norms(g, norm)
    below = (n <= c).expand_as(g)
    assert below.any() and (~below).any()
    assert torch.equal(out[below], g[below])  # bit for bit
    n_out = pixel_norms(out, norm)
    above = n > c
    assert torch.allclose(n_out[above], torch.full_like(n_out[above], c), atol=1e-6)
    # Direction kept: the clipped vector is a positive multiple of the original.
    cos = torch.nn.functional.cosine_similarity(out, g, dim=1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-6)


def test_linf_is_the_max_over_channels():
    g = torch.zeros(1, 3, 1, 1)
    g[0, :, 0, 0] = torch.tensor([0.3, -0.4, 0.1])
    out = clip_pixel_gradients(g, 0.2, "linf")
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.15, -0.2, 0.05]))
    out = clip_pixel_gradients(g, 0.2, "l2")
    assert torch.allclose(out[0, :, 0, 0].norm(), torch.tensor(0.2))


@pytest.mark.parametrize("scale", [1.0, 1024.0])
def test_hook_clips_at_c_times_the_amp_scale_and_records(scale):
    c = 0.1
    image = torch.zeros(2, 3, 4, 4, requires_grad=True)
    g = _grad_with_known_norms("linf") * scale  # as AMP hands it: scaled
    clipper = PixelGradientClipper(PGCConfig(enabled=True, threshold=c), grad_scale=lambda: scale)
    record = {}
    clipper.attach(image, record)
    (image * g).sum().backward()
    expected = clip_pixel_gradients(g, c * scale, "linf")
    assert torch.equal(image.grad, expected)
    assert float(pixel_norms(image.grad).max()) == pytest.approx(c * scale, rel=1e-6)
    frac = float((pixel_norms(g) > c * scale).float().mean())
    assert record["image_pgc_clipped_fraction"] == pytest.approx(frac) and 0 < frac < 1
    # Norms are logged unscaled, so runs with and without AMP read the same.
    assert record["image_grad_norm_before"] == pytest.approx(float(g.norm()) / scale, rel=1e-5)
    assert record["image_grad_norm_after"] == pytest.approx(float(expected.norm()) / scale, rel=1e-5)
    assert record["image_pixel_grad_max"] == pytest.approx(1.0, rel=1e-5)
    assert clipper.pixel_norms["image"].shape == (2, 1, 4, 4)


def test_disabled_hook_only_records_and_hooks_do_not_pile_up():
    image = torch.zeros(1, 3, 2, 2, requires_grad=True)
    clipper = PixelGradientClipper(PGCConfig(enabled=False, threshold=1e-3))
    g = torch.ones(1, 3, 2, 2)
    for _ in range(3):  # the same leaf attached every step, as when optimising an image directly
        record = {}
        clipper.attach(image, record)
        image.grad = None
        (image * g).sum().backward()
    assert torch.equal(image.grad, g)
    assert record["image_pgc_clipped_fraction"] == 0.0
    assert record["image_grad_norm_before"] == record["image_grad_norm_after"] == pytest.approx(float(g.norm()))
    assert len(image._backward_hooks) == 1


def test_gradient_magnitude_map_and_flatten():
    g = torch.zeros(2, 3, 2, 2)
    g[0, 0, 0, 0] = 3.0
    g[0, 1, 1, 1] = 4.0
    m = gradient_magnitude_map(g)
    assert m.shape == (2, 1, 2, 2)
    assert m[0, 0, 1, 1] == 1.0 and m[0, 0, 0, 0] == pytest.approx(0.75)
    assert torch.equal(m[1], torch.zeros(1, 2, 2))  # an all-zero gradient stays zero
    flat = flatten({"a": 1, "b": {"c": torch.tensor(2.0), "d": "x"}, "e": torch.ones(3), "f": True})
    assert flat == {"a": 1.0, "b/c": 2.0}

