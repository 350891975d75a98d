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
    frames = _smooth_image(30, 30)[None].repeat(2, 1, 1, 1)   # run at 40x40 (36 up to 8s), resized back
    masks = torch.zeros(2, 30, 30, dtype=torch.long)
    masks[:, 10:18, 12:20] = 1
    out = inpaint_objects(frames, masks, checkpoint=str(tmp_path / "inpainter"), dilate=0, num_inference_steps=2,
                          processing_resolution=36)
    holes = masks != 0
    assert out.shape == frames.shape
    assert torch.equal(out[~holes], frames[~holes])
    assert not torch.allclose(out[holes], frames[holes])  # something was generated there
    assert out.min() >= 0 and out.max() <= 1


# --- the background scene and the camera refinement --------------------------------------------

from core.pipelines.video4d.background import (  # noqa: E402
    BackgroundSceneConfig, PoseRefinement, background_psnr, build_background_stage, rotation_error_deg, so3_exp)
from core.runner import RunFolder, SilentCallbacks, run_stage  # noqa: E402


@pytest.fixture(scope="module")
def clip():
    from core.data.video_synth import SyntheticVideoConfig, render_video

    video = render_video(SyntheticVideoConfig(frames=6, width=64, height=64, supersample=1))
    return video, inpaint_objects(video.frames, video.masks)


class _TrueDepth(torch.nn.Module):
    """A depth 'estimator' returning the clip's true depth, affinely squashed (the background
    stage must fit that affine map back from triangulated points)."""

    def __init__(self, video):
        super().__init__()
        self.video = video

    def forward(self, images):
        frames = self.video.frames.permute(0, 3, 1, 2)
        index = [int((frames - image[None]).abs().flatten(1).mean(1).argmin()) for image in images]
        return (self.video.depth[index][:, None] - 1.0) / 10.0


def _config(**overrides) -> BackgroundSceneConfig:
    base = dict(steps=40, pixel_stride=2, pose_start=20, preview_every=0, checkpoint_every=0)
    return BackgroundSceneConfig(**{**base, **overrides})


def test_so3_exp_matches_the_matrix_exponential():
    omega = torch.tensor([[0.3, -0.2, 0.5], [1e-6, 0.0, -2e-6], [0.0, 0.0, 0.0]], dtype=torch.float64)
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    hat = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    assert torch.allclose(so3_exp(omega), torch.linalg.matrix_exp(hat), atol=1e-12)
    omega = torch.zeros(3, requires_grad=True)
    so3_exp(omega)[0, 1].backward()  # d R_01 / d omega at 0 = d(-z)/d omega = (0, 0, -1)
    assert torch.allclose(omega.grad, torch.tensor([0.0, 0.0, -1.0]))
    turned = torch.eye(4).repeat(2, 1, 1)
    turned[1, :3, :3] = so3_exp(torch.tensor([0.01, 0.02, -0.02]))
    assert torch.allclose(rotation_error_deg(turned, torch.eye(4).repeat(2, 1, 1)),
                          torch.tensor([0.0, math.degrees(0.03)]), atol=1e-3)


def test_relative_depth_is_mapped_to_the_cameras_scale(clip):
    from core.pipelines.video4d.background import metric_depth

    video, inpainted = clip
    holes = dilated_object_mask(video.masks, 2)
    relative = _TrueDepth(video)(video.frames[:1].permute(0, 3, 1, 2))[0, 0]
    depth, how = metric_depth(relative, inpainted, holes, video.c2w, video.K, 0)
    assert how == "triangulated"
    relative_error = ((depth - video.depth[0]).abs() / video.depth[0])[~holes[0]].median()
    assert relative_error < 0.05, relative_error
    # a camera that only turns measures no depth: the median-1 convention
    turning = video.c2w.clone()
    turning[:, :3, 3] = 0.0
    depth, how = metric_depth(relative, inpainted, holes, turning, video.K, 0)
    assert how == "median" and abs(float(depth.median()) - 1.0) < 1e-6 and depth.min() > 0


def test_the_background_stage_raises_background_psnr(clip, tmp_path):
    video, inpainted = clip
    stage, scene, poses = build_background_stage(inpainted, video.masks, video.c2w, video.K,
                                                 _config(refine_cameras=False), depth_estimator=_TrueDepth(video))
    before = background_psnr(scene, poses.c2w(), video.K, video.frames, video.masks)
    run_stage(stage, RunFolder(tmp_path), SilentCallbacks())
    after = background_psnr(scene, poses.c2w(), video.K, video.frames, video.masks)
    assert after > before + 3.0, (before, after)   # measured 18.4 -> 22.9 dB


def test_pose_refinement_reduces_a_rotation_error_and_keeps_frame_0(clip, tmp_path):
    video, inpainted = clip
    c2w = video.c2w.clone()
    c2w[4, :3, :3] = c2w[4, :3, :3] @ so3_exp(torch.tensor([0.02, -0.015, 0.01]))  # 1.54 degrees off
    start = float(rotation_error_deg(c2w, video.c2w)[4])
    cfg = _config(steps=60, pose_start=10, lr_rotation=2e-3)
    stage, scene, poses = build_background_stage(inpainted, video.masks, c2w, video.K, cfg,
                                                 depth_estimator=_TrueDepth(video))
    run_stage(stage, RunFolder(tmp_path), SilentCallbacks())
    refined = poses.c2w().detach()
    errors = rotation_error_deg(refined, video.c2w)
    assert errors[4] < 0.5 * start, (start, errors)        # measured 1.54 -> 0.49 degrees
    assert errors[[1, 2, 3, 5]].max() < 0.5, errors        # the right ones drift less (measured <= 0.3)
    assert torch.equal(refined[0], c2w[0])


class _Killed(Exception):
    pass


class _KillAt(SilentCallbacks):
    def __init__(self, step):
        self.step = step

    def on_step(self, stage, step, total, stats):
        if step == self.step:
            raise _Killed  # dies without a checkpoint at this step: the last periodic one is used


def test_resume_after_a_kill_repeats_the_uninterrupted_run(clip, tmp_path):
    video, inpainted = clip
    c2w = video.c2w.clone()
    c2w[3, :3, 3] += 0.05
    cfg = _config(steps=12, pose_start=3, checkpoint_every=5, keyframes=2)

    def build():
        return build_background_stage(inpainted, video.masks, c2w, video.K, cfg, depth_estimator=_TrueDepth(video))

    stage, scene, poses = build()
    run_stage(stage, RunFolder(tmp_path / "straight"), SilentCallbacks())
    stage_b, _, _ = build()
    with pytest.raises(_Killed):
        run_stage(stage_b, RunFolder(tmp_path / "killed"), _KillAt(8))
    stage_c, scene_c, poses_c = build()
    run_stage(stage_c, RunFolder(tmp_path / "killed"), SilentCallbacks())
    for name, value in scene.params.items():
        assert torch.equal(value, scene_c.params[name]), name
    assert torch.equal(poses.c2w(), poses_c.c2w())
    assert not torch.equal(poses.c2w()[3], c2w[3])   # the poses did move
