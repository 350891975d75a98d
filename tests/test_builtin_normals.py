"""The shipped image-to-normal network (`builtin:normals`): loads by name, predicts unit
normals, beats the facing-camera baseline on held-out objects, and drives normal guidance."""

import json

import pytest
import torch

from core.data.normals import NORMALS_TEST_SEED_START, render_normal_maps
from core.training.evaluate_normals import FACING_CAMERA, angular_errors
from core.priors.estimators import NormalEstimator, load_normal_estimator
from core.priors.loading import PriorLoadError

NORMALS_DIR = "core/priors/builtin/normals"
# Mean angular error measured 4.8 deg on the 24 objects below (5.9 on 256, facing-camera
# baseline 38); the bound leaves room for a retrained network.
MAX_MEAN_ERROR_DEG = 12.0


@pytest.fixture(scope="module")
def estimator():
    return load_normal_estimator("builtin:normals", device="cpu")


@pytest.fixture(scope="module")
def held_out():
    # 24 objects of the 256 in docs/quality_builtin_normals.json (fov 30-60 deg)
    return render_normal_maps(NORMALS_TEST_SEED_START, 24)


def test_normal_maps_are_deterministic_unit_and_face_the_camera():
    both = render_normal_maps(NORMALS_TEST_SEED_START, 2, views=2)
    second = render_normal_maps(NORMALS_TEST_SEED_START + 1, 1, views=2)
    assert both.seeds == [NORMALS_TEST_SEED_START] * 2 + [NORMALS_TEST_SEED_START + 1] * 2
    for name in ("images", "normals", "alpha"):
        assert torch.equal(getattr(both, name)[2:], getattr(second, name)), name
    fg = both.alpha[:, 0] > 0.5
    normals = both.normals.permute(0, 2, 3, 1)[fg]
    assert torch.allclose(normals.norm(dim=-1), torch.ones(len(normals)), atol=1e-4)
    assert (normals[:, 2] > -0.05).all()   # visible surfaces face the viewer (+z)
    assert both.normals.permute(0, 2, 3, 1)[both.alpha[:, 0] == 0].abs().max() == 0


def test_shipped_weights_load_by_builtin_name(estimator):
    from pathlib import Path

    assert isinstance(estimator, NormalEstimator)
    folder = Path(__file__).parents[1] / NORMALS_DIR
    assert (folder / "model.safetensors").stat().st_size < 5 * 2**20
    config = json.loads((folder / "config.json").read_text())
    assert sum(p.numel() for p in estimator.module.parameters()) < 1_000_000
    # The config describes the shipped weights: a network built from its architecture has their shapes.
    from core.priors.builtin.normal_model import NormalNet, NormalNetConfig

    described = NormalNet(NormalNetConfig(**config["architecture"])).state_dict()
    shipped = estimator.module.state_dict()
    assert {k: v.shape for k, v in described.items()} == {k: v.shape for k, v in shipped.items()}


def test_predictions_are_unit_camera_space_normals(estimator):
    for shape in [(2, 3, 32, 32), (1, 3, 30, 45)]:
        normals = estimator.predict(torch.rand(*shape))
        assert normals.shape == shape
        assert torch.allclose(normals.norm(dim=1), torch.ones(shape[0], *shape[2:]), atol=1e-4)


def test_beats_the_facing_camera_baseline_on_held_out_objects(estimator, held_out):
    pred = estimator.predict(held_out.images)
    ours = angular_errors(pred, held_out.normals, held_out.alpha).mean()
    facing = torch.tensor(FACING_CAMERA).view(1, 3, 1, 1).expand_as(held_out.normals)
    baseline = angular_errors(facing, held_out.normals, held_out.alpha).mean()
    assert ours < 0.5 * baseline, (float(ours), float(baseline))
    assert ours < MAX_MEAN_ERROR_DEG, float(ours)


def test_unknown_builtin_normal_estimator_and_missing_weights_say_what_to_do(tmp_path):
    from core.priors.builtin.normal_model import load_normal_net

    with pytest.raises(PriorLoadError, match="builtin:normals"):
        load_normal_estimator("builtin:normalz")
    with pytest.raises(PriorLoadError, match=r"lacks model.safetensors.*train_normals"):
        load_normal_net(tmp_path)


def test_normal_guidance_with_the_builtin_estimator_moves_a_mesh(estimator, tmp_path):
    from core.cameras import orbit_cameras
    from core.data.procedural_render import object_mesh
    from core.normal_guidance import normal_guidance_loss
    from renderers.mesh import MeshScene, MeshSceneConfig, TriangleMesh

    shape = object_mesh("cube", 0, 0.55, 24)
    vertices = torch.from_numpy(shape.vertices)
    colors = torch.tensor([0.8, 0.1, 0.1]).expand(len(vertices), 3)
    scene = MeshScene(TriangleMesh(vertices, torch.from_numpy(shape.faces), vertex_colors=colors),
                      MeshSceneConfig(learn=("offsets",)))
    cams = orbit_cameras(2, elevation_deg=20, radius=2.5, width=32, height=32)
    out = scene.render(cams)
    loss = normal_guidance_loss(out, cams, estimator)
    loss.backward()
    grad = scene.offsets.grad
    assert torch.isfinite(grad).all()
    # A small step down the gradient lowers the loss, by at least half of step * |grad| (the first
    # order prediction through the rendered normals; the estimator's target is detached, and
    # re-read from the moved render it follows a little: 1.4x the prediction measured).
    step = 1e-3
    with torch.no_grad():
        scene.offsets -= step * grad / grad.norm()
        moved = normal_guidance_loss(scene.render(cams), cams, estimator)
    assert float(loss.detach() - moved) > 0.5 * step * float(grad.norm())

    from core.training.evaluate_normals import mesh_agreement

    torch.save({"scene": scene.state_dict()}, tmp_path / "polish.pt")
    agreement = mesh_agreement(tmp_path / "polish.pt", estimator, views=2)
    # The estimator reads this cube's surface at 12 deg mean error (measured; 7.5 for a sphere), far
    # below the 38 deg of the facing-camera guess: a wrong normal frame or a broken render would not.
    assert agreement["mean_deg"] < 20 and agreement["foreground_pixels"] > 100
