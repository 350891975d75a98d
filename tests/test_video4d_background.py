"""Video-to-4D background: object removal (inpaint.py), the static background Gaussians and
the photometric camera refinement (background.py)."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import UserError
from core.pipelines.video4d.inpaint import dilated_object_mask, inpaint_objects


def _smooth_image(H: int, W: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack([0.2 + 0.5 * xs, 0.3 + 0.3 * torch.sin(3 * ys), 0.5 + 0.2 * xs * ys], -1)


def test_telea_fills_a_square_of_a_smooth_image_and_keeps_the_rest():
    truth = _smooth_image(64, 64)
    frame = truth.clone()
    masks = torch.zeros(1, 64, 64, dtype=torch.long)
    masks[0, 24:34, 28:38] = 3
    frame[24:34, 28:38] = torch.tensor([1.0, 0.0, 1.0])  # the "object"
    out = inpaint_objects(frame[None], masks, dilate=1)[0]
    hole = dilated_object_mask(masks, 1)[0]
    assert hole.sum() == 12 * 12
    assert torch.equal(out[~hole], frame[~hole])
    error = (out[hole] - truth[hole]).abs().mean()
    assert error < 0.02, error  # 8-bit quantisation is 0.002; the object's colour is ~0.6 away


def _panning_plane_clip(T=5, H=48, W=56, shift=3, depth=2.0, f=40.0):
    """A camera sliding along +x in front of a textured plane at `depth`: frame t is the
    canvas shifted by `shift * t` whole pixels (the homography of the plane is exact), with a
    square object moving faster than the background."""
    g = torch.Generator().manual_seed(0)
    canvas = torch.rand(H, W + shift * T, 3, generator=g)
    truth = torch.stack([canvas[:, shift * t:shift * t + W] for t in range(T)])
    frames, masks = truth.clone(), torch.zeros(T, H, W, dtype=torch.long)
    for t in range(T):
        x0 = 8 + 7 * t
        frames[t, 16:28, x0:x0 + 10] = torch.tensor([0.9, 0.1, 0.1])
        masks[t, 16:28, x0:x0 + 10] = 1
    c2w = torch.eye(4).repeat(T, 1, 1)
    c2w[:, 0, 3] = torch.arange(T) * shift * depth / f  # u = f X / z + cx: the view moves shift px per frame
    K = torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])
    return frames, masks, truth, c2w, K, depth


def test_pixels_seen_in_other_frames_fill_the_holes_exactly():
    frames, masks, truth, c2w, K, depth = _panning_plane_clip()
    holes = dilated_object_mask(masks, 1)
    warped = inpaint_objects(frames, masks, dilate=1, c2w=c2w, K=K, plane_depth=depth)
    telea = inpaint_objects(frames, masks, dilate=1)
    assert torch.equal(warped[~holes], frames[~holes])
    warped_error = (warped[holes] - truth[holes]).abs().mean()
    telea_error = (telea[holes] - truth[holes]).abs().mean()
    assert warped_error < 1e-4, warped_error         # every hole pixel is background in some frame
    assert telea_error > 0.1, telea_error           # random texture: propagation cannot guess it


def test_unknown_method_and_unloadable_checkpoints_are_user_errors(tmp_path):
    frames, masks = torch.rand(1, 16, 16, 3), torch.zeros(1, 16, 16, dtype=torch.long)
    with pytest.raises(UserError, match="unknown inpainting method 'lama'"):
        inpaint_objects(frames, masks, method="lama")
    missing = tmp_path / "no_such_inpainter"
    with pytest.raises(UserError, match="no_such_inpainter") as info:
        inpaint_objects(frames, masks, checkpoint=str(missing))
    assert "\n" not in str(info.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    with pytest.raises(UserError, match="half.*lacks") as info:
        inpaint_objects(frames, masks, checkpoint=str(tmp_path / "half"))
    assert "\n" not in str(info.value)


def test_a_tiny_diffusers_inpainting_pipeline_loads_and_keeps_unmasked_pixels(tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline

    from core.priors import tiny

    tokenizer = tiny.build_tiny_tokenizer(())
    StableDiffusionInpaintPipeline(
        vae=tiny._vae(1), text_encoder=tiny._text_encoder(len(tokenizer), 0), tokenizer=tokenizer,
        unet=tiny._unet(16, 9, tiny.TEXT_DIM, 2), scheduler=DDIMScheduler(**tiny._scheduler_kwargs("epsilon"), steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(tmp_path / "inpainter")
    frames = _smooth_image(30, 30)[None].repeat(2, 1, 1, 1)   # not a multiple of 8: resized there and back
    masks = torch.zeros(2, 30, 30, dtype=torch.long)
    masks[:, 10:18, 12:20] = 1
    out = inpaint_objects(frames, masks, checkpoint=str(tmp_path / "inpainter"), dilate=0, num_inference_steps=2)
    holes = masks != 0
    assert out.shape == frames.shape
    assert torch.equal(out[~holes], frames[~holes])
    assert not torch.allclose(out[holes], frames[holes])  # something was generated there
    assert out.min() >= 0 and out.max() <= 1
