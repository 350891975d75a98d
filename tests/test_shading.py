"""PBR shading against analytic results and brute-force integrals."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from renderers.shading import (
    CubeMap,
    DirectionalLight,
    EnvironmentLight,
    aces_filmic,
    brdf_lut,
    cook_torrance_specular,
    cubemap_to_equirect,
    direction_to_equirect_uv,
    equirect_to_cubemap,
    equirect_uv_to_direction,
    load_envmap,
    lookup_brdf_lut,
    project_sh9,
    sample_cubemap,
    sh9_irradiance,
    shade,
    shade_components,
    smith_g_schlick_ggx,
    smith_visibility_height_correlated,
    srgb_decode,
    srgb_encode,
    write_radiance_hdr,
)
from renderers.shading.cubemap import cube_face_directions, direction_to_cube_face_st
from renderers.shading.envmap import equirect_directions, equirect_solid_angles, read_radiance_hdr


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def random_directions(n, seed=0):
    return unit(torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)).float()


def sphere_normals_seen_from(view_dir, size=48):
    """Normals [N,3] of the visible pixels of a unit sphere seen orthographically along -view_dir."""
    view_dir = unit(torch.tensor(view_dir, dtype=torch.float32))
    up = unit(torch.linalg.cross(view_dir, torch.tensor([0.0, 1.0, 0.0]))) if abs(view_dir[2]) > 0.9 else \
        torch.tensor([0.0, 0.0, 1.0])
    right = unit(torch.linalg.cross(up, view_dir))
    up = torch.linalg.cross(view_dir, right)
    s = (torch.arange(size) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(s, s, indexing="ij")
    inside = xx**2 + yy**2 < 1
    x, y = xx[inside], yy[inside]
    z = torch.sqrt(1 - x**2 - y**2)
    return x[:, None] * right + y[:, None] * up + z[:, None] * view_dir


def function_envmap(fn, height):
    return fn(equirect_directions(height)).float()


# --- diffuse -----------------------------------------------------------------------------


@pytest.mark.parametrize("view_dir", [(1.0, 0.0, 0.0), (0.3, -0.4, 0.85), (0.0, 0.0, -1.0)])
def test_lambertian_sphere_under_constant_env_renders_albedo_times_radiance(view_dir):
    radiance = torch.tensor([0.5, 1.0, 2.0])
    env = EnvironmentLight.constant(radiance, height=32)
    normals = sphere_normals_seen_from(view_dir)
    assert len(normals) > 1000
    view = torch.tensor(view_dir).expand_as(normals)
    white = torch.ones_like(normals)
    out = shade_components(normals, view, white, roughness=1.0, metallic=0.0, env=env)
    # E = pi L, radiance out = albedo / pi * E = albedo * L at every visible normal.
    torch.testing.assert_close(out.diffuse, radiance.expand_as(normals), rtol=1e-3, atol=0)
    albedo = torch.tensor([0.2, 0.6, 0.9])
    out = shade_components(normals, view, albedo.expand_as(normals), 1.0, 0.0, env)
    torch.testing.assert_close(out.diffuse, (albedo * radiance).expand_as(normals), rtol=1e-3, atol=0)
    # The dielectric coat adds a little on top, and a metal has no diffuse term at all.
    assert (shade(normals, view, white, 1.0, 0.0, env) > radiance).all()
    assert shade_components(normals, view, white, 1.0, 1.0, env).diffuse.abs().max() == 0


def test_sh_irradiance_exact_for_band_limited_env():
    # L(w) = 1 + 0.5 z + 0.3 xy has only l <= 2 content, so R&H's 9 terms are exact:
    # E(n) = A0 * 1 + A1 * 0.5 n_z + A2 * 0.3 n_x n_y with A = (pi, 2pi/3, pi/4).
    def radiance(w):
        return (1 + 0.5 * w[..., 2] + 0.3 * w[..., 0] * w[..., 1])[..., None].expand(*w.shape[:-1], 3)

    env = function_envmap(radiance, 64)
    n = random_directions(500)
    expected = math.pi + (2 * math.pi / 3) * 0.5 * n[:, 2] + (math.pi / 4) * 0.3 * n[:, 0] * n[:, 1]
    got = sh9_irradiance(project_sh9(env), n)
    torch.testing.assert_close(got, expected[:, None].expand(-1, 3), rtol=1e-3, atol=1e-3)


def test_sh_irradiance_matches_monte_carlo_integral():
    # A sky-like map with a sharp horizon and a warm off-axis glow: not band-limited.
    def radiance(w):
        sky = w[..., 2:3].clamp_min(0) * torch.tensor([0.4, 0.6, 1.0])
        glow = torch.exp(8 * ((w * unit(torch.tensor([1.0, 0.5, 0.3]))).sum(-1, keepdim=True) - 1))
        return sky + glow * torch.tensor([2.0, 1.0, 0.3])

    env = function_envmap(radiance, 128)
    normals = random_directions(24, seed=1)
    w = random_directions(400_000, seed=2)
    cosine = (normals @ w.T).clamp_min(0)  # [24, S]
    brute = 4 * math.pi * cosine @ radiance(w) / len(w)  # E(n) = integral of L(w) max(0, n.w) dw
    sh = EnvironmentLight(env).irradiance(normals)
    # R&H 2001 bound the 9-term error at a few percent of the peak irradiance.
    assert (sh - brute).abs().max() < 0.03 * brute.max()
    assert brute.max() > 1.0


# --- specular ----------------------------------------------------------------------------


def test_brdf_lut_known_values():
    lut = brdf_lut()
    assert lut.shape == (64, 64, 2)
    scale, bias = lookup_brdf_lut(torch.tensor([[1.0]]), torch.tensor([[1.0]]))
    # n.v = 1, alpha = 1: the GGX + height-correlated Smith integral is 1 - ln 2 in closed form, and
    # the Fresnel part is int_0^{pi/4} 2 cos(2t) tan(t) (1 - cos t)^5 dt.
    exact_bias = integrate.quad(lambda t: 2 * math.cos(2 * t) * math.tan(t) * (1 - math.cos(t)) ** 5, 0, math.pi / 4)[0]
    assert abs(float(scale + bias) - (1 - math.log(2))) < 3e-3
    assert abs(float(bias) - exact_bias) < 1e-4
    # Smooth limit: a mirror reflects everything, and the Fresnel part is Schlick's (1 - n.v)^5.
    n_dot_v = torch.tensor([[1.0], [0.9], [0.5]])
    scale, bias = lookup_brdf_lut(n_dot_v, torch.zeros_like(n_dot_v))
    torch.testing.assert_close(scale + bias, torch.ones_like(n_dot_v), atol=2e-3, rtol=0)
    torch.testing.assert_close(bias, (1 - n_dot_v) ** 5, atol=2e-3, rtol=0)
    # Rougher lobes lose more energy to masking at normal incidence.
    assert (lut[-1, 1:].sum(-1) <= lut[-1, :-1].sum(-1) + 1e-4).all()


@pytest.mark.parametrize("n_dot_v,roughness", [(0.9, 0.5), (0.5, 0.8), (0.3, 1.0)])
def test_brdf_lut_matches_brute_force_integral_of_the_brdf(n_dot_v, roughness):
    # Uniform hemisphere sampling of cook_torrance_specular * n.l, independent of the LUT's GGX sampling.
    g = torch.Generator().manual_seed(3)
    u = torch.rand(2, 400_000, generator=g, dtype=torch.float64)
    cos_t, phi = u[0], 2 * math.pi * u[1]
    sin_t = torch.sqrt(1 - cos_t**2)
    light = torch.stack([sin_t * torch.cos(phi), sin_t * torch.sin(phi), cos_t], -1)
    normal = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(light)
    view = torch.tensor([math.sqrt(1 - n_dot_v**2), 0.0, n_dot_v], dtype=torch.float64).expand_as(light)
    rough = torch.full((len(light), 1), roughness, dtype=torch.float64)

    def integral(f0):
        f = cook_torrance_specular(normal, view, light, torch.full_like(rough, f0), rough)
        return float((f[:, 0] * cos_t).mean() * 2 * math.pi)

    scale, bias = lookup_brdf_lut(torch.tensor([[n_dot_v]]), torch.tensor([[roughness]]))
    assert abs(integral(1.0) - float(scale + bias)) < 0.01
    assert abs(integral(0.0) - float(bias)) < 0.01


def test_smith_masking_forms_agree():
    cos = torch.tensor([1.0, 0.8, 0.5, 0.2])
    alpha = torch.tensor(0.3)
    # Smith GGX Lambda (Heitz 2014 eq. 72); with v = l the height-correlated G2 is 1 / (1 + 2 Lambda).
    lam = (-1 + torch.sqrt(1 + alpha**2 * (1 - cos**2) / cos**2)) / 2
    correlated = 4 * cos * cos * smith_visibility_height_correlated(cos, cos, alpha)
    torch.testing.assert_close(correlated, 1 / (1 + 2 * lam))
    # Schlick's G1 with k = alpha/2 is Karis's fit to Smith's G1 = 1 / (1 + Lambda).
    separable = smith_g_schlick_ggx(cos, cos, alpha)
    assert ((separable.sqrt() - 1 / (1 + lam)).abs() < 0.1).all()
    assert separable[0] == 1 and (separable.diff() < 0).all()


def test_white_furnace_ggx_with_f0_one_reflects_at_most_the_environment():
    radiance = 1.5
    env = EnvironmentLight.constant(radiance, height=32)
    normal = torch.tensor([0.0, 0.0, 1.0]).expand(200, 3)
    rough, n_dot_v = torch.meshgrid(torch.linspace(0, 1, 20), torch.linspace(0.05, 1, 10), indexing="ij")
    rough, n_dot_v = rough.reshape(-1, 1), n_dot_v.reshape(-1, 1)
    view = torch.cat([torch.sqrt(1 - n_dot_v**2), torch.zeros_like(n_dot_v), n_dot_v], -1)
    out = shade_components(normal, view, torch.ones(200, 3), rough, 1.0, env)  # metallic 1: F0 = base colour = 1
    assert out.diffuse.abs().max() == 0
    assert (out.specular <= radiance * 1.002).all()
    smooth = (rough[:, 0] <= 0.15) & (n_dot_v[:, 0] >= 0.3)
    assert (out.specular[smooth] >= radiance * 0.98).all()
    assert out.specular.min() > 0.2 * radiance


def test_prefiltered_levels_blur_with_roughness_and_keep_energy():
    sun = unit(torch.tensor([0.2, 0.3, 1.0]))
    env = function_envmap(lambda w: (torch.exp(60 * ((w * sun).sum(-1, keepdim=True) - 1)) + 0.05).expand(
        *w.shape[:-1], 3), 64)
    light = EnvironmentLight(env, levels=5)
    levels = light.prefiltered_levels()
    assert levels[0] is env and [lvl.shape[0] for lvl in levels] == [64, 32, 16, 8, 8]
    energy = [float((lvl[..., 0] * equirect_solid_angles(*lvl.shape[:2])).sum()) for lvl in levels]
    peaks = [float(lvl.max()) for lvl in levels]
    assert all(abs(e - energy[0]) < 0.15 * energy[0] for e in energy)
    assert all(a > b for a, b in zip(peaks, peaks[1:]))
    # The mirror level points at the sun; the lookup blends levels linearly in roughness.
    along_sun = light.specular(sun[None], torch.tensor([[0.0]]))
    assert along_sun[0, 0] > 0.9 * peaks[0]
    mid = light.specular(sun[None], torch.tensor([[0.125]]))
    torch.testing.assert_close(mid, 0.5 * (light.specular(sun[None], torch.zeros(1, 1))
                                           + light.specular(sun[None], torch.full((1, 1), 0.25))), rtol=1e-5, atol=1e-6)


def test_learnable_cubemap_receives_gradients_through_shading():
    cube = CubeMap(resolution=8, init=0.7)
    normals = random_directions(64)
    out = shade(normals, normals, torch.full((64, 3), 0.5), 0.4, 0.2, cube)
    out.sum().backward()
    assert cube.faces.grad is not None and cube.faces.grad.abs().sum() > 0
    # Caching must not freeze a learned environment: a changed map changes the shading.
    with torch.no_grad():
        cube.faces.mul_(2)
    again = shade(normals, normals, torch.full((64, 3), 0.5), 0.4, 0.2, cube)
    torch.testing.assert_close(again, 2 * out.detach(), rtol=1e-4, atol=1e-5)


def test_cached_environment_refreshes_when_the_map_changes_in_place():
    env = EnvironmentLight.constant(1.0, height=16)
    n = random_directions(8)
    first = env.irradiance(n).clone()
    env.envmap.mul_(3)
    torch.testing.assert_close(env.irradiance(n), 3 * first)


def test_directional_light():
    light = DirectionalLight(direction=(0.0, 0.0, 2.0), irradiance=4.0, ambient=0.5)
    n = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    albedo = torch.full((2, 3), 0.6)
    lit = light.lambert(n, albedo)
    torch.testing.assert_close(lit[0], torch.full((3,), 0.6 / math.pi * (4.0 + math.pi * 0.5)))
    torch.testing.assert_close(lit[1], torch.full((3,), 0.6 * 0.5))  # only the sky reaches the underside
    view = torch.tensor([[0.0, 0.6, 0.8], [0.0, 0.0, 1.0]])
    pbr = light.shade(n, view, albedo, 0.5, 0.0, )
    assert pbr[0, 0] > lit[0, 0]  # the specular highlight adds to the diffuse
    torch.testing.assert_close(pbr[1], lit[1])


# --- environment maps --------------------------------------------------------------------


def test_equirect_direction_round_trip_and_orientation():
    d = random_directions(1000)
    uv = direction_to_equirect_uv(d)
    assert uv.min() >= 0 and uv.max() <= 1
    torch.testing.assert_close(equirect_uv_to_direction(uv), d, atol=1e-5, rtol=0)
    uv = direction_to_equirect_uv(torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, -1.0], [0, -1.0, 0]]))
    torch.testing.assert_close(uv[0], torch.tensor([0.5, 0.5]))  # +X is the panorama centre (Blender)
    assert uv[1, 1] == 0 and uv[2, 1] == 1  # zenith on the top row, nadir on the bottom
    torch.testing.assert_close(uv[3], torch.tensor([0.75, 0.5]))  # turning clockwise seen from above moves right


def test_cubemap_face_layout_and_equirect_consistency():
    dirs = cube_face_directions(6)
    face, st = direction_to_cube_face_st(dirs)
    assert (face == torch.arange(6).view(6, 1, 1)).all()
    centres = (torch.arange(6) + 0.5) / 6
    torch.testing.assert_close(st[..., 0], centres.view(1, 1, 6).expand(6, 6, 6))
    torch.testing.assert_close(st[..., 1], centres.view(1, 6, 1).expand(6, 6, 6))
    axes = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    torch.testing.assert_close(unit(dirs.mean(dim=(1, 2))), axes, atol=1e-6, rtol=0)

    def smooth(w):
        return torch.stack([1 + w[..., 0], 1 + 0.5 * w[..., 1] * w[..., 2], 1.5 + w[..., 2] ** 2], -1)

    equirect = function_envmap(smooth, 128)
    cube = equirect_to_cubemap(equirect, 32)
    torch.testing.assert_close(cube, smooth(cube_face_directions(32)), atol=5e-3, rtol=0)
    back = cubemap_to_equirect(cube, 64)
    # Lookups clamp at face edges: off by up to half a texel of blending there, exact inside.
    error = (back - function_envmap(smooth, 64)).abs()
    assert error.max() < 2e-2 and error.mean() < 2e-3
    w = random_directions(2000)
    error = (sample_cubemap(cube, w) - smooth(w)).abs()
    assert error.max() < 2e-2 and error.mean() < 2e-3
    learnable = CubeMap.from_equirect(equirect, 32)
    torch.testing.assert_close(learnable(w), sample_cubemap(cube, w))


def test_hdr_files_round_trip_flat_and_run_length_encoded(tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((8, 16, 3)) * np.array([0.01, 1.0, 300.0])).astype(np.float32)
    write_radiance_hdr(tmp_path / "flat.hdr", image)
    env = load_envmap(tmp_path / "flat.hdr")
    assert env.shape == (8, 16, 3) and env.dtype == torch.float32
    # RGBE shares one exponent per pixel: each channel is exact to 1/128 of the pixel's largest.
    tolerance = image.max(axis=-1, keepdims=True) / 128
    assert (np.abs(env.numpy() - image) <= tolerance).all()

    # New-style RLE scanlines (what most .hdr files on the web use): one run and one literal per channel.
    header = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 10\n"
    row = bytes([2, 2, 0, 10])
    for value in (64, 128, 200, 129):  # R, G, B runs, exponent 129: values (v + 0.5) / 128
        row += bytes([128 + 6, value, 4, value, value, value, value])
    (tmp_path / "rle.hdr").write_bytes(header + row * 2)
    decoded = read_radiance_hdr(tmp_path / "rle.hdr")
    np.testing.assert_allclose(decoded, np.broadcast_to((np.array([64, 128, 200]) + 0.5) / 128, (2, 10, 3)))

    (tmp_path / "bad.hdr").write_bytes(b"not an hdr")
    with pytest.raises(ValueError, match="Radiance"):
        load_envmap(tmp_path / "bad.hdr")
    with pytest.raises(FileNotFoundError):
        load_envmap(tmp_path / "missing.hdr")


def test_ldr_envmap_is_srgb_decoded_and_resized(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "sky.png", np.full((16, 32, 3), 188, dtype=np.uint8))
    env = load_envmap(tmp_path / "sky.png", height=8)
    assert env.shape == (8, 16, 3)
    torch.testing.assert_close(env, torch.full((8, 16, 3), float(srgb_decode(torch.tensor(188 / 255)))))
    assert abs(float(env[0, 0, 0]) - 0.5) < 0.01


# --- tone mapping ------------------------------------------------------------------------


def test_srgb_round_trip_and_tone_curve():
    x = torch.linspace(0, 1, 1001)
    torch.testing.assert_close(srgb_decode(srgb_encode(x)), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(srgb_encode(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0.0, 0.735357, 1.0]))
    hdr = torch.logspace(-3, 3, 200)
    mapped = aces_filmic(hdr)
    assert (mapped.diff() >= 0).all() and mapped.max() <= 1 and aces_filmic(torch.zeros(1)) == 0


# Narkowicz 2015, "ACES Filmic Tone Mapping Curve" (the variant tonemap.aces_filmic names; no 0.6
# pre-exposure, no AP0/AP1 matrices): f(x) = x(2.51x + 0.03) / (x(2.43x + 0.59) + 0.14), clamped
# to [0, 1]. The values below were worked out by hand from the published constants as exact
# fractions, e.g. f(1) = 2.54 / 3.16 = 127/158 and f(0.5) = 0.6425 / 1.0425 = 257/417.
NARKOWICZ_POINTS = {
    0.05: 0.0442830699,    # 0.05 * 0.1555 / (0.05 * 0.7115 + 0.14)
    0.18: 0.2668989204,    # mid grey: 0.086724 / 0.324932, lifted above 0.18 (the fit's exposure)
    0.5: 257 / 417,        # 0.6163069544
    1.0: 127 / 158,        # 0.8037974684
    2.0: 10.1 / 11.04,     # 0.9148550725
    4.0: 0.9734171097,     # 40.28 / 41.38
}


def follows_narkowicz_aces(curve) -> bool:
    """The curve's published values, its toe slope f'(0) = b/e = 0.03/0.14 and its white point:
    f reaches 1 where 0.08x^2 - 0.56x - 0.14 = 0, x = (0.56 + sqrt(0.3584)) / 0.16 = 7.2417."""
    x = torch.tensor(list(NARKOWICZ_POINTS), dtype=torch.float64)
    values = curve(x)
    if not torch.allclose(values, torch.tensor(list(NARKOWICZ_POINTS.values()), dtype=torch.float64),
                          atol=1e-6, rtol=0):
        return False
    h = 1e-7
    slope = float(curve(torch.tensor([h], dtype=torch.float64))) / h
    white = (0.56 + math.sqrt(0.56 ** 2 + 4 * 0.08 * 0.14)) / 0.16
    below = float(curve(torch.tensor([white - 1e-3], dtype=torch.float64)))
    above = curve(torch.tensor([white + 1e-3, 50.0], dtype=torch.float64))
    return abs(slope - 0.03 / 0.14) < 1e-5 and 1 - 1e-4 < below < 1.0 and bool((above == 1.0).all())


def test_aces_filmic_is_narkowicz_2015():
    """Known values at six inputs (to 1e-6), the toe slope and the white point; Reinhard x/(1+x),
    which the previous check (within 0.1 of 0.18 at mid grey) accepted, and a plain clamp fail."""
    assert follows_narkowicz_aces(aces_filmic)
    assert not follows_narkowicz_aces(lambda x: x / (1 + x))  # Reinhard: 0.1525 at 0.18, 0.5 at 1
    assert not follows_narkowicz_aces(lambda x: x.clamp(0, 1))
