"""Cheap analytic lighting: one directional light plus ambient, for procedural scenes and previews."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from renderers.shading.brdf import DIELECTRIC_F0, as_channel, cook_torrance_specular


@dataclass
class DirectionalLight:
    """A sun: `direction` [3] from the surface towards the light (world, +Z up; normalised
    on use), `irradiance` [3] or scalar (W/m^2 on a surface facing it), and a uniform
    `ambient` radiance [3] or scalar standing in for the sky."""

    direction: tuple[float, float, float] = (0.3, -0.5, 0.8)
    irradiance: float | tuple[float, float, float] = 3.0
    ambient: float | tuple[float, float, float] = 0.3

    def _vec(self, value, like: Tensor) -> Tensor:
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)

    def light_dir(self, like: Tensor) -> Tensor:
        d = self._vec(self.direction, like)
        return d / d.norm()

    def lambert(self, normal: Tensor, albedo: Tensor) -> Tensor:
        """Diffuse radiance [...,3]: albedo/pi * (E_sun max(0, n.l) + pi L_ambient); normal, albedo [...,3]."""
        n = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        n_dot_l = (n * self.light_dir(n)).sum(-1, keepdim=True).clamp_min(0.0)
        # A uniform sky of radiance L gives irradiance pi L on any surface facing it.
        irradiance = self._vec(self.irradiance, n) * n_dot_l + torch.pi * self._vec(self.ambient, n)
        return albedo / torch.pi * irradiance

    def shade(
        self, normal: Tensor, view_dir: Tensor, base_color: Tensor, roughness: Tensor | float, metallic: Tensor | float
    ) -> Tensor:
        """Metallic-roughness radiance [...,3] under the sun (GGX specular + Lambert) plus ambient.

        Same inputs as `pbr.shade` without the environment; the ambient term is diffuse only.
        """
        n = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        v = view_dir / view_dir.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        l = self.light_dir(n).expand_as(n)  # noqa: E741
        roughness, metallic = as_channel(roughness, n).clamp(0, 1), as_channel(metallic, n).clamp(0, 1)
        f0 = DIELECTRIC_F0 + (base_color - DIELECTRIC_F0) * metallic
        n_dot_l = (n * l).sum(-1, keepdim=True).clamp_min(0.0)
        sun = self._vec(self.irradiance, n) * n_dot_l
        specular = cook_torrance_specular(n, v, l, f0, roughness.expand_as(n_dot_l)) * sun
        diffuse_albedo = base_color * (1 - metallic)
        return diffuse_albedo / torch.pi * (sun + torch.pi * self._vec(self.ambient, n)) + specular
