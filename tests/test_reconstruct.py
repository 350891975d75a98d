import json

import numpy as np
import torch

from app.cli import main
from core.cameras import orbit_cameras, save_nerf_synthetic
from core.io import write_png
from renderers.gaussian.scene import GaussianConfig, GaussianScene


def write_target_views(root, n=8, size=32):
    """A ground-truth splat (two coloured blobs) rendered into a NeRF-synthetic folder."""
    gt = GaussianScene(GaussianConfig(num_points=2, init_opacity=0.9, render_normals=False))
    with torch.no_grad():
        gt.params["means"].copy_(torch.tensor([[0.0, 0.0, 0.25], [0.0, 0.0, -0.25]]))
        gt.params["scales"].fill_(np.log(0.2))
        gt.params["sh0"].copy_(torch.tensor([[[1.5, -1.5, -1.5]], [[-1.5, -1.5, 1.5]]]))
        cams = orbit_cameras(n, elevation_deg=20, radius=2.5, fov_y_deg=40, width=size, height=size)
        out = gt.render(cams, torch.ones(3))
    names = [f"./train/r_{i}" for i in range(n)]
    for i, name in enumerate(names):
        rgba = torch.cat([out.rgb[i], out.alpha[i]], dim=-1)
        write_png(root / f"{name}.png", rgba)
    save_nerf_synthetic(root / "transforms_train.json", cams, names)
    return out


def test_reconstruct_cli_fits_views_and_writes_assets(tmp_path, capsys):
    data = tmp_path / "data"
    write_target_views(data)
    out = tmp_path / "run"
    code = main(["reconstruct", str(data), "--out", str(out), "steps=60", "width=32", "height=32",
                 "renderer.num_points=500", "turntable_frames=2", "preview_every=30", "checkpoint_every=30"])
    assert code == 0
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    first = np.mean([l["l1"] for l in lines[:5]])
    last = np.mean([l["l1"] for l in lines[-5:]])
    assert last < 0.5 * first
    for name in ("model.ply", "config.yaml", "turntable/turntable.mp4", "turntable/frame_0000.png"):
        assert (out / name).is_file(), name
    assert "model: " in capsys.readouterr().out
    # The fitted splat renders the red blob above the blue one from the front.
    scene = GaussianScene.load(out / "model.ply")
    with torch.no_grad():
        img = scene.render(orbit_cameras(1, 20, 2.5, 40, 32, 32), torch.ones(3)).rgb[0]
    top, bottom = img[8:14, 12:20].mean((0, 1)), img[18:24, 12:20].mean((0, 1))
    assert top[0] > top[2] + 0.2 and bottom[2] > bottom[0] + 0.2


def test_reconstruct_refuses_to_overwrite_and_resumes(tmp_path, capsys):
    data = tmp_path / "data"
    write_target_views(data, n=4, size=16)
    out = tmp_path / "run"
    args = ["reconstruct", str(data), "--out", str(out), "steps=4", "renderer.num_points=50", "turntable_frames=0",
            "width=16", "height=16", "checkpoint_every=2"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*args[:4], "steps=6", *args[5:], "--resume"]) == 0
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_reconstruct_bad_input_is_one_line(tmp_path, capsys):
    assert main(["reconstruct", str(tmp_path / "nope")]) == 2
    assert "no transforms_train.json" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    assert main(["reconstruct", str(tmp_path / "d"), "stepz=3"]) == 2
    assert "unknown config key 'stepz'" in capsys.readouterr().err
