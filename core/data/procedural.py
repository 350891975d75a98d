"""The procedural world: coloured primitive objects with captions, rendered from random cameras.

It is the training set of the built-in tiny prior (so `scorelift generate "a red cube"`
runs on a laptop with no download) and of the classifier that judges its assets.

An object is a shape from SHAPES (upright, axis-aligned, never yawed, centred, inside the
unit sphere), a colour from COLORS (RGB jittered a little), a material from MATERIALS
(matte: rough; shiny: a tight GGX highlight) and a pattern from PATTERNS ("plain" is not
written in captions). Captions read "a shiny red torus", "a striped blue cube"; with small
probabilities the colour is left out ("a cube") or the shape is ("a red object"), so the
prior also learns partial prompts. The labels always name everything.

Everything is a function of an integer object seed: `sample(seed, n)` renders objects
seed, seed+1, ..., seed+n-1, each from its own camera, identically for any batch size.
Seed ranges keep the models apart (PRIOR_SEED_START, CLASSIFIER_*_SEEDS).

Resolution: 32 px by default, rendered at 64 px and box-filtered (`supersample=2`). The
constraint is the prior's UNet step on 2 CPU cores: at 32 px a tiny UNet step costs a
quarter of a 64 px one, which is what makes a ~60 minute training run feasible; rendering
at 2x and averaging removes the staircase edges a 32 px rasterisation would teach the
prior. Renders cost little next to the UNet: on one CPU thread `sample(seed, 64)` makes
about 110-150 images/s at 32 px (2x supersampled), 180/s at 64 px without supersampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from core.cameras import Cameras, spherical_cameras
from core.data.procedural_render import LightingConfig, render_specs
from core.data.procedural_shapes import SHAPES

COLORS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"]
MATERIALS = ["matte", "shiny"]
PATTERNS = ["plain", "striped", "checkered"]
# Words that name objects in captions; the prior's text encoder adds "a", "an", "object"
# and the view words.
VOCAB = SHAPES + COLORS + MATERIALS + [p for p in PATTERNS if p != "plain"]
CAPTION_WORDS = VOCAB + ["a", "an", "object"]
VIEW_WORDS = ["front", "side", "back", "overhead", "view", ","]

# display sRGB of each colour word before jitter
COLOR_RGB = {
    "red": (0.80, 0.10, 0.10),
    "green": (0.15, 0.62, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.15),
    "white": (0.93, 0.93, 0.93),
    "black": (0.08, 0.08, 0.08),
    "orange": (0.95, 0.48, 0.08),
    "purple": (0.52, 0.18, 0.72),
}
# Patterns alternate with white; white alternates with grey so that a striped white
# object never looks like a striped black one.
WHITE_SECONDARY = (0.45, 0.45, 0.45)
PATTERN_SECONDARY = (0.95, 0.95, 0.95)

# Object seeds: the prior trains on [PRIOR_SEED_START, 2**31); the classifier trains on
# CLASSIFIER_TRAIN_SEEDS and is measured on CLASSIFIER_TEST_SEEDS, so neither judge nor
# student has seen the other's objects.
PRIOR_SEED_START = 1_000_000
SEED_END = 2**31 - 1
CLASSIFIER_TRAIN_SEEDS = (0, 500_000)
CLASSIFIER_TEST_SEEDS = (500_000, 1_000_000)

# The built-in text prior's backgrounds: half white (the framing most prompts are judged
# in), the rest black, mid grey or a uniform random colour, so that a score-distillation
# view over a random colour is as likely to the prior as one over white (issue #15: a prior
# that only saw white repaints other backgrounds pale, and that paint becomes geometry).
PRIOR_BACKGROUND_MIX = ((0.5, (1.0, 1.0, 1.0)), (0.1, (0.0, 0.0, 0.0)), (0.1, (0.5, 0.5, 0.5)), (0.3, None))


@dataclass
class ProceduralWorldConfig:
    """How objects are drawn and rendered. Camera ranges match `CameraSamplerConfig`'s
    defaults, so the prior sees objects framed as the text-to-3D loop renders them."""

    resolution: int = 32
    supersample: int = 2
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # None: every object over `background`; else ((probability, rgb or None), ...), one entry
    # drawn per object seed, None meaning a uniform random colour (PRIOR_BACKGROUND_MIX)
    background_mix: tuple[tuple[float, tuple[float, float, float] | None], ...] | None = None
    elevation_range: tuple[float, float] = (-10.0, 60.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    radius_range: tuple[float, float] = (2.2, 2.8)
    fov_range: tuple[float, float] = (40.0, 50.0)
    # half the largest bounding-box side (capped so no vertex passes radius 0.8); with the
    # cameras above an object spans about 50-70% of the frame
    object_size_range: tuple[float, float] = (0.48, 0.62)
    detail: int = 24
    pattern_probs: tuple[float, float, float] = (0.6, 0.2, 0.2)
    shiny_prob: float = 0.5
    color_jitter: float = 0.04
    p_material_word: float = 0.5
    p_drop_color: float = 0.1
    p_drop_shape: float = 0.1
    generator_seed_range: tuple[int, int] = (PRIOR_SEED_START, SEED_END)
    lighting: LightingConfig = field(default_factory=LightingConfig)

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.supersample < 1:
            raise ValueError(f"resolution must be >= 8 and supersample >= 1, got {self.resolution}, {self.supersample}")
        if abs(sum(self.pattern_probs) - 1) > 1e-6:
            raise ValueError(f"pattern_probs must sum to 1, got {self.pattern_probs}")
        if self.background_mix is not None:
            self.background_mix = tuple((float(p), None if c is None else tuple(float(x) for x in c))
                                        for p, c in self.background_mix)
            probs = [p for p, _ in self.background_mix]
            if min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
                raise ValueError(f"background_mix probabilities must be >= 0 and sum to 1, got {probs}")


@dataclass(frozen=True)
class ObjectSpec:
    """Everything needed to rebuild and render one object.

    rgb, secondary_rgb: display sRGB in [0,1]; roughness, metallic in [0,1]; size: half the
    largest bounding-box side before the radius-0.8 cap; geometry_seed: proportions jitter;
    pattern_frequency: stripe bands over the height, or checker cells per `size`.
    """

    shape: str
    color: str
    material: str
    pattern: str
    rgb: tuple[float, float, float]
    secondary_rgb: tuple[float, float, float]
    roughness: float
    metallic: float
    size: float
    geometry_seed: int
    pattern_frequency: float
    caption: str

    @property
    def labels(self) -> dict[str, int]:
        return {"shape": SHAPES.index(self.shape), "color": COLORS.index(self.color),
                "material": MATERIALS.index(self.material), "pattern": PATTERNS.index(self.pattern)}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_caption(shape: str, color: str, material: str, pattern: str,
                 material_word: bool = True, color_word: bool = True, shape_word: bool = True) -> str:
    """'a shiny striped red torus'; left-out words are skipped and a left-out shape reads 'object'."""
    words = ([material] if material_word else []) + ([pattern] if pattern != "plain" else [])
    words += ([color] if color_word else []) + [shape if shape_word else "object"]
    return " ".join([_article(words[0])] + words)


def view_word(elevation_deg: float, azimuth_deg: float, overhead_deg: float = 60.0, front_deg: float = 45.0) -> str:
    """DreamFusion's view-dependent prompt word for a camera (azimuth 0 = front, on +X)."""
    if elevation_deg > overhead_deg:
        return "overhead"
    az = (azimuth_deg + 180.0) % 360.0 - 180.0
    if abs(az) < front_deg:
        return "front"
    if abs(az) > 180.0 - front_deg:
        return "back"
    return "side"


