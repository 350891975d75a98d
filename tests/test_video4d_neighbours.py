"""k nearest neighbours and the local rigidity / scale regularisers
(core/pipelines/video4d/neighbours.py) against sorting and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.pipelines.video4d.deformation import DeformationConfig, DeformationField, quaternion_multiply
from core.pipelines.video4d.neighbours import (
    knn,
    local_scale_loss,
    neighbour_weights,
    quaternion_to_matrix,
    relative_rotation,
    rigidity_loss,
)

# 90 degrees about +z: x -> y, y -> -x
QZ90 = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
RZ90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
TRIANGLE = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
ALL_OTHERS = torch.tensor([[1, 2], [0, 2], [0, 1]])


def test_knn_matches_sorting_all_distances():
    points = torch.rand(700, 3, dtype=torch.float64)
    idx, dist = knn(points, 8, chunk=256)  # three chunks, the last one short
    p = points.numpy()
    all_d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
    np.fill_diagonal(all_d, np.inf)
    order = np.argsort(all_d, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(idx.numpy(), order)
    np.testing.assert_allclose(dist.numpy(), np.take_along_axis(all_d, order, 1), rtol=1e-12)
    with pytest.raises(ValueError):
        knn(points[:5], 5)


def test_knn_excludes_self_even_with_duplicates():
    points = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0]])
    idx, dist = knn(points, 1)
    assert idx[:2, 0].tolist() == [1, 0] and idx[2, 0] in (0, 1)
    assert dist[0, 0] == 0 and dist[1, 0] == 0 and dist[2, 0] == 1


def test_quaternion_conventions():
    torch.testing.assert_close(quaternion_to_matrix(QZ90), RZ90)
    q = torch.nn.functional.normalize(torch.randn(10, 4), dim=-1)
    # Q = q_to q_from^-1 takes from to to: R(Q) R(from) = R(to)
    q_to = torch.nn.functional.normalize(torch.randn(10, 4), dim=-1)
    Q = relative_rotation(q_to, q)
    torch.testing.assert_close(quaternion_to_matrix(Q) @ quaternion_to_matrix(q), quaternion_to_matrix(q_to))


def test_rigidity_zero_for_rigid_motion_and_hand_value_for_stretch():
    weights = torch.ones(3, 2)
    moved = TRIANGLE @ RZ90.T + torch.tensor([0.3, -2.0, 5.0])
    rotations = QZ90.expand(3, 4)
    assert rigidity_loss(TRIANGLE, moved, rotations, ALL_OTHERS, weights) < 1e-6
    assert rigidity_loss(TRIANGLE, moved, RZ90.expand(3, 3, 3), ALL_OTHERS, weights) < 1e-6  # matrices too
    # the translation alone with the rotation left out is not rigid for these rotations
    assert rigidity_loss(TRIANGLE, moved, torch.tensor([1.0, 0, 0, 0]).expand(3, 4), ALL_OTHERS, weights) > 0.5

    # stretch x by 2, no rotation. Offsets (ref -> now) and residual norms:
    #   i=0: j=1 (1,0,0)->(2,0,0): 1    j=2 (0,1,0)->(0,1,0): 0
    #   i=1: j=0 (-1,0,0)->(-2,0,0): 1  j=2 (-1,1,0)->(-2,1,0): 1
    #   i=2: j=0 (0,-1,0)->(0,-1,0): 0  j=1 (1,-1,0)->(2,-1,0): 1
    stretched = TRIANGLE * torch.tensor([2.0, 1.0, 1.0])
    identity = torch.tensor([1.0, 0, 0, 0]).expand(3, 4)
    np.testing.assert_allclose(rigidity_loss(TRIANGLE, stretched, identity, ALL_OTHERS, weights).item(), 4 / 6, rtol=1e-6)
    w = torch.tensor([[0.5, 2.0], [1.0, 3.0], [7.0, 0.25]])
    expected = (0.5 * 1 + 2.0 * 0 + 1.0 * 1 + 3.0 * 1 + 7.0 * 0 + 0.25 * 1) / 6
    np.testing.assert_allclose(rigidity_loss(TRIANGLE, stretched, identity, ALL_OTHERS, w).item(), expected, rtol=1e-6)


def test_rigidity_between_frames_uses_relative_rotation():
    points = torch.randn(50, 3)
    q_prev = torch.nn.functional.normalize(torch.randn(50, 4), dim=-1)
    prev = points @ RZ90.T  # some earlier rigid state
    now = prev @ RZ90.T + 1.0  # a further 90 degrees about z, then a shift
    # per Gaussian, its orientation turns with the body: q_now_i = QZ90 * q_prev_i
    q_now = quaternion_multiply(QZ90.expand(50, 4), q_prev)
    idx, dist = knn(prev, 6)
    loss = rigidity_loss(prev, now, relative_rotation(q_now, q_prev), idx, neighbour_weights(dist))
    assert loss < 1e-6
    # the swapped order (DreamScene4D's code, see the module doc) is not zero for this motion
    swapped = relative_rotation(q_prev, q_now)
    assert rigidity_loss(prev, now, swapped, idx, torch.ones_like(dist)) > 0.5


def test_local_scale_loss_hand_values():
    weights = torch.ones(3, 2)
    assert local_scale_loss(torch.full((3, 3), 0.7), ALL_OTHERS, weights) < 1e-9  # uniform growth
    change = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [1.0, 1, 1]])
    # pairs (0,1) (1,0): 0; (0,2) (1,2) (2,0) (2,1): sqrt(3)
    np.testing.assert_allclose(local_scale_loss(change, ALL_OTHERS, weights).item(), 4 * math.sqrt(3) / 6, rtol=1e-6)


def test_neighbour_weights_reproduce_dreamscene4d_weight_inside_the_root():
    d = torch.rand(20, 4)
    r = torch.rand(20, 4)
    ours = neighbour_weights(d) * r
    theirs = torch.sqrt(torch.exp(-10.0 * d) * r**2)  # gs_renderer_4d.py: sqrt(w ||r||^2), w = exp(-10 d)
    torch.testing.assert_close(ours, theirs)


def test_regularisers_have_gradients_through_the_field():
    field = DeformationField(DeformationConfig(resolution=8, time_resolution=4, multires=(1,), features=4, hidden=16))
    with torch.no_grad():
        field.head_means[-1].weight.normal_(std=0.1)
        field.head_scales[-1].weight.normal_(std=0.1)
    means = torch.rand(100, 3) - 0.5
    idx, dist = knn(means, 8)
    d_means, d_quats, d_log_scales = field(means, 0.4)
    w = neighbour_weights(dist)
    loss = rigidity_loss(means, means + d_means, d_quats, idx, w) + local_scale_loss(d_log_scales, idx, w)
    loss.backward()
    assert field.head_means[-1].weight.grad.abs().sum() > 0
    assert field.head_scales[-1].weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in field.parameters() if p.grad is not None)
