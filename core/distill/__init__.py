"""Score distillation: objectives (SDS / VSD / DSD) on one gradient path, their timestep
and weight schedules, VSD's LoRA branch, pixel-wise gradient clipping and diagnostics."""

from core.distill.objectives import ObjectiveConfig, ScoreDistillation, VariationalScore, build
from core.distill.pgc import PGCConfig, PixelGradientClipper, clip_pixel_gradients
from core.distill.schedules import ScalarSchedule, ScheduleConfig

__all__ = [
    "ObjectiveConfig", "ScoreDistillation", "VariationalScore", "build",
    "PGCConfig", "PixelGradientClipper", "clip_pixel_gradients",
    "ScalarSchedule", "ScheduleConfig",
]
