from renderers.gaussian.rasterize import rasterize

__all__ = ["rasterize"]
