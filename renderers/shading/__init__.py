"""PBR shading: environment maps, GGX split-sum image-based lighting, SH irradiance, tone mapping.

Per-pixel inputs are channel-last tensors in world space (+Z up); outputs are linear
radiance, tone-mapped for display with `tonemap`.
"""

from renderers.shading.brdf import (
    brdf_lut,
    cook_torrance_specular,
    fresnel_schlick,
    ggx_distribution,
    lookup_brdf_lut,
    smith_g_schlick_ggx,
    smith_visibility_height_correlated,
)
from renderers.shading.cubemap import CubeMap, cubemap_to_equirect, equirect_to_cubemap, sample_cubemap
from renderers.shading.environment import EnvironmentLight
from renderers.shading.envmap import (
    direction_to_equirect_uv,
    equirect_uv_to_direction,
    load_envmap,
    read_radiance_hdr,
    sample_equirect,
    write_radiance_hdr,
)
from renderers.shading.lights import DirectionalLight
from renderers.shading.pbr import ShadingComponents, shade, shade_components
from renderers.shading.sh import project_sh9, sh9_irradiance
from renderers.shading.tonemap import aces_filmic, srgb_decode, srgb_encode, tonemap

__all__ = [
    "CubeMap", "DirectionalLight", "EnvironmentLight", "ShadingComponents",
    "aces_filmic", "brdf_lut", "cook_torrance_specular", "cubemap_to_equirect", "direction_to_equirect_uv",
    "equirect_to_cubemap", "equirect_uv_to_direction", "fresnel_schlick", "ggx_distribution", "load_envmap",
    "lookup_brdf_lut", "project_sh9", "read_radiance_hdr", "sample_cubemap", "sample_equirect", "shade",
    "shade_components", "sh9_irradiance", "smith_g_schlick_ggx", "smith_visibility_height_correlated",
    "srgb_decode", "srgb_encode", "tonemap", "write_radiance_hdr",
]
