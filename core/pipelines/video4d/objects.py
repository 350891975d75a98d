"""Objects of a video, cropped and lifted to static 3D Gaussians (DreamScene4D, Chu et al. 2024, Sec. 3.1).

Crop (DreamScene4D's `main.py` re-centring, as DreamGaussian's image preprocessing): the
object's mask at its first visible frame gives its bounding box, pixels xmin..xmax, ymin..ymax
(OpenCV: the centre of the top-left pixel is (0, 0), pixel i covers [i - 1/2, i + 1/2]):

    w = xmax - xmin + 1, h = ymax - ymin + 1, centre c = ((xmin + xmax) / 2, (ymin + ymax) / 2)
    side = ceil(max(w, h) / fill)                      (an integer number of frame pixels)
    box  = (x0, y0, side), x0 = c_x - side / 2, y0 = c_y - side / 2

so the square [x0, x0 + side] x [y0, y0 + side] is centred on the box and the object's longer
side spans `fill` of it (up to the ceil). Crop pixel u (0..S-1) has its centre at frame
x = x0 + (u + 1/2) side / S (same in y). Because c is a multiple of 1/2, the square's edges are
multiples of 1/2. Each crop pixel is the exact area average (box filter) of the frame over its
footprint, pixels outside the frame counting as transparent. The alpha is the mask filtered so;
the colour is the area average of mask * rgb divided by the alpha (straight, not premultiplied,
0 where alpha = 0): RGBA over a transparent background, as an RGBA PNG for image-to-3D.

Lift: the crop is image-to-3D's reference picture (`core/pipelines/image_to_3d.py`): Gaussians
fitted to it at the reference camera (RGB + mask MSE) while Zero123 SDS shapes the novel views,
with DreamScene4D's schedules (its `main.py`, `configs/image.yaml`, `guidance/zero123_utils.py`,
which follow DreamGaussian):
- timestep annealing: t = (1 - p) T, deterministic, clipped to [0.02 T, 0.98 T] at progress p;
  here t = T (0.98 - 0.96 p) (the engine's "linear" schedule with t_min = t_max), which has the
  same end points;
- resolution: novel views at 128 px for p < 0.3, 256 px for p < 0.6, 512 px after, with a
  256 px reference: 0.5x, 1x, 2x the reference size; here the same ratios and milestones of
  `size` (CPU default 64: 32, 64, 128);
- reference weights 10000 (RGB) and 1000 (mask) times p (`reference_ramp`);
- novel cameras: elevation within +-30 deg of the reference, any azimuth, radius r_ref +- 0.5,
  Zero123's guidance scale 5, w(t) = 1 - alpha_bar_t.
Kept from this project rather than DreamScene4D: the fill (DreamScene4D re-centres to 0.65; the
contract's 0.75 is image-to-3D's), the reference camera (r_ref 2.5, fov 45 deg as the built-in
Zero123; DreamScene4D: 2, 49.1 deg) and the plain reference MSE (DreamScene4D averages inside and
outside the mask separately) of `image_to_3d.reference_loss`.
Scaled for CPU (DreamScene4D: 1000 steps of 16 views at up to 512 px, 5000 initial Gaussians):
`steps`, `batch_size` and `num_points` below; densification keeps the preset's place in the run
(at 1/4, 1/2 and 3/4 of the steps).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from core.errors import UserError
from renderers.gaussian.scene import GaussianScene

PRESET = "image_to_3d/gaussian_zero123"
# DreamScene4D main.py: novel-view render size 128 / 256 / 512 from progress 0 / 0.3 / 0.6 with a
# 256 px reference image.
RESOLUTION_MILESTONES = ((0.0, 0.5), (0.3, 1.0), (0.6, 2.0))


@dataclass
class ObjectCrop:
    """rgba [1,4,S,S] in [0,1]: straight colour and alpha, transparent outside the object;
    box (x0, y0, side): the square's left and top edges and its side in frame pixels, OpenCV
    convention (module docstring); fill: the share of the side the object's longer extent spans."""

    rgba: Tensor
    box: tuple[float, float, float]
    fill: float = 0.75

    @property
    def size(self) -> int:
        return self.rgba.shape[-1]


def area_weights(start: float, side: float, size: int, n: int) -> Tensor:
    """[size, n] box-filter weights: output pixel u covers [start + u q, start + (u+1) q] (q = side /
    size) in OpenCV edge coordinates, input pixel j covers [j - 1/2, j + 1/2]; the weight is their
    overlap over q, so each row sums to the share of the footprint inside the n pixels."""
    q = side / size
    lo = start + q * torch.arange(size, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(lo + q, j + 0.5) - torch.maximum(lo, j - 0.5)).clamp_min(0)
    return (overlap / q).float()