def sample_spec(seed: int, cfg: ProceduralWorldConfig) -> ObjectSpec:
    """The object with this seed (a pure function of `seed` and `cfg`)."""
    rng = np.random.default_rng([seed, 0])
    shape = SHAPES[rng.integers(len(SHAPES))]
    color = COLORS[rng.integers(len(COLORS))]
    material = MATERIALS[int(rng.random() < cfg.shiny_prob)]
    pattern = PATTERNS[rng.choice(len(PATTERNS), p=list(cfg.pattern_probs))]
    rgb = np.clip(np.array(COLOR_RGB[color]) + rng.uniform(-cfg.color_jitter, cfg.color_jitter, 3), 0, 1)
    secondary = WHITE_SECONDARY if color == "white" else PATTERN_SECONDARY
    roughness = rng.uniform(0.12, 0.25) if material == "shiny" else rng.uniform(0.65, 0.9)
    size = rng.uniform(*cfg.object_size_range)
    frequency = float(rng.choice([5, 7])) if pattern == "striped" else rng.uniform(1.4, 1.8)
    keep_material = rng.random() < cfg.p_material_word
    drop = rng.random()
    caption = make_caption(shape, color, material, pattern, keep_material,
                           color_word=drop >= cfg.p_drop_color,
                           shape_word=not (cfg.p_drop_color <= drop < cfg.p_drop_color + cfg.p_drop_shape))
    return ObjectSpec(shape, color, material, pattern, tuple(float(c) for c in rgb), secondary, float(roughness), 0.0,
                      float(size), int(rng.integers(2**31)), float(frequency), caption)


def sample_background(seed: int, cfg: ProceduralWorldConfig) -> tuple[float, float, float]:
    """The background colour object `seed` is rendered over (a pure function of `seed` and `cfg`)."""
    if cfg.background_mix is None:
        return tuple(float(c) for c in cfg.background)
    rng = np.random.default_rng([seed, 0, 1])
    pick = rng.choice(len(cfg.background_mix), p=[p for p, _ in cfg.background_mix])
    colour = cfg.background_mix[pick][1]
    return tuple(float(c) for c in (rng.random(3) if colour is None else colour))


