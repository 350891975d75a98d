"""Remove the objects from every frame of a video: the input of the static background scene.

DreamScene4D (Chu et al. 2024, Sec. 3.1) inpaints the object pixels of each frame before
fitting the background Gaussians. Three sources of colour for a hole pixel, best first:

1. The same background point seen in another frame (`fill_from_other_frames`, used when the
   cameras are given). A hole pixel p of frame t is looked up in frame s through the
   homography of a plane at depth d in camera t. With OpenCV cameras (x right, y down,
   z forward), X_s = R X_t + t_ts maps camera-t to camera-s coordinates
   (R, t_ts from w2c_s c2w_t); a point on the plane n^T X_t = d, n = (0, 0, 1), satisfies
   n^T X_t / d = 1, hence

       X_s = (R + t_ts n^T / d) X_t,      p_s ~ K (R + t_ts n^T / d) K^-1 p_t.

   For a camera that only turns (t_ts = 0) this is exact at every depth; with translation
   the error is |t_ts| f |1/d - 1/z| pixels for a point at depth z. d defaults to 1, the
   median background depth of frame 0 in `estimate_camera_motion`'s scale. The nearest
   frames in time are tried first (least motion, least parallax error); a pixel is taken
   from frame s only where that frame shows background there (its own dilated object mask
   is clear at the bilinear footprint) and inside the image.
2. What no frame shows: OpenCV's inpainting (Telea 2004, fast marching), or a diffusers
   Stable Diffusion inpainting checkpoint when one is named (then the whole hole is
   generated from the frame and its mask; pixels outside the hole are kept exactly).
3. The background scene itself: `background.py` fits Gaussians to the pixels outside the
   object masks of all frames, so its render at frame t is a multi-view-consistent fill of
   t's holes; these inpainted frames only initialise it and weakly supervise what no frame
   shows.

Pixels outside the (dilated) object masks are returned unchanged by every method.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.errors import UserError

METHODS = ("opencv", "diffusers")
SD_INPAINT_LAYOUT = "Stable Diffusion inpainting"
SD_INPAINT_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def dilated_object_mask(masks: Tensor, dilate: int) -> Tensor:
    """bool [T,H,W]: pixels of any object (masks [T,H,W] int ids, 0 = background) grown by
    `dilate` pixels (a (2 dilate + 1)^2 square, as cv2.dilate with a square kernel)."""
    objects = (masks != 0).float()[:, None]
    if dilate > 0:
        objects = F.max_pool2d(objects, 2 * dilate + 1, stride=1, padding=dilate)
    return objects[:, 0] > 0


def inpaint_objects(frames: Tensor, masks: Tensor, method: str = "opencv", dilate: int = 2, checkpoint: str = "",
                    c2w: Tensor | None = None, K: Tensor | None = None, plane_depth: float = 1.0,
                    telea_radius: int = 3, prompt: str = "", num_inference_steps: int = 20, seed: int = 0,
                    processing_resolution: int = 512) -> Tensor:
    """frames [T,H,W,3] float in [0,1], masks [T,H,W] int object ids (0 = background) ->
    [T,H,W,3] frames with the objects (masks dilated by `dilate` px) removed.

    method "opencv": cv2.inpaint (Telea, radius `telea_radius`); "diffusers" (or any
    method when `checkpoint` is set): a diffusers StableDiffusionInpaintPipeline loaded
    from `checkpoint` (hub id or folder), `prompt`, `num_inference_steps`, `seed`, run with
    the longer side at `processing_resolution` px (SD inpainting's 512; 0: the frame size).
    With c2w [T,4,4] (OpenGL) and K [3,3] (OpenCV pixel convention), hole pixels that another
    frame shows are copied from it first (module docstring, plane at `plane_depth`).
    Raises UserError for an unknown method and PriorLoadError (a UserError) for a
    checkpoint that cannot be loaded.
    """
    if method not in METHODS:
        raise UserError(f"unknown inpainting method '{method}': use one of {', '.join(METHODS)}")
    if method == "diffusers" and not checkpoint:
        raise UserError("inpainting method 'diffusers' needs a checkpoint (a Stable Diffusion inpainting hub id "
                        "or folder)")
    if frames.ndim != 4 or frames.shape[-1] != 3 or masks.shape != frames.shape[:3]:
        raise ValueError(f"frames must be [T,H,W,3] and masks [T,H,W], got {tuple(frames.shape)} and "
                         f"{tuple(masks.shape)}")
    pipe = load_inpainting_pipeline(checkpoint) if checkpoint else None  # fail before any work
    frames = frames.detach().float().cpu().clamp(0, 1)
    holes = dilated_object_mask(masks.cpu(), dilate)
    result, missing = frames.clone(), holes.clone()
    if c2w is not None and K is not None:
        result, missing = fill_from_other_frames(frames, holes, c2w, K, plane_depth)
    if pipe is not None:
        return torch.stack([diffusers_inpaint(pipe, result[t], missing[t], prompt, num_inference_steps, seed + t,
                                              processing_resolution) for t in range(len(frames))])
    return torch.stack([telea_inpaint(result[t], missing[t], telea_radius) for t in range(len(frames))])


def telea_inpaint(image: Tensor, hole: Tensor, radius: int = 3) -> Tensor:
    """image [H,W,3] in [0,1], hole [H,W] bool -> [H,W,3]: cv2.inpaint(INPAINT_TELEA) inside the
    hole (on 8-bit colour, as OpenCV needs), the input kept exactly outside it."""
    import cv2

    if not hole.any():
        return image.clone()
    if hole.all():  # nothing to propagate from: a flat mean grey is the honest answer
        return torch.full_like(image, 0.5)
    image8 = (image.numpy() * 255).round().clip(0, 255).astype(np.uint8)
    filled = cv2.inpaint(image8, hole.numpy().astype(np.uint8), radius, cv2.INPAINT_TELEA)
    filled = torch.from_numpy(filled).float() / 255.0
    return torch.where(hole[..., None], filled, image)


def fill_from_other_frames(frames: Tensor, holes: Tensor, c2w: Tensor, K: Tensor,
                           plane_depth: float = 1.0) -> tuple[Tensor, Tensor]:
    """Copy each hole pixel from the nearest frame in time that shows background there.

    frames [T,H,W,3] in [0,1]; holes [T,H,W] bool; c2w [T,4,4] OpenGL camera-to-world; K [3,3]
    OpenCV (centre of the top-left pixel at (0, 0)); plane_depth > 0 (module docstring).
    Returns (filled frames [T,H,W,3], holes still missing [T,H,W] bool).
    """
    T, H, W, _ = frames.shape
    c2w_cv = c2w.detach().double().cpu() @ _GL_TO_CV.double()
    w2c_cv = torch.linalg.inv(c2w_cv)
    K = K.detach().double().cpu()
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)       # [HW,3] homogeneous
    n = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    images = frames.permute(0, 3, 1, 2)                                          # [T,3,H,W]
    blocked = holes.float()[:, None]                                             # [T,1,H,W]
    filled, missing = frames.clone(), holes.clone()
    for t in range(T):
        if not missing[t].any():
            continue
        for s in sorted(range(T), key=lambda s: (abs(s - t), s)):
            if s == t:
                continue
            relative = w2c_cv[s] @ c2w_cv[t]                                     # camera t -> camera s
            homography = K @ (relative[:3, :3] + relative[:3, 3:] @ n[None] / plane_depth) @ torch.linalg.inv(K)
            p = pixels @ homography.T
            front = p[:, 2] > 1e-9
            uv = (p[:, :2] / p[:, 2:].clamp_min(1e-9)).reshape(H, W, 2)
            # grid_sample with align_corners=True puts -1 and 1 on the centres of the edge pixels
            grid = torch.stack([uv[..., 0] / max(W - 1, 1), uv[..., 1] / max(H - 1, 1)], -1) * 2 - 1
            grid = grid.float()[None]
            colour = F.grid_sample(images[s:s + 1], grid, mode="bilinear", align_corners=True)[0].permute(1, 2, 0)
            # a hole pixel with any real weight in the bilinear footprint disqualifies the sample
            occluded = F.grid_sample(blocked[s:s + 1], grid, mode="bilinear", align_corners=True)[0, 0] > 1e-3
            eps = 1e-6  # rounding of the homography at the edge pixels' centres
            inside = (uv[..., 0] >= -eps) & (uv[..., 0] <= W - 1 + eps) & (uv[..., 1] >= -eps) & (uv[..., 1] <= H - 1 + eps)
            usable = missing[t] & inside & ~occluded & front.reshape(H, W)
            filled[t][usable] = colour[usable]
            missing[t] &= ~usable
            if not missing[t].any():
                break
    return filled, missing


def load_inpainting_pipeline(checkpoint: str, device: str = "auto"):
    """A diffusers StableDiffusionInpaintPipeline from a hub id or folder, frozen, no safety
    checker. Raises PriorLoadError (a UserError, one line naming `checkpoint`) when it cannot be loaded."""
    from diffusers import StableDiffusionInpaintPipeline

    from core.priors.loading import load_component, resolve_device, resolve_source

    source = resolve_source(checkpoint, SD_INPAINT_LAYOUT, SD_INPAINT_FOLDERS)
    pipe = load_component(StableDiffusionInpaintPipeline, source, None, SD_INPAINT_LAYOUT, safety_checker=None,
                          requires_safety_checker=False)
    pipe = pipe.to(resolve_device(device))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def diffusers_inpaint(pipe, image: Tensor, hole: Tensor, prompt: str = "", num_inference_steps: int = 20,
                      seed: int = 0, processing_resolution: int = 512) -> Tensor:
    """image [H,W,3] in [0,1], hole [H,W] bool -> [H,W,3]: the pipeline's fill inside the hole,
    the input kept exactly outside it. The pipeline runs with the longer side at
    `processing_resolution` (0: the frame's), both sides rounded up to a multiple of 8 (its
    VAE's stride), and the result is resized back."""
    if not hole.any():
        return image.clone()
    H, W = hole.shape
    factor = processing_resolution / max(H, W) if processing_resolution > 0 else 1.0
    height, width = (-(-round(side * factor) // 8) * 8 for side in (H, W))
    generator = torch.Generator("cpu").manual_seed(seed)
    out = pipe(prompt=prompt, image=image.permute(2, 0, 1)[None], mask_image=hole.float()[None, None],
               height=height, width=width, num_inference_steps=num_inference_steps, generator=generator,
               output_type="pt").images                                      # [1,3,height,width] in [0,1]
    out = out.float().cpu()
    if (height, width) != (H, W):
        out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)
    return torch.where(hole[..., None], out[0].permute(1, 2, 0).clamp(0, 1), image)
