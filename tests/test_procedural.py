"""The procedural world: determinism, captions vs labels, canonical geometry, framing and colours."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from core.cameras import orbit_cameras
from core.config import from_dict
from core.data.procedural import (
    CAPTION_WORDS,
    COLORS,
    MATERIALS,
    PATTERNS,
    PRIOR_BACKGROUND_MIX,
    PRIOR_SEED_START,
    SHAPES,
    VOCAB,
    ProceduralWorld,
    ProceduralWorldConfig,
    make_caption,
    sample_background,
    view_word,
)
from core.data.procedural_shapes import build_shape

# torch.testing.assert_close's first call imports for seconds; plain max-abs checks instead.


@pytest.fixture(scope="module")
def world():
    return ProceduralWorld()


@pytest.fixture(scope="module")
def batch(world):
    return world.sample(100, 24)


def test_batch_layout(batch):
    assert batch.images.shape == (24, 3, 32, 32) and batch.alpha.shape == (24, 1, 32, 32)
    assert len(batch.captions) == len(batch.cameras) == len(batch) == 24
    for key, names in (("shape", SHAPES), ("color", COLORS), ("material", MATERIALS), ("pattern", PATTERNS)):
        assert batch.labels[key].dtype == torch.long and batch.labels[key].shape == (24,)
        assert int(batch.labels[key].max()) < len(names)
    el, az, r = batch.cameras.spherical()
    assert (el - batch.elevation).abs().max() <= 1e-3
    assert (r - batch.radius).abs().max() <= 1e-4
    assert ((batch.elevation >= -10) & (batch.elevation <= 60)).all()


def test_same_seed_same_samples_regardless_of_batching(world, batch):
    again = world.sample(100, 24)
    assert again.captions == batch.captions
    assert torch.equal(again.images, batch.images)
    # object 105 rendered in a different batch (other shapes beside it) looks the same
    part = world.sample(105, 3)
    assert part.captions == batch.captions[5:8]
    assert (part.images - batch.images[5:8]).abs().max() <= 1e-4
    assert world.sample(101, 1).captions != world.sample(100, 1).captions or not torch.equal(
        world.sample(101, 1).images, world.sample(100, 1).images)


def test_generator_draws_prior_seeds_deterministically(world):
    a = world.sample(torch.Generator().manual_seed(3), 2)
    b = world.sample(torch.Generator().manual_seed(3), 2)
    assert a.seeds == b.seeds and torch.equal(a.images, b.images)
    assert min(a.seeds) >= PRIOR_SEED_START


def test_captions_agree_with_labels(world):
    seen = set()
    for seed in range(400):
        spec = world.spec(seed)
        words = spec.caption.split()
        assert set(words) <= set(CAPTION_WORDS), spec.caption
        assert words[0] == ("an" if words[1][0] in "aeiou" else "a")
        assert words[-1] in (spec.shape, "object")
        assert spec.color in words or words[-1] == spec.shape  # never both left out
        assert not (set(words) & set(COLORS) - {spec.color})
        assert not (set(words) & set(MATERIALS) - {spec.material})
        assert (spec.pattern in words) == (spec.pattern != "plain")
        assert not (set(words) & set(SHAPES) - {spec.shape})
        seen.add(spec.caption)
    assert "plain" not in VOCAB and len(seen) > 100
    assert make_caption("torus", "red", "shiny", "plain") == "a shiny red torus"
    assert make_caption("cube", "blue", "matte", "striped", material_word=False) == "a striped blue cube"
    assert make_caption("cube", "orange", "matte", "plain", material_word=False) == "an orange cube"


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_fit_unit_sphere_centred_and_closed_outward(shape):
    for seed in range(3):
        m = build_shape(shape, np.random.default_rng(seed), size=0.62)
        norms = np.linalg.norm(m.vertices, axis=1)
        assert norms.max() <= 0.8 + 1e-5 and abs(norms.max() - m.radius) < 1e-5
        np.testing.assert_allclose(m.vertices.min(0) + m.vertices.max(0), 0, atol=1e-5)
        v0, v1, v2 = (m.vertices[m.faces[:, i]].astype(np.float64) for i in range(3))
        cross = np.cross(v1 - v0, v2 - v0)
        assert np.einsum("fi,fi->", cross, v0).sum() > 0  # 6 x signed volume: outward winding
        if shape != "torus":  # convex around the origin: every face looks away from it
            assert (np.einsum("fi,fi->f", cross, (v0 + v1 + v2) / 3) >= -1e-9).all()


def _face_normals(m):
    v0, v1, v2 = (m.vertices[m.faces[:, i]].astype(np.float64) for i in range(3))
    n = np.cross(v1 - v0, v2 - v0)
    area = np.linalg.norm(n, axis=1)
    return n[area > 1e-10] / area[area > 1e-10, None]


def test_cube_and_pyramid_are_axis_aligned_without_yaw():
    for seed in range(5):
        cube = _face_normals(build_shape("cube", np.random.default_rng(seed), 0.5))
        # every face normal is +-X, +-Y or +-Z: a yawed cube would mix X and Y
        assert np.allclose(np.sort(np.abs(cube), axis=1), [0, 0, 1], atol=1e-6)
        pyramid = _face_normals(build_shape("pyramid", np.random.default_rng(seed), 0.5))
        # the base faces down; each side's normal lies in the XZ or the YZ plane
        assert np.isclose(pyramid[:, 2], -1, atol=1e-6).any()
        assert (np.minimum(np.abs(pyramid[:, 0]), np.abs(pyramid[:, 1])) < 1e-6).all()
        cyl = _face_normals(build_shape("cylinder", np.random.default_rng(seed), 0.5))
        assert (np.isclose(np.abs(cyl[:, 2]), 1, atol=1e-6) | (np.abs(cyl[:, 2]) < 1e-6)).all()  # upright


def test_background_at_corners_object_in_centre(batch):
    img, alpha = batch.images, batch.alpha[:, 0]
    for corner in (img[..., :3, :3], img[..., :3, -3:], img[..., -3:, :3], img[..., -3:, -3:]):
        assert torch.equal(corner, torch.ones_like(corner))
    # the silhouette box is centred up to perspective: from above, a cone's base rim reaches
    # below its bounding box while its apex is a point
    rows, cols = alpha.amax(2) > 0.5, alpha.amax(1) > 0.5
    idx = torch.arange(32.0)
    for mask in (rows, cols):
        first = torch.where(mask, idx, 99.0).amin(1)
        last = torch.where(mask, idx, -1.0).amax(1)
        assert ((first + last) / 2 - 15.5).abs().max() < 4.5
    # the object fills roughly half to two thirds of the frame
    extent = torch.maximum(rows.sum(1), cols.sum(1)).float() / 32
    assert extent.min() > 0.25 and extent.max() < 0.98 and 0.45 < extent.mean() < 0.75


def test_custom_background_and_resolution():
    cfg = from_dict(ProceduralWorldConfig, {"resolution": 48, "background": [0.2, 0.4, 0.6],
                                            "lighting": {"ambient": 0.3}})
    b = ProceduralWorld(cfg).sample(7, 2)
    assert b.images.shape == (2, 3, 48, 48)
    assert (b.images[:, :, 0, 0] - torch.tensor([[0.2, 0.4, 0.6]] * 2)).abs().max() < 1e-6


def test_background_mix_draws_each_entry_at_its_rate_and_composites_exactly(world):
    """Per-object backgrounds: drawn at the mix's rates (binomial 4-sigma bounds over 4000
    seeds), a pure function of the seed, and each image equals the white-background render
    re-composited over its colour, I_b = I_w - (1 - a)(1 - b) (alpha compositing is linear)."""
    cfg = ProceduralWorldConfig(background_mix=PRIOR_BACKGROUND_MIX)
    n = 4000
    drawn = [sample_background(s, cfg) for s in range(PRIOR_SEED_START, PRIOR_SEED_START + n)]
    fixed = [c for _, c in PRIOR_BACKGROUND_MIX if c is not None]
    for p, colour in PRIOR_BACKGROUND_MIX:
        count = sum(d == colour for d in drawn) if colour is not None else sum(d not in fixed for d in drawn)
        assert abs(count - p * n) < 4 * (n * p * (1 - p)) ** 0.5, (colour, count)
    assert drawn[:5] == [sample_background(s, cfg) for s in range(PRIOR_SEED_START, PRIOR_SEED_START + 5)]
    assert sample_background(3, ProceduralWorldConfig()) == (1.0, 1.0, 1.0)

    mixed = ProceduralWorld(cfg).sample(PRIOR_SEED_START, 12)
    white = world.sample(PRIOR_SEED_START, 12)
    assert mixed.captions == white.captions and torch.equal(mixed.alpha, white.alpha)
    bg = torch.tensor(drawn[:12]).view(12, 3, 1, 1)
    assert len({tuple(b) for b in bg.view(12, 3).tolist()}) > 2
    assert (mixed.images - (white.images - (1 - white.alpha) * (1 - bg))).abs().max() < 1e-5
    assert (mixed.images[:, :, 0, 0] - bg[:, :, 0, 0]).abs().max() < 1e-6


def test_background_mix_is_checked_and_read_from_config():
    cfg = from_dict(ProceduralWorldConfig, {"background_mix": [[0.5, [1, 1, 1]], [0.5, None]]})
    assert cfg.background_mix == ((0.5, (1.0, 1.0, 1.0)), (0.5, None))
    with pytest.raises(ValueError, match="background_mix"):
        ProceduralWorldConfig(background_mix=((0.5, (1, 1, 1)), (0.2, None)))


def test_colour_words_match_rendered_colour(world):
    cams = orbit_cameras(3, elevation_deg=20, radius=2.5, width=32, height=32)
    base = replace(world.spec(0), shape="sphere", material="matte", roughness=0.8, pattern="plain")
    means = {}
    for color in COLORS:
        spec = replace(base, color=color, rgb=_jittered(world, color))
        img, alpha = world.render_object(spec, cams)
        inside = alpha[:, 0] > 0.99
        means[color] = img.permute(0, 2, 3, 1)[inside].mean(0)
    m = {c: means[c] for c in COLORS}
    assert m["red"][0] > 2 * max(m["red"][1], m["red"][2])
    assert m["green"][1] > 1.5 * max(m["green"][0], m["green"][2])
    assert m["blue"][2] > 1.5 * max(m["blue"][0], m["blue"][1])
    assert min(m["yellow"][:2]) > 2 * m["yellow"][2]
    assert m["orange"][0] > 1.3 * m["orange"][1] > 1.3 * m["orange"][2]
    assert min(m["purple"][0], m["purple"][2]) > 1.5 * m["purple"][1]
    assert m["white"].min() > 0.6 and m["white"].max() - m["white"].min() < 0.05
    assert m["black"].max() < 0.25


def _jittered(world, color):
    """The rgb of the first object of this colour among the world's seeds (real jitter)."""
    return next(world.spec(s).rgb for s in range(200) if world.spec(s).color == color)


