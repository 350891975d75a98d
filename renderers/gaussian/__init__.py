"""3D Gaussian splatting: gsplat-compatible rasterisation (gsplat on CUDA, tiled torch on CPU),
the GaussianScene, densification and splat file I/O."""

from renderers.gaussian.densify import DensifyConfig
from renderers.gaussian.ply import GaussianData, SplatFormatError, load_gaussians, save_gaussians
from renderers.gaussian.rasterize import rasterize
from renderers.gaussian.scene import GaussianConfig, GaussianScene

__all__ = [
    "DensifyConfig", "GaussianConfig", "GaussianData", "GaussianScene", "SplatFormatError",
    "load_gaussians", "rasterize", "save_gaussians",
]
