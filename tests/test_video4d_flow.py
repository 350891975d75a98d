"""Optical flow pieces (core/pipelines/video4d/flow.py): DIS on a known shift, the
forward-backward check on a synthetic occlusion, warping against numpy, the flow loss."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from core.errors import UserError
from core.pipelines.video4d.flow import dis_flow, flow_loss, forward_backward_valid, warp


def textured(size: int = 96, seed: int = 0) -> np.ndarray:
    """[H,W,3] float32 in [0,1]: smoothed noise, texture at several scales."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), np.float32)
    for sigma, amp in ((1.0, 0.4), (3.0, 0.4), (8.0, 0.6)):
        noise = rng.standard_normal((size, size, 3)).astype(np.float32)
        image += amp * cv2.GaussianBlur(noise, (0, 0), sigma) / cv2.GaussianBlur(noise, (0, 0), sigma).std()
    return ((image - image.min()) / (image.max() - image.min())).astype(np.float32)


def shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """b(x + d) = a(x) (wrapping at the edges; compare the interior only)."""
    return np.roll(image, (dy, dx), axis=(0, 1))


@pytest.mark.parametrize("dx, dy", [(3, -2), (-4, 5)])
def test_dis_recovers_an_integer_shift(dx, dy):
    a = textured(96)
    b = shift(a, dx, dy)
    flow = dis_flow(a, b)
    assert flow.shape == (96, 96, 2) and flow.dtype == torch.float32
    inner = flow[16:-16, 16:-16]
    err = (inner - torch.tensor([float(dx), float(dy)])).norm(dim=-1)
    assert err.max() < 0.5, err.max()
    # tensors in, the same answer
    torch.testing.assert_close(dis_flow(torch.from_numpy(a), torch.from_numpy(b)), flow)


def test_unknown_preset_is_a_user_error():
    with pytest.raises(UserError, match="medium"):
        dis_flow(textured(16), textured(16), preset="slow")


def test_forward_backward_rejects_the_pixels_covered_in_the_next_frame():
    """Static background, a square moving 4 px right. Forward flow: 4 on the square, 0 elsewhere;
    backward flow: -4 on the moved square. Background pixels in the 4 px strip right of the
    square are covered in frame b: their (zero) forward flow lands on the square, whose backward
    flow sends them 4 px left. Everything else is consistent."""
    h, w, y0, y1, x0, x1, step = 48, 64, 10, 30, 12, 28, 4
    flow_ab = torch.zeros(h, w, 2)
    flow_ab[y0:y1, x0:x1, 0] = step
    flow_ba = torch.zeros(h, w, 2)
    flow_ba[y0:y1, x0 + step : x1 + step, 0] = -step
    valid = forward_backward_valid(flow_ab, flow_ba)
    expected = torch.ones(h, w, dtype=torch.bool)
    expected[y0:y1, x1 : x1 + step] = False
    assert torch.equal(valid, expected)
    # backwards: the strip uncovered in b (left of the moved square) is rejected instead
    expected_ba = torch.ones(h, w, dtype=torch.bool)
    expected_ba[y0:y1, x0 : x0 + step] = False
    assert torch.equal(forward_backward_valid(flow_ba, flow_ab), expected_ba)


def test_forward_backward_rejects_flow_leaving_the_frame():
    flow = torch.zeros(20, 30, 2)
    flow[..., 0] = 5.0
    valid = forward_backward_valid(flow, -flow)
    assert valid[:, :25].all() and not valid[:, 25:].any()


def test_dis_then_check_on_a_real_pair_keeps_the_interior():
    a = textured(96, seed=1)
    b = shift(a, 3, 1)
    valid = forward_backward_valid(dis_flow(a, b), dis_flow(b, a))
    assert valid[16:-16, 16:-16].float().mean() > 0.99


def numpy_backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """image [C,H,W], flow [H,W,2]: out[c,y,x] = bilinear image at (x + fx, y + fy), pixel
    centres at integers, zero outside (each of the four taps that falls outside reads 0)."""
    c, h, w = image.shape
    out = np.zeros_like(image, dtype=np.float64)
    for y in range(h):
        for x in range(w):
            u, v = x + flow[y, x, 0], y + flow[y, x, 1]
            x0, y0 = int(np.floor(u)), int(np.floor(v))
            for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                weight = (1 - abs(u - xi)) * (1 - abs(v - yi))
                if 0 <= xi < w and 0 <= yi < h:
                    out[:, y, x] += weight * image[:, yi, xi]
    return out


def test_warp_matches_numpy_bilinear_and_undoes_a_shift():
    a = textured(40, seed=2)
    dx, dy = 2, -3
    b = shift(a, dx, dy)
    flow = torch.zeros(1, 40, 40, 2)
    flow[..., 0], flow[..., 1] = dx, dy
    back = warp(torch.from_numpy(b).permute(2, 0, 1)[None], flow)[0].permute(1, 2, 0)
    torch.testing.assert_close(back[5:-5, 5:-5], torch.from_numpy(a)[5:-5, 5:-5])

    rng = np.random.default_rng(3)
    smooth = np.stack([cv2.GaussianBlur(rng.standard_normal((40, 40)).astype(np.float32), (0, 0), 4) for _ in range(2)], -1)
    fractional = (6 * smooth / np.abs(smooth).max()).astype(np.float32)  # up to 6 px, some leave the frame
    image = a.transpose(2, 0, 1)
    got = warp(torch.from_numpy(image)[None], torch.from_numpy(fractional)[None])[0].numpy()
    np.testing.assert_allclose(got, numpy_backward_warp(image, fractional), atol=2e-5)


def test_flow_loss_zero_when_equal_and_normalised_l1_otherwise():
    h, w = 30, 40
    flow = torch.randn(h, w, 2) * 3
    alpha = torch.zeros(h, w, 1)
    alpha[5:25, 10:30] = 0.9
    valid = torch.ones(h, w, dtype=torch.bool)
    valid[:, 25:] = False
    assert flow_loss(flow.clone(), alpha, flow, valid) == 0
    # off by (4, -3) px everywhere: 4 / W + 3 / H on each selected pixel
    rendered = flow + torch.tensor([4.0, -3.0])
    np.testing.assert_allclose(flow_loss(rendered, alpha, flow, valid).item(), 4 / w + 3 / h, rtol=1e-5)
    # errors where alpha is low or the check failed do not count
    rendered = flow.clone()
    rendered[:5] += 100.0
    rendered[:, 25:] += 100.0
    assert flow_loss(rendered, alpha[..., 0], flow, valid) == 0
    # the "outside" term: rendered flow there is compared with zero, averaged over those pixels
    outside = torch.zeros(h, w, dtype=torch.bool)
    outside[:2, :] = True
    rendered = flow.clone()
    expected = ((flow[:2].abs() * torch.tensor([1 / w, 1 / h])).sum(-1)).mean()
    np.testing.assert_allclose(flow_loss(rendered, alpha, flow, valid, outside=outside).item(), expected.item(), rtol=1e-5)
    # nothing selected: zero (not NaN)
    assert flow_loss(flow + 1.0, alpha, flow, torch.zeros_like(valid)) == 0
