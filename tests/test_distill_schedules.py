import math

import pytest
import torch

from core.config import ConfigError, from_dict
from core.distill import ObjectiveConfig
from core.distill.analytic import scaled_linear_alphas_cumprod
from core.distill.schedules import ScalarSchedule, ScheduleConfig, as_schedule, sample_timesteps, timestep_weight

T = 1000


def test_uniform_timesteps_fill_their_range():
    cfg = ScheduleConfig(t_min=0.2, t_max=0.5)
    t = sample_timesteps(cfg, 0.3, 20000, T, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (20000,)
    lo, hi = round(0.2 * 999), round(0.5 * 999)
    assert int(t.min()) == lo and int(t.max()) == hi
    # Uniform: each half of the range gets half the draws.
    assert abs(float((t <= (lo + hi) / 2).float().mean()) - 0.5) < 0.02


def test_linear_anneal_moves_both_bounds():
    cfg = ScheduleConfig(t_min=0.02, t_max=0.98, timestep_schedule="linear", t_min_end=0.02, t_max_end=0.5)
    assert cfg.bounds(0.0) == (0.02, 0.98)
    assert cfg.bounds(1.0) == pytest.approx((0.02, 0.5))
    assert cfg.bounds(0.5) == pytest.approx((0.02, 0.74))
    t = sample_timesteps(cfg, 1.0, 5000, T, generator=torch.Generator().manual_seed(0))
    assert int(t.max()) == round(0.5 * 999)
    both = ScheduleConfig(t_min=0.4, t_max=0.98, timestep_schedule="linear", t_min_end=0.02, t_max_end=0.3)
    assert both.bounds(0.5) == pytest.approx((0.21, 0.64))


def test_hifa_sqrt_anneal_is_deterministic():
    cfg = ScheduleConfig(t_min=0.02, t_max=0.98, timestep_schedule="sqrt")
    for p in (0.0, 0.25, 0.5, 1.0):
        t = sample_timesteps(cfg, p, 4, T)
        expected = round((0.98 - 0.96 * math.sqrt(p)) * 999)
        assert t.tolist() == [expected] * 4
    assert int(sample_timesteps(cfg, 0.25, 1, T)) == round(0.5 * 999)  # sqrt(1/4) = 1/2 of the way


def test_weightings():
    ac = scaled_linear_alphas_cumprod(T)
    t = torch.tensor([10, 500, 990])
    a = ac[t]
    assert torch.allclose(timestep_weight(ac, t, "sds"), 1 - a)
    assert torch.equal(timestep_weight(ac, t, "uniform"), torch.ones(3))
    assert torch.allclose(timestep_weight(ac, t, "fantasia"), a.sqrt() * (1 - a))
    assert torch.allclose(timestep_weight(ac, t, "sqrt"), a.sqrt() * (1 - a))
    with pytest.raises(ValueError, match="weighting"):
        timestep_weight(ac, t, "snr")


def test_scalar_schedules():
    assert ScalarSchedule("constant", 7.5)(0.7) == 7.5
    lin = ScalarSchedule("linear", 100.0, 7.5)
    assert lin(0.0) == 100.0 and lin(1.0) == 7.5 and lin(0.5) == pytest.approx(53.75)
    cos = ScalarSchedule("cosine", 1.0, 0.0)
    assert cos(0.0) == pytest.approx(1.0) and cos(1.0) == pytest.approx(0.0) and cos(0.5) == pytest.approx(0.5)
    assert cos(0.25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lin(-1.0) == 100.0 and lin(2.0) == 7.5  # progress is clamped
    assert as_schedule(3)(0.9) == 3.0 and as_schedule(None) is None
    with pytest.raises(ValueError, match="end"):
        ScalarSchedule("linear", 1.0)


def test_schedule_config_rejects_impossible_ranges():
    with pytest.raises(ValueError, match="t_min"):
        ScheduleConfig(t_min=0.9, t_max=0.5)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        ScheduleConfig(t_max=980)
    with pytest.raises(ValueError, match="end of training"):
        ScheduleConfig(timestep_schedule="linear", t_min=0.2, t_max=0.9, t_max_end=0.1)


def test_objective_config_from_yaml_data():
    cfg = from_dict(ObjectiveConfig, {
        "kind": "dsd", "guidance_scale": {"kind": "linear", "start": 7.5, "end": 3.0},
        "dsd_variational": 0.3, "schedule": {"timestep_schedule": "sqrt", "weighting": "fantasia"},
        "pgc": {"enabled": True, "threshold": 0.05}, "lora": {"rank": 8},
    })
    assert cfg.guidance_scale(1.0) == 3.0 and cfg.dsd_variational == 0.3
    assert cfg.schedule.weighting == "fantasia" and cfg.pgc.threshold == 0.05 and cfg.lora.rank == 8
    with pytest.raises(ConfigError, match="kind"):
        from_dict(ObjectiveConfig, {"kind": "sjc"})
