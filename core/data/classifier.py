"""A small CNN that names the colour and the shape of a procedural-world object in an image.

It judges the built-in prior's assets: render a generated asset from a few views, and
`classify` says whether "a red cube" came out red and cubic. It trains on renders of the
procedural world with object seeds in CLASSIFIER_TRAIN_SEEDS and is measured on
CLASSIFIER_TEST_SEEDS; the prior trains on seeds >= PRIOR_SEED_START, so the judge has never
seen the prior's objects. Score-distilled assets are blurrier and noisier than clean renders,
and not always centred or of the usual size, so training adds blur, noise, shifts, scale
and brightness changes (never hue changes: the colour is the label).

Assets are judged over white, black and grey (issue 15: a filler the colour of the training
background hides over that background), so each training render is re-composited over a
drawn background (BACKGROUND_MIX: white, black, mid grey or a uniform random colour) from its
alpha: a render over white is I_w = a c + (1 - a), its premultiplied colour a c = I_w - 1 + a,
and over b it is a c + (1 - a) b. The zoom/shift is applied to (a c, a) before that, so the
frame's new border is background too.

Inputs are [B,3,H,W] in [0,1] over any of those backgrounds; other sizes are resized to 32 px.

    python -m core.data.classifier --out core/data/classifier_weights.safetensors --steps 4000
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.data.procedural import (
    CLASSIFIER_TEST_SEEDS,
    CLASSIFIER_TRAIN_SEEDS,
    COLORS,
    SHAPES,
    ProceduralWorld,
    ProceduralWorldConfig,
)

DEFAULT_WEIGHTS = Path(__file__).with_name("classifier_weights.safetensors")
RESOLUTION = 32
# (probability, background) of the training composites; None: a uniform random colour
BACKGROUND_MIX = ((0.4, (1.0, 1.0, 1.0)), (0.2, (0.0, 0.0, 0.0)), (0.2, (0.5, 0.5, 0.5)), (0.2, None))
# the backgrounds the held-out accuracy is reported over
JUDGING_BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5)}


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ProceduralClassifier(nn.Module):
    """Five 3x3 conv blocks (32 -> 16 -> 8 -> 4 px), global average pool, two linear heads (~70k params).

    Only one block runs at full resolution: a batch of 128 trains in ~0.5 s on one CPU thread.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w), nn.MaxPool2d(2),
            _block(w, 2 * w), _block(2 * w, 2 * w), nn.MaxPool2d(2),
            _block(2 * w, 4 * w), nn.MaxPool2d(2),
            _block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.color_head = nn.Linear(4 * w, len(COLORS))
        self.shape_head = nn.Linear(4 * w, len(SHAPES))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images [B,3,H,W] in [0,1] -> (colour logits [B,len(COLORS)], shape logits [B,len(SHAPES)])."""
        if images.shape[-2:] != (RESOLUTION, RESOLUTION):
            images = F.interpolate(images, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True,
                                   align_corners=False)
        h = self.features((images - 0.5) / 0.25)
        return self.color_head(h), self.shape_head(h)


def draw_backgrounds(n: int, generator: torch.Generator) -> Tensor:
    """n background colours [n,3] drawn from BACKGROUND_MIX."""
    probs = torch.tensor([p for p, _ in BACKGROUND_MIX])
    pick = torch.multinomial(probs, n, replacement=True, generator=generator)
    out = torch.rand(n, 3, generator=generator)  # the random-colour entries keep these
    for i, (_, colour) in enumerate(BACKGROUND_MIX):
        if colour is not None:
            out[pick == i] = torch.tensor(colour)
    return out


def over_background(images: Tensor, alpha: Tensor, background: Tensor) -> Tensor:
    """Renders over white [B,3,H,W] with alpha [B,1,H,W] -> the same renders over background [B,3]."""
    return images - (1 - alpha) * (1 - background.view(-1, 3, 1, 1))


def augment(images: Tensor, generator: torch.Generator, alpha: Tensor | None = None) -> Tensor:
    """Background, blur, noise, shift/scale and brightness, as score-distilled assets differ from clean renders.

    images [B,3,H,W] in [0,1] over white, alpha [B,1,H,W] (None: stay over white)
    -> same shape in [0,1]. Hue never changes.
    """
    B, _, H, W = images.shape
    u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    if alpha is None:   # every pixel its own colour over white; the frame's new border white
        alpha = torch.ones(B, 1, H, W, dtype=images.dtype)
        background = torch.ones(B, 3)
    else:
        background = draw_backgrounds(B, generator)
    premultiplied = images - 1 + alpha
    # Random zoom (0.8-1.15) and shift (+-12% of the frame) of (a c, a); outside is empty.
    scale = 0.8 + 0.35 * u(B)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = (u(B, 2) - 0.5) * 0.24
    flip = u(B) < 0.5  # mirror images: shapes and colours are unchanged by it
    theta[flip, 0, 0] *= -1
    grid = F.affine_grid(theta, images.shape, align_corners=False)
    moved = F.grid_sample(torch.cat([premultiplied, alpha], 1), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    out = moved[:, :3] + (1 - moved[:, 3:]) * background.view(B, 3, 1, 1)
    # Gaussian blur with sigma in [0, 1.2] px, per image (separable, 5 taps).
    sigma = (1.2 * u(B)).clamp_min(1e-3)
    x = torch.arange(-2, 3, dtype=images.dtype)
    k = torch.exp(-0.5 * (x[None] / sigma[:, None]) ** 2)
    k = k / k.sum(-1, keepdim=True)  # [B,5]
    padded = F.pad(out, (2, 2, 2, 2), mode="replicate")
    out = sum(k[:, i, None, None, None] * padded[..., :, i:i + W] for i in range(5))
    out = sum(k[:, i, None, None, None] * out[..., i:i + H, :] for i in range(5))
    # Brightness x0.85-1.15 towards/away from white-balanced grey, then noise sigma up to 0.05.
    out = out * (0.85 + 0.3 * u(B, 1, 1, 1))
    out = out + torch.randn(out.shape, generator=generator) * (0.05 * u(B, 1, 1, 1))
    return out.clamp(0, 1)


def render_dataset(
    world: ProceduralWorld, first_seed: int, n: int, batch: int = 128, cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Renders objects first_seed..first_seed+n-1: images over white uint8 [n,3,H,W], colour [n] and
    shape [n] labels, alpha uint8 [n,1,H,W].

    With `cache_dir` the tensors are stored there (keyed by the world config and seeds) and
    reused; data is never written into the repository.
    """
    from core.config import to_dict

    path = None
    if cache_dir is not None:
        key = hashlib.sha1(json.dumps(to_dict(world.cfg), sort_keys=True).encode()).hexdigest()[:10]
        path = Path(cache_dir) / f"procedural_rgba_{key}_{first_seed}_{n}.pt"
        if path.is_file():
            data = torch.load(path)
            return data["images"], data["color"], data["shape"], data["alpha"]
    from tqdm import tqdm

    images, colors, shapes, alphas = [], [], [], []
    for start in tqdm(range(first_seed, first_seed + n, batch), desc="rendering", disable=not progress):
        b = world.sample(start, min(batch, first_seed + n - start))
        images.append((b.images * 255).round().to(torch.uint8))
        colors.append(b.labels["color"])
        shapes.append(b.labels["shape"])
        alphas.append((b.alpha * 255).round().to(torch.uint8))
    out = torch.cat(images), torch.cat(colors), torch.cat(shapes), torch.cat(alphas)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": out[0], "color": out[1], "shape": out[2], "alpha": out[3]}, path)
    return out


