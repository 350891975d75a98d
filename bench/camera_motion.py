"""Camera motion accuracy on a synthetic clip: `core.data.camera_motion` against the known
cameras of `core.data.video_synth`, read back through `core.data.video.load_video_clip` as a
user's clip would be.

    python bench/camera_motion.py                       # renders a 24-frame 128 px clip first
    python bench/camera_motion.py --clip DIR            # a clip written by python -m core.data.video_synth

Prints, relative to frame 0: the rotation error per frame (max, mean), the angle between
estimated and true translation (max, median over frames with a translation), the spread of
the translation scale (max / min of |t_est| / |t_true|), and the estimation's wall time.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.data.camera_motion import estimate_camera_motion
from core.data.video import load_video_clip
from core.data.video_synth import SyntheticVideoConfig, render_video, write_video


def errors(c2w_estimated: torch.Tensor, c2w_true: torch.Tensor) -> dict:
    truth = torch.linalg.inv(c2w_true[0].double()) @ c2w_true.double()
    rotation, direction, scale = [], [], []
    for t in range(1, len(truth)):
        R = c2w_estimated[t, :3, :3].double().T @ truth[t, :3, :3]
        rotation.append(math.degrees(math.acos(max(-1.0, min(1.0, (float(torch.trace(R)) - 1) / 2)))))
        t_est, t_true = c2w_estimated[t, :3, 3].double(), truth[t, :3, 3]
        if t_est.norm() > 0 and t_true.norm() > 0:
            cos = float(t_est @ t_true / (t_est.norm() * t_true.norm()))
            direction.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
            scale.append(float(t_est.norm() / t_true.norm()))
    return {
        "rotation_max_deg": max(rotation), "rotation_mean_deg": float(np.mean(rotation)),
        "direction_max_deg": max(direction) if direction else float("nan"),
        "direction_median_deg": float(np.median(direction)) if direction else float("nan"),
        "scale_spread": max(scale) / min(scale) if scale else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", help="folder with frames/, masks/, gt.npz (default: render one)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.clip) if args.clip else Path(tmp)
        if not args.clip:
            cfg = SyntheticVideoConfig(frames=args.frames, width=args.size, height=args.size)
            write_video(render_video(cfg), folder)
        clip = load_video_clip(folder / "frames", folder / "masks")
        truth = torch.from_numpy(np.load(folder / "gt.npz")["c2w"])
        start = time.perf_counter()
        motion = estimate_camera_motion(clip.frames, clip.masks, clip.K)
        seconds = time.perf_counter() - start
    result = errors(motion.c2w, truth)
    print(f"{clip.num_frames} frames {clip.width}x{clip.height}; methods: "
          f"{', '.join(f'{m} x{motion.method.count(m)}' for m in dict.fromkeys(motion.method))}")
    print(f"rotation error: max {result['rotation_max_deg']:.2f} deg, mean {result['rotation_mean_deg']:.2f} deg")
    print(f"translation direction error: max {result['direction_max_deg']:.1f} deg, "
          f"median {result['direction_median_deg']:.1f} deg; scale spread {result['scale_spread']:.2f}")
    print(f"estimation: {seconds:.1f} s")


if __name__ == "__main__":
    main()
