"""NeRF backend: grid-encoded density + colour field, volume rendered through nerfacc."""

from renderers.nerf.field import AnalyticField, NerfField
from renderers.nerf.render import render_field
from renderers.nerf.scene import NerfConfig, NerfScene

__all__ = ["AnalyticField", "NerfConfig", "NerfField", "NerfScene", "render_field"]