def crop_image(image: Tensor, box: tuple[float, float, float], size: int) -> Tensor:
    """image [H,W,C] area-averaged over the square `box` (x0, y0, side: OpenCV edge coordinates,
    as ObjectCrop.box) into [size,size,C]; what lies outside the picture counts as zero."""
    H, W = image.shape[:2]
    x0, y0, side = box
    ay = area_weights(y0, side, size, H).to(image.device)                             # [S,H]
    ax = area_weights(x0, side, size, W).to(image.device)                             # [S,W]
    return torch.einsum("uh,hwc,vw->uvc", ay, image.float(), ax)


def crop_object(frame: Tensor, mask: Tensor, size: int = 64, fill: float = 0.75) -> ObjectCrop:
    """The object of `mask` cut out of `frame`, re-centred so its longer side fills `fill` of a
    square `size` x `size` crop (module docstring).

    frame [H,W,3] float in [0,1]; mask [H,W] bool (or 0/1). Raises UserError for an empty mask.
    """
    if not 0.0 < fill <= 1.0:
        raise UserError(f"fill must be in (0, 1], got {fill}")
    mask = mask.bool()
    H, W = mask.shape
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        raise UserError("the object's mask is empty in this frame: crop it at a frame where it is visible")
    xmin, xmax, ymin, ymax = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    side = math.ceil(max(xmax - xmin + 1, ymax - ymin + 1) / fill)
    x0 = (xmin + xmax) / 2 - side / 2
    y0 = (ymin + ymax) / 2 - side / 2
    alpha = mask.float()
    stack = torch.cat([frame.float() * alpha[..., None], alpha[..., None]], dim=-1)   # premultiplied [H,W,4]
    small = crop_image(stack, (x0, y0, side), size).permute(2, 0, 1)[None]            # [1,4,S,S]
    a = small[:, 3:4].clamp(0, 1)
    straight = torch.where(a > 0, small[:, :3] / a.clamp_min(1e-8), torch.zeros_like(small[:, :3])).clamp(0, 1)
    return ObjectCrop(torch.cat([straight, a], dim=1), (float(x0), float(y0), float(side)), fill)


def crop_first_visible(frames: Tensor, masks: Tensor, object_id: int, size: int = 64,
                       fill: float = 0.75) -> tuple[int, ObjectCrop]:
    """(t, crop) at the first frame where `object_id` has a pixel. frames [T,H,W,3] in [0,1],
    masks [T,H,W] integer ids (core.data.video.VideoClip)."""
    visible = (masks == object_id).flatten(1).any(1)
    if not bool(visible.any()):
        raise UserError(f"object {object_id} appears in no mask")
    t = int(torch.nonzero(visible)[0])
    return t, crop_object(frames[t], masks[t] == object_id, size, fill)


@dataclass
class ObjectLiftConfig:
    """How one object is lifted (module docstring for the sources of the defaults).

    steps: optimisation steps (DreamScene4D: 1000; the CPU default lifts one 64 px object in
      about two minutes of one thread). batch_size: novel views per step (DreamScene4D: 16).
    num_points: initial Gaussians (DreamScene4D: 5000). prior_model: "builtin:zero123", a hub id or
      a folder of any Zero123 checkpoint in the diffusers layout. elevation_deg: the reference
      view's elevation (DreamScene4D: 0; the contract's `el_ref`). radius, fov_deg: Zero123's
      reference camera (the contract's r_ref = 2.5 and 45 deg). guidance_scale: Zero123 CFG.
    t_start, t_end: the annealed timestep (fractions of T) at the first and last step.
    reference_ramp: multiply the reference RGB/mask weights by progress (DreamScene4D).
    resolution: [[progress, render size as a multiple of the crop size], ...].
    overrides: dotted overrides of the image-to-3D config, applied last (e.g. "gaussian.lr_means=2e-3").
    """

    steps: int = 300
    batch_size: int = 2
    num_points: int = 1000
    prior_model: str = "builtin:zero123"
    elevation_deg: float = 0.0
    radius: float = 2.5
    fov_deg: float = 45.0
    guidance_scale: float = 5.0
    t_start: float = 0.98
    t_end: float = 0.02
    rgb_weight: float = 10000.0
    mask_weight: float = 1000.0
    reference_ramp: bool = True
    resolution: list[tuple[float, float]] = field(default_factory=lambda: [list(m) for m in RESOLUTION_MILESTONES])
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 50
    preview_every: int = 0
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.num_points < 1:
            raise UserError("steps, batch_size and num_points must be at least 1")
        if not 0.0 <= self.t_end <= self.t_start <= 1.0:
            raise UserError(f"need 0 <= t_end <= t_start <= 1, got t_start={self.t_start}, t_end={self.t_end}")


