"""End to end: the default text-to-3D preset at full steps on the built-in prior makes a right
and clean asset for a prompt that used to come out with its hole plugged by white Gaussians
(issue 15: "a red torus", seed 3). Judged by the procedural-world classifier over white,
black and grey (it is trained over all three), over black by the background leak too; the
top view's centre must be open. About two minutes on one CPU thread."""

from collections import Counter

import pytest
import torch

from core.config import load_config, resolve_preset
from core.export.assets import load_scene
from core.export.cleanliness import background_leak, hole_open, judge_cameras
from core.pipelines.text_to_3d import TextTo3DConfig, generate

STEPS = 400   # the preset's full count


@pytest.mark.slow
def test_default_preset_makes_a_clean_red_torus(tmp_path):
    from core.data.classifier import classify
    from core.data.procedural import COLORS, SHAPES

    cfg = load_config(TextTo3DConfig, resolve_preset("text_to_3d/gaussian_sds"),
                      ["seed=3", "export=[ply]", "turntable_frames=0", f"stages.0.steps={STEPS}"])
    cfg.prompt = "a red torus"
    scene = load_scene(generate(cfg, tmp_path / "run")["model_ply"])
    for background in ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.5, 0.5, 0.5)):
        with torch.no_grad():
            views = scene.render(judge_cameras(), torch.tensor(background))
        colour, shape, _ = classify(views.chw().clamp(0, 1))
        assert Counter(COLORS[i] for i in colour.tolist()).most_common(1)[0][0] == "red", background
        assert Counter(SHAPES[i] for i in shape.tolist()).most_common(1)[0][0] == "torus", background
    assert background_leak(scene, (1.0, 1.0, 1.0)).leak <= 0.02     # over black: nothing near-white
    assert hole_open(scene)