@torch.no_grad()
def evaluate(model: ProceduralClassifier, images: Tensor, color: Tensor, shape: Tensor, batch: int = 256) -> dict:
    """Accuracies {"color": float, "shape": float} on uint8 or float images [N,3,H,W]."""
    model.eval()
    hits_c = hits_s = 0
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        lc, ls = model(x)
        hits_c += int((lc.argmax(-1) == color[i:i + batch]).sum())
        hits_s += int((ls.argmax(-1) == shape[i:i + batch]).sum())
    return {"color": hits_c / len(images), "shape": hits_s / len(images)}


def train_classifier(
    out_path: str | Path = DEFAULT_WEIGHTS,
    steps: int = 4000,
    train_images: int = 16_000,
    test_images: int = 2_000,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Render a training and a held-out set, train, save safetensors at `out_path`, return metrics.

    Training objects are seeds CLASSIFIER_TRAIN_SEEDS[0] + [0, train_images); test objects
    CLASSIFIER_TEST_SEEDS[0] + [0, test_images). One CPU thread; a progress bar shows loss.
    Returns {"color": acc, "shape": acc, "seconds": wall time, ...} on the test seeds over white,
    and "by_background": {name: {"color", "shape"}} over each of JUDGING_BACKGROUNDS.
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    if train_images > CLASSIFIER_TRAIN_SEEDS[1] - CLASSIFIER_TRAIN_SEEDS[0]:
        raise ValueError("train_images exceeds the classifier's training seed range")
    torch.set_num_threads(1)
    t0 = time.time()
    world = ProceduralWorld(ProceduralWorldConfig(resolution=RESOLUTION))
    x_train, c_train, s_train, a_train = render_dataset(world, CLASSIFIER_TRAIN_SEEDS[0], train_images,
                                                        cache_dir=cache_dir, progress=progress)
    x_test, c_test, s_test, a_test = render_dataset(world, CLASSIFIER_TEST_SEEDS[0], test_images, cache_dir=cache_dir,
                                                    progress=progress)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = ProceduralClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    # one-cycle cosine schedule with a short warm-up
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(range(steps), desc="classifier", disable=not progress)
    for step in bar:
        model.train()
        idx = torch.randint(len(x_train), (batch_size,), generator=g)
        x = augment(x_train[idx].float() / 255, g, a_train[idx].float() / 255)
        lc, ls = model(x)
        loss = F.cross_entropy(lc, c_train[idx]) + F.cross_entropy(ls, s_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    x_test, a_test = x_test.float() / 255, a_test.float() / 255
    by_background = {name: evaluate(model, over_background(x_test, a_test, torch.tensor(colour)), c_test, s_test)
                     for name, colour in JUDGING_BACKGROUNDS.items()}
    # the top-level figures are over white (the renders themselves: over white the composite is exact)
    metrics = {**by_background["white"], "by_background": by_background}
    metrics.update(seconds=time.time() - t0, steps=steps, train_images=train_images, test_images=test_images)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    save_file(state, str(out_path), metadata={"colors": json.dumps(COLORS), "shapes": json.dumps(SHAPES),
                                              "resolution": str(RESOLUTION), "metrics": json.dumps(metrics)})
    return metrics


def load_classifier(path: str | Path = DEFAULT_WEIGHTS) -> ProceduralClassifier:
    """The classifier saved at `path`, in eval mode; checks it was trained on today's label lists."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier weights at {path}; train them with `python -m core.data.classifier`")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if json.loads(meta.get("colors", "null")) != COLORS or json.loads(meta.get("shapes", "null")) != SHAPES:
        raise ValueError(f"{path} was trained on other colour/shape lists; retrain it")
    model = ProceduralClassifier()
    model.load_state_dict(load_file(str(path)), strict=False)
    return model.eval()


@functools.lru_cache(maxsize=1)
def _shipped() -> ProceduralClassifier:
    return load_classifier(DEFAULT_WEIGHTS)


@torch.no_grad()
def classify(images: Tensor, model: ProceduralClassifier | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Colour and shape of the object in each image.

    images [B,3,H,W] in [0,1] over white, black, grey or another plain colour. Returns colour_idx [B] into COLORS,
    shape_idx [B] into SHAPES and probs {"color": [B,len(COLORS)], "shape": [B,len(SHAPES)]}.
    """
    model = model or _shipped()
    lc, ls = model.eval()(images.float().cpu())
    pc, ps = lc.softmax(-1), ls.softmax(-1)
    return pc.argmax(-1), ps.argmax(-1), {"color": pc, "shape": ps}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the procedural-world colour/shape classifier.")
    p.add_argument("--out", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--train-images", type=int, default=16_000)
    p.add_argument("--test-images", type=int, default=2_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--cache-dir", default=None, help="keep rendered datasets here between runs")
    a = p.parse_args(argv)
    metrics = train_classifier(a.out, a.steps, a.train_images, a.test_images, a.batch_size, a.lr,
                               cache_dir=a.cache_dir)
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
