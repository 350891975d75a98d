"""Distillation backgrounds: random solid colours per view, a learned colour, or the scene's own."""

import pytest
import torch

from core.pipelines.backgrounds import BackgroundConfig, DistillationBackground


def test_scene_kind_leaves_the_background_to_the_scene():
    assert DistillationBackground(BackgroundConfig()).forward(1, 4) is None


def test_random_backgrounds_are_a_function_of_seed_and_step_with_the_asked_share():
    bg = DistillationBackground(BackgroundConfig(kind="random", random_prob=0.3, color=(1.0, 1.0, 1.0)), seed=5)
    assert torch.equal(bg(7, 4), bg(7, 4))
    assert not torch.equal(bg(7, 4), bg(8, 4))
    draws = torch.cat([bg(step, 4) for step in range(1, 2001)])        # [8000,3]
    assert draws.shape == (8000, 3) and draws.min() >= 0 and draws.max() <= 1
    fixed = (draws == 1.0).all(-1).float().mean()
    assert fixed == pytest.approx(0.7, abs=0.02)                        # binomial sd ~0.005
    random = draws[~(draws == 1.0).all(-1)]
    assert random.mean(0).tolist() == pytest.approx([0.5, 0.5, 0.5], abs=0.02)   # uniform in [0,1]^3


def test_learned_background_follows_its_gradient():
    bg = DistillationBackground(BackgroundConfig(kind="learned", color=(1.0, 1.0, 1.0), lr=0.1))
    optimizer = torch.optim.Adam(bg.param_groups())
    target = torch.tensor([0.2, 0.4, 0.6])
    for step in range(400):
        optimizer.zero_grad()
        ((bg(step, 2) - target) ** 2).sum().backward()
        optimizer.step()
    assert bg(0, 1)[0].tolist() == pytest.approx(target.tolist(), abs=0.02)


def test_bad_background_config_is_refused():
    with pytest.raises(ValueError, match="kind"):
        BackgroundConfig(kind="checkerboard")
    with pytest.raises(ValueError, match="random_prob"):
        BackgroundConfig(kind="random", random_prob=1.5)