def lift_prior(cfg: ObjectLiftConfig, base=None):
    """The Zero123 PriorConfig of a lift (the preset's, with the model and reference view of `cfg`);
    the motion stage conditions the same loaded prior."""
    import dataclasses as dc

    from core.config import from_dict, read_yaml, resolve_preset
    from core.pipelines.image_to_3d import ImageTo3DConfig

    base = base if base is not None else from_dict(ImageTo3DConfig, read_yaml(resolve_preset(PRESET))).prior
    return dc.replace(base, model=cfg.prior_model, reference_elevation_deg=cfg.elevation_deg, reference_azimuth_deg=0.0)


def lift_config(crop: ObjectCrop, image: str | Path, cfg: ObjectLiftConfig):
    """The image-to-3D config of one lift: the preset's coarse Gaussian stage only, with
    DreamScene4D's schedules (module docstring), exporting model.ply only."""
    from core.config import apply_overrides, from_dict, read_yaml, resolve_preset, to_dict
    from core.distill.schedules import ScalarSchedule, ScheduleConfig
    from core.pipelines.image_to_3d import ImageTo3DConfig

    base = from_dict(ImageTo3DConfig, read_yaml(resolve_preset(PRESET)))
    coarse = next(s for s in base.stages if s.representation == "gaussian")
    sizes = [(float(p), max(8, int(round(r * crop.size)))) for p, r in sorted(cfg.resolution)]
    first = sizes[0][1]
    cameras = dataclasses.replace(
        coarse.cameras, batch_size=cfg.batch_size, width=first, height=first,
        elevation_range=(cfg.elevation_deg - 30.0, cfg.elevation_deg + 30.0), azimuth_range=(-180.0, 180.0),
        radius_range=(cfg.radius - 0.5, cfg.radius + 0.5), fov_range=(cfg.fov_deg, cfg.fov_deg))
    # DreamScene4D zero123_utils.train_step: t = (1 - p) T clipped to [0.02, 0.98] T, one t per step.
    schedule = ScheduleConfig(t_min=cfg.t_start, t_max=cfg.t_start, timestep_schedule="linear",
                              t_min_end=cfg.t_end, t_max_end=cfg.t_end, weighting="sds")
    objective = dataclasses.replace(coarse.objective, guidance_scale=cfg.guidance_scale, schedule=schedule)
    stage = dataclasses.replace(coarse, steps=cfg.steps, cameras=cameras, objective=objective,
                                resolution=[(p, s) for p, s in sizes[1:]])
    densify = dataclasses.replace(base.gaussian.densify, refine_start=max(1, cfg.steps // 4),
                                  refine_stop=max(1, 3 * cfg.steps // 4), refine_every=max(1, cfg.steps // 4))
    gaussian = dataclasses.replace(base.gaussian, num_points=cfg.num_points, densify=densify)
    prior = lift_prior(cfg, base.prior)

    def weight(w: float):
        return ScalarSchedule("linear", 0.0, w) if cfg.reference_ramp else w

    lifted = dataclasses.replace(
        base, image=str(image), stages=[stage], gaussian=gaussian, prior=prior, seed=cfg.seed, device=cfg.device,
        reference_size=crop.size, reference_radius=cfg.radius, reference_fov=cfg.fov_deg, object_fill=crop.fill,
        rgb_weight=weight(cfg.rgb_weight), mask_weight=weight(cfg.mask_weight), export=["ply"],
        turntable_frames=0, checkpoint_every=cfg.checkpoint_every, preview_every=cfg.preview_every)
    if cfg.overrides:
        lifted = from_dict(ImageTo3DConfig, apply_overrides(to_dict(lifted), list(cfg.overrides)))
    return lifted


def lift_object(crop: ObjectCrop, out_dir: str | Path, cfg: ObjectLiftConfig | None = None, prior=None,
                callbacks=None) -> GaussianScene:
    """Static Gaussians of the object in `crop`, in its canonical space (centred at the origin,
    seen from Zero123's reference camera at (cfg.elevation_deg, 0 deg, cfg.radius), fov cfg.fov_deg).

    out_dir becomes the run folder (crop.png, reference.png, config.yaml, metrics.jsonl,
    checkpoints/, model.ply); calling again with the same folder resumes from its checkpoint
    (a finished lift is only re-exported). prior: an already loaded Zero123 prior (shared by the
    objects of one video), else cfg.prior_model is loaded. callbacks: core.runner.Callbacks.
    """
    from core.io import write_png
    from core.pipelines.image_to_3d import image_to_3d

    cfg = cfg or ObjectLiftConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image = write_png(out / "crop.png", crop.rgba[0].permute(1, 2, 0).clamp(0, 1))
    paths = image_to_3d(lift_config(crop, image, cfg), out, callbacks=callbacks, prior=prior)
    return GaussianScene.load(paths["model_ply"])
