"""Image-based lighting: an environment map with its irradiance and pre-filtered specular levels."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from renderers.shading.cubemap import CubeMap
from renderers.shading.envmap import load_envmap, sample_equirect
from renderers.shading.prefilter import prefilter_specular, sample_prefiltered
from renderers.shading.sh import project_sh9, sh9_irradiance


class EnvironmentLight:
    """Distant lighting from an equirect radiance map `envmap` [H,W,3] (linear, >= 0, H even).

    SH irradiance and the GGX pre-filtered levels are computed on first use and cached
    while the map is unchanged; a map that requires grad (a learned environment) is
    re-filtered on every call so gradients reach it.
    """

    def __init__(self, envmap: Tensor, levels: int = 6, samples: int = 96):
        if envmap.ndim != 3 or envmap.shape[-1] != 3:
            raise ValueError(f"envmap must be [H,W,3], got {tuple(envmap.shape)}")
        if envmap.shape[0] % 2:
            raise ValueError(f"envmap height must be even for pre-filtering, got {envmap.shape[0]}")
        self.envmap = envmap
        self.levels = levels
        self.samples = samples
        self._cache: dict[str, object] = {}
        self._cache_key: tuple | None = None

    @classmethod
    def from_file(cls, path: str | Path, height: int | None = 128, device=None, **kwargs) -> "EnvironmentLight":
        """Load .hdr/.exr/.png/... (see `load_envmap`), resized to [height, 2*height]."""
        return cls(load_envmap(path, height=height, device=device), **kwargs)

    @classmethod
    def constant(cls, radiance, height: int = 16, device=None, **kwargs) -> "EnvironmentLight":
        """Uniform environment of `radiance` (scalar or [3]) in every direction."""
        value = torch.as_tensor(radiance, dtype=torch.float32, device=device).expand(3)
        return cls(value.expand(height, 2 * height, 3).clone(), **kwargs)

    @classmethod
    def from_cubemap(cls, cube: CubeMap, height: int = 64, **kwargs) -> "EnvironmentLight":
        """Lighting from a learnable `CubeMap`; differentiable in its faces."""
        return cls(cube.to_equirect(height), **kwargs)

    def _cached(self, name: str, compute):
        if self.envmap.requires_grad and torch.is_grad_enabled():
            return compute()
        key = (self.envmap.data_ptr(), self.envmap._version, tuple(self.envmap.shape), self.envmap.device)
        if key != self._cache_key:
            self._cache, self._cache_key = {}, key
        if name not in self._cache:
            self._cache[name] = compute()
        return self._cache[name]

    def radiance(self, directions: Tensor) -> Tensor:
        """Unfiltered radiance [...,3] along unit directions [...,3] (the visible background)."""
        return sample_equirect(self.envmap, directions)

    def sh_coefficients(self) -> Tensor:
        """[9,3] SH projection of the radiance."""
        return self._cached("sh", lambda: project_sh9(self.envmap))

    def irradiance(self, normals: Tensor) -> Tensor:
        """Irradiance E(n) [...,3] >= 0 at unit normals [...,3]; pi * L for a constant L."""
        return sh9_irradiance(self.sh_coefficients(), normals).clamp_min(0.0)

    def prefiltered_levels(self) -> list[Tensor]:
        return self._cached("specular", lambda: prefilter_specular(self.envmap, self.levels, self.samples))

    def specular(self, directions: Tensor, roughness: Tensor) -> Tensor:
        """GGX pre-filtered radiance [...,3] along reflected directions [...,3], roughness [...,1]."""
        return sample_prefiltered(self.prefiltered_levels(), directions, roughness)
