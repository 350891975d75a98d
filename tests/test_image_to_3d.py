import json

import numpy as np
import pytest
import torch

from app.cli import main
from core.data.reference import ReferenceImageError, load_reference
from core.io import write_png
from core.priors.tiny import build_tiny_zero123
from stop_after import StopAfter


@pytest.fixture(scope="module")
def tiny_zero123(tmp_path_factory):
    return str(build_tiny_zero123(tmp_path_factory.mktemp("z") / "zero123"))


def red_square_photo(path, size=80, background=(0.2, 0.6, 0.9), alpha=False):
    """alpha: False (RGB), True (alpha = the square) or "opaque" (RGBA, alpha 1 everywhere, as
    an upload widget turns an ordinary photo into)."""
    image = np.ones((size, size, 4 if alpha else 3), np.float32)
    image[..., :3] = background
    image[20:40, 30:60, :3] = (0.9, 0.1, 0.1)
    if alpha is True:
        image[..., 3] = 0.0
        image[20:40, 30:60, 3] = 1.0
    write_png(path, image)
    return path


@pytest.mark.parametrize("alpha", [False, True, "opaque"])
def test_reference_is_matted_recentred_and_composited_on_white(tmp_path, alpha):
    rgb, mask = load_reference(red_square_photo(tmp_path / "p.png", alpha=alpha), size=32, fill=0.5)
    assert rgb.shape == (1, 3, 32, 32) and mask.shape == (1, 1, 32, 32)
    ys, xs = torch.nonzero(mask[0, 0] > 0.5, as_tuple=True)
    assert abs(xs.float().mean() - 15.5) < 1 and abs(ys.float().mean() - 15.5) < 1  # centred
    assert (xs.max() - xs.min() + 1) == 16                                          # the 30 px side fills half
    assert torch.allclose(rgb[0, :, 0, 0], torch.ones(3))                            # white, not the photo's blue
    assert rgb[0, 0, 16, 16] > 0.8 and rgb[0, 2, 16, 16] < 0.2


def test_unusable_images_say_what_to_do(tmp_path):
    with pytest.raises(ReferenceImageError, match="image not found"):
        load_reference(tmp_path / "none.png")
    (tmp_path / "t.png").write_text("not an image")
    with pytest.raises(ReferenceImageError, match="not a readable image"):
        load_reference(tmp_path / "t.png")
    write_png(tmp_path / "flat.png", np.full((16, 16, 3), 0.5, np.float32))
    with pytest.raises(ReferenceImageError, match="could not separate the object"):
        load_reference(tmp_path / "flat.png")


def test_generate_image_cli_runs_both_stages(tiny_zero123, tmp_path, capsys):
    photo = red_square_photo(tmp_path / "photo.png")
    out = tmp_path / "run"
    code = main(["generate", "--image", str(photo), "--out", str(out), "--steps", "2", f"prior.model={tiny_zero123}",
                 "turntable_frames=1", "turntable_size=16", "export=[ply]", "gaussian.num_points=200",
                 "reference_size=32", "handoff.resolution=32", "handoff.coarse_resolution=16",
                 "handoff.view_size=32", "handoff.views=2"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["coarse", "coarse", "refine", "refine"]
    assert all("ref_rgb_mse" in r and "ref_mask_mse" in r for r in records)
    assert (out / "reference.png").is_file() and (out / "model.ply").is_file()


def test_generate_image_bad_input(tmp_path, capsys):
    assert main(["generate", "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "r")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_image_to_3d_resumed_across_the_hand_off_matches_an_uninterrupted_run(tiny_zero123, tmp_path):
    """Zero123 + reference-view losses on Gaussians, then the mesh refine stage, 2 steps each:
    killed inside the refine stage (after the Gaussians -> mesh hand-off), resumed in a fresh RNG
    state, every stage's final scene and optimiser state equal the uninterrupted run's."""
    from core.config import load_config, resolve_preset
    from core.pipelines.image_to_3d import ImageTo3DConfig, image_to_3d
    from core.runner import Cancelled

    photo = red_square_photo(tmp_path / "photo.png")
    cfg = load_config(ImageTo3DConfig, resolve_preset("image_to_3d/gaussian_zero123"), [
        f"image={photo}", f"prior.model={tiny_zero123}", "turntable_frames=0", "export=[ply]",
        "gaussian.num_points=200", "reference_size=32", "handoff.resolution=32", "handoff.coarse_resolution=16",
        "handoff.view_size=32", "handoff.views=2", "checkpoint_every=1", "preview_every=0",
        *[f"stages.{i}.{key}" for i in range(2) for key in
          ("steps=2", "cameras.batch_size=1", "cameras.width=16", "cameras.height=16")]])
    image_to_3d(cfg, tmp_path / "full")

    with pytest.raises(Cancelled):
        image_to_3d(cfg, tmp_path / "cut", callbacks=StopAfter(3))
    assert torch.load(tmp_path / "cut" / "checkpoints" / "refine.pt", weights_only=False)["step"] == 1
    torch.manual_seed(1234)
    image_to_3d(cfg, tmp_path / "cut")
    for stage in ("coarse", "refine"):
        full = torch.load(tmp_path / "full" / "checkpoints" / f"{stage}.pt", weights_only=False)
        cut = torch.load(tmp_path / "cut" / "checkpoints" / f"{stage}.pt", weights_only=False)
        assert full["step"] == cut["step"] == 2 and full["scene"].keys() == cut["scene"].keys()
        for key, value in full["scene"].items():
            if torch.is_tensor(value):
                assert torch.equal(value, cut["scene"][key]), (stage, key)
        for index, moments in full["optimizer"]["state"].items():
            for name, value in moments.items():
                assert torch.equal(value, cut["optimizer"]["state"][index][name]), (stage, index, name)
