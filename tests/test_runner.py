import pytest
import torch

from core.cameras import CameraSamplerConfig, RandomCameraSampler
from core.runner import Batch, Cancelled, RunError, RunFolder, Stage, run_stage
from renderers.base import RenderOutput


class PixelScene(torch.nn.Module):
    """An image per camera batch: the simplest Scene, for exercising the loop."""

    def __init__(self, size=8):
        super().__init__()
        self.image = torch.nn.Parameter(torch.zeros(size, size, 3))
        self.updates = 0

    def render(self, cameras, background=None):
        B = len(cameras)
        rgb = self.image.expand(B, *self.image.shape)
        return RenderOutput(rgb=rgb, alpha=torch.ones_like(rgb[..., :1]), depth=torch.ones_like(rgb[..., :1]))

    def param_groups(self, cfg=None):
        return [{"name": "image", "params": [self.image], "lr": 0.1}]

    def update(self, step, out):
        self.updates += 1

    def export(self, path):
        return path


def make_stage(scene, steps, sampler, nan_steps=(), target=0.7):
    def batches(step):
        return Batch(sampler(step), data={"target": target})

    def loss(out, batch, step, progress):
        noise = torch.randn(()) * 0.01  # global RNG: must be restored on resume
        value = ((out.rgb - batch.data["target"] - noise) ** 2).mean()
        if step in nan_steps:
            value = value * float("nan")
        return value, {"progress": progress}

    opt = torch.optim.Adam(scene.param_groups(), lr=0.1)
    return Stage("fit", scene, steps, batches, loss, opt, stateful={"sampler": sampler}, checkpoint_every=3)


def sampler():
    return RandomCameraSampler(CameraSamplerConfig(batch_size=2, width=8, height=8), seed=1)


def test_loss_goes_down_and_metrics_are_written(tmp_path):
    scene = PixelScene()
    folder = RunFolder(tmp_path)
    run_stage(make_stage(scene, 30, sampler()), folder)
    import json

    lines = [json.loads(l) for l in folder.metrics.read_text().splitlines()]
    assert len(lines) == 30 and lines[-1]["loss"] < 0.05 * lines[0]["loss"]
    assert scene.updates == 30
    assert folder.checkpoint("fit").is_file()


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    torch.manual_seed(0)
    full = PixelScene()
    run_stage(make_stage(full, 10, sampler()), RunFolder(tmp_path / "a"))

    class StopAt:
        def __init__(self, n):
            self.n, self.calls = n, 0

        def on_step(self, *a):
            pass

        def on_preview(self, *a):
            pass

        def should_stop(self):
            self.calls += 1
            return self.calls > self.n

    torch.manual_seed(0)
    part = PixelScene()
    with pytest.raises(Cancelled):
        run_stage(make_stage(part, 10, sampler()), RunFolder(tmp_path / "b"), callbacks=StopAt(5))
    torch.manual_seed(123)  # a new process: different global RNG until the checkpoint restores it
    resumed = PixelScene()
    done = run_stage(make_stage(resumed, 10, sampler()), RunFolder(tmp_path / "b"))
    assert done == 5
    assert torch.equal(resumed.image, full.image)


def test_nan_steps_are_skipped_then_stop_the_run(tmp_path):
    scene = PixelScene()
    folder = RunFolder(tmp_path)
    run_stage(make_stage(scene, 8, sampler(), nan_steps={4}), folder)
    assert "skipped" in folder.metrics.read_text()
    assert scene.updates == 7 and torch.isfinite(scene.image).all()
    scene = PixelScene()
    with pytest.raises(RunError, match=r"stage 'fit' step 9: 6 steps in a row"):
        run_stage(make_stage(scene, 20, sampler(), nan_steps=set(range(4, 20))), RunFolder(tmp_path / "n"))
    ckpt = torch.load(tmp_path / "n" / "checkpoints" / "fit.pt", weights_only=False)
    assert ckpt["step"] == 3 and torch.isfinite(ckpt["scene"]["image"]).all()