def test_shiny_shows_a_highlight_matte_does_not(world):
    cams = orbit_cameras(2, elevation_deg=20, radius=2.5, width=32, height=32)
    red = replace(world.spec(0), shape="sphere", color="red", rgb=(0.8, 0.1, 0.1), pattern="plain")
    peaks = {}
    for material, roughness in (("matte", 0.8), ("shiny", 0.15)):
        img, alpha = world.render_object(replace(red, material=material, roughness=roughness), cams)
        peaks[material] = img[:, 1][alpha[:, 0] > 0.99].max()  # a highlight is white: green rises
    assert peaks["shiny"] > peaks["matte"] + 0.3


def test_patterns_alternate_with_white():
    world = ProceduralWorld(ProceduralWorldConfig(resolution=64))
    cams = orbit_cameras(1, elevation_deg=10, radius=2.5, width=64, height=64)
    blue = replace(world.spec(0), shape="cylinder", color="blue", rgb=(0.1, 0.2, 0.85), material="matte",
                   roughness=0.8)
    plain, _ = world.render_object(replace(blue, pattern="plain"), cams)
    striped, alpha = world.render_object(replace(blue, pattern="striped", pattern_frequency=5.0), cams)
    inside = alpha[0, 0] > 0.99
    whiteish = lambda img: ((img[0, 0] > 0.5) & inside).float().sum()  # noqa: E731 red channel high = white
    assert whiteish(plain) == 0 and whiteish(striped) > 0.2 * inside.sum()


def test_render_object_and_pair_views(world, batch):
    spec = batch.specs[3]
    again, _ = world.render_object(spec, batch.cameras[3])
    assert (again - batch.images[3:4]).abs().max() <= 1e-4
    p = world.pair(42)
    assert p.images.shape == (2, 3, 32, 32) and p.caption == world.spec(42).caption
    el, az, r = p.cameras.spherical()
    assert abs(p.delta_elevation - float(el[1] - el[0])) < 1e-3
    assert abs(p.delta_azimuth - ((float(az[1] - az[0]) + 180) % 360 - 180)) < 1e-2
    assert abs(p.delta_radius - float(r[1] - r[0])) < 1e-4
    assert not torch.equal(p.images[0], p.images[1])


def test_view_words():
    assert view_word(10, 5) == "front" and view_word(10, 180) == "back" and view_word(10, -170) == "back"
    assert view_word(10, 90) == "side" and view_word(70, 0) == "overhead"
