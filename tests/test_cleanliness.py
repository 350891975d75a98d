"""The background-leak and open-hole checks, tested both ways on hand-built splat tori."""

import math

import pytest
import torch

from core.export.cleanliness import (
    background_leak, colour_near_background, hole_alpha, hole_open, opposite_background, top_camera,
)
from tests.synthetic_scenes import MAJOR, MINOR, SPACING, torus_scene


@pytest.fixture(scope="module")
def clean():
    return torus_scene()


@pytest.fixture(scope="module")
def plugged():
    return torus_scene(plug=True)


def test_opposite_background():
    assert opposite_background((1.0, 1.0, 1.0)).tolist() == [0.0, 0.0, 0.0]
    assert opposite_background((0.0, 0.0, 0.0)).tolist() == [1.0, 1.0, 1.0]
    assert opposite_background((0.5, 0.5, 0.5)).tolist() == [0.0, 0.0, 0.0]
    assert colour_near_background((0.93, 0.93, 0.93), (1, 1, 1))
    assert not colour_near_background((0.8, 0.1, 0.1), (1, 1, 1))


def test_clean_torus_passes(clean):
    report = background_leak(clean)
    assert report.covered > 500
    assert report.leak <= 0.02
    assert background_leak(clean, cameras=top_camera()).leak <= 0.02
    assert hole_open(clean) and hole_alpha(clean) < 0.05


def test_plugged_torus_is_caught(plugged):
    # From straight above the plug covers the disc rho < a (a = R - r - spacing / 2) and the
    # torus the annulus a < rho < R + r: the plug's share of the covered area is (a / (R + r))^2,
    # less the plug's rim pixels that blend with red (up to two pixels wide).
    size = 128
    pixel = 2 * 2.5 * math.tan(math.radians(22.5)) / size    # world width of a pixel at the origin
    a = MAJOR - MINOR - SPACING / 2
    top = background_leak(plugged, cameras=top_camera(size=size)).leak
    assert ((a - 2 * pixel) / (MAJOR + MINOR)) ** 2 <= top <= (a / (MAJOR + MINOR)) ** 2 + 0.01
    assert not hole_open(plugged) and hole_alpha(plugged) > 0.9
    # the default views (8 at 15 degrees, 8 at 60) see the plug through the hole too
    assert background_leak(plugged).leak > 0.02


def test_leak_is_measured_against_the_training_background(plugged):
    # trained over black, a white plug is no leak: the object is judged over white, where
    # nothing of it is near black
    assert background_leak(plugged, training_background=(0.0, 0.0, 0.0)).leak == 0.0


def test_white_floaters_are_caught():
    assert background_leak(torus_scene(floaters=True)).leak > 0.02


def test_an_empty_generated_scene_is_a_user_error_before_any_export(tmp_path):
    # What "a white torus" came to with the default preset: every Gaussian transparent.
    import pytest

    from core.errors import UserError
    from core.pipelines.handoff import export_final
    from renderers.gaussian.scene import GaussianConfig, GaussianScene

    scene = GaussianScene(GaussianConfig(num_points=500, init_opacity=0.001, render_normals=False))
    with pytest.raises(UserError, match="empty.*background.kind=random"):
        export_final(scene, tmp_path, None, ("ply", "glb"))
    assert not (tmp_path / "model.ply").exists()
    visible = GaussianScene(GaussianConfig(num_points=500, init_opacity=0.9, render_normals=False))
    assert export_final(visible, tmp_path, None, ("ply",))["model_ply"].is_file()