def sample_camera_params(seed: int, cfg: ProceduralWorldConfig, view: int = 0) -> tuple[float, float, float, float]:
    """(elevation, azimuth, radius, fov_y) in degrees / world units of view `view` of object `seed`."""
    rng = np.random.default_rng([seed, 1 + view])
    ranges = (cfg.elevation_range, cfg.azimuth_range, cfg.radius_range, cfg.fov_range)
    el, az, radius, fov = (float(rng.uniform(*r)) for r in ranges)
    return el, az, radius, fov


@dataclass
class ProceduralBatch:
    """n rendered objects.

    images [n,3,H,W] (each over its object's `sample_background`) and alpha [n,1,H,W] in
    [0,1]; captions: n strings; labels: "shape", "color", "material", "pattern" ->
    LongTensor [n] indexing SHAPES/COLORS/...;
    cameras: Cameras of n; elevation, azimuth (degrees), radius, fov (vertical, degrees): [n];
    seeds: the object seeds; specs: the objects.
    """

    images: Tensor
    alpha: Tensor
    captions: list[str]
    labels: dict[str, Tensor]
    cameras: Cameras
    elevation: Tensor
    azimuth: Tensor
    radius: Tensor
    fov: Tensor
    seeds: list[int]
    specs: list[ObjectSpec]

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class ProceduralPair:
    """Two views of one object (Zero123-style training pairs).

    images [2,3,H,W], alpha [2,1,H,W]; elevation, azimuth, radius, fov [2];
    delta_elevation/delta_azimuth (degrees, azimuth wrapped to [-180,180)) and delta_radius
    are view 1 minus view 0.
    """

    images: Tensor
    alpha: Tensor
    caption: str
    labels: dict[str, int]
    cameras: Cameras
    elevation: Tensor
    azimuth: Tensor
    radius: Tensor
    fov: Tensor
    delta_elevation: float
    delta_azimuth: float
    delta_radius: float
    spec: ObjectSpec


class ProceduralWorld:
    """Draws and renders procedural objects; see the module docstring."""

    def __init__(self, cfg: ProceduralWorldConfig | None = None):
        self.cfg = cfg or ProceduralWorldConfig()

    def spec(self, seed: int) -> ObjectSpec:
        return sample_spec(seed, self.cfg)

    def cameras(self, params: list[tuple[float, float, float, float]]) -> Cameras:
        """Cameras at the world's resolution from (elevation, azimuth, radius, fov) tuples."""
        el, az, r, fov = torch.tensor(params, dtype=torch.float32).reshape(-1, 4).unbind(-1)
        return spherical_cameras(el, az, r, fov, self.cfg.resolution, self.cfg.resolution)

    def render_object(self, spec: ObjectSpec, cameras: Cameras, background=None) -> tuple[Tensor, Tensor]:
        """One object from every camera: rgb [B,3,H,W] and alpha [B,1,H,W] in [0,1] at the cameras' size."""
        return self.render([spec], cameras, background)

    def render(self, specs: list[ObjectSpec], cameras: Cameras, background=None) -> tuple[Tensor, Tensor]:
        """Object b from camera b in one rasteriser call: rgb [B,3,H,W], alpha [B,1,H,W]."""
        bg = torch.as_tensor(self.cfg.background if background is None else background, dtype=torch.float32)
        return render_specs(specs, cameras, self.cfg.lighting, bg, self.cfg.detail, self.cfg.supersample)

    def sample(self, seed: int | torch.Generator, n: int, seed_range: tuple[int, int] | None = None) -> ProceduralBatch:
        """n objects, each from its own random camera.

        seed: an int renders objects seed..seed+n-1; a torch.Generator draws n object seeds
        uniformly from `seed_range` (default `cfg.generator_seed_range`, the prior's range).
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if isinstance(seed, torch.Generator):
            lo, hi = seed_range or self.cfg.generator_seed_range
            seeds = torch.randint(lo, hi, (n,), generator=seed).tolist()
        else:
            seeds = list(range(int(seed), int(seed) + n))
        specs = [self.spec(s) for s in seeds]
        params = [sample_camera_params(s, self.cfg) for s in seeds]
        cams = self.cameras(params)
        images, alpha = self.render(specs, cams, [sample_background(s, self.cfg) for s in seeds])
        el, az, r, fov = torch.tensor(params, dtype=torch.float32).unbind(-1)
        labels = {k: torch.tensor([s.labels[k] for s in specs], dtype=torch.long)
                  for k in ("shape", "color", "material", "pattern")}
        return ProceduralBatch(images, alpha, [s.caption for s in specs], labels, cams, el, az, r, fov, seeds, specs)

    def pair(self, seed: int) -> ProceduralPair:
        """Two independently drawn views of object `seed` and their relative camera."""
        spec = self.spec(seed)
        params = [sample_camera_params(seed, self.cfg, view) for view in (0, 1)]
        cams = self.cameras(params)
        images, alpha = self.render_object(spec, cams)
        el, az, r, fov = torch.tensor(params, dtype=torch.float32).unbind(-1)
        d_az = (float(az[1] - az[0]) + 180.0) % 360.0 - 180.0
        return ProceduralPair(images, alpha, spec.caption, spec.labels, cams, el, az, r, fov,
                              float(el[1] - el[0]), d_az, float(r[1] - r[0]), spec)
