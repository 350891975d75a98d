"""`scorelift render` in-process, frames/video writing, and user errors (exit 2, one line)."""

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from app.cli import build_parser, main
from app.cli_assets import frame_names
from core.cameras import orbit_cameras, save_nerf_synthetic
from core.export.video import pad_to_even, turntable, write_video
from renderers.gaussian.scene import GaussianConfig, GaussianScene


@pytest.fixture
def project_ply(tmp_path):
    scene = GaussianScene(GaussianConfig(num_points=300, init_radius=0.5, init_opacity=0.6, sh_degree=1))
    return scene.export(tmp_path / "scene.ply")


@pytest.fixture
def hand_written_ply(tmp_path):
    """Three opaque red blobs near the origin in the standard 3DGS layout (SH degree 0), by hand."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    rows = np.zeros(3, dtype=[(name, "<f4") for name in names])
    rows["x"] = [0.0, 0.3, -0.3]
    rows["f_dc_0"] = (1.0 - 0.5) / 0.28209479177387814  # red
    rows["f_dc_1"] = rows["f_dc_2"] = (0.0 - 0.5) / 0.28209479177387814
    rows["opacity"] = 5.0
    rows["scale_0"] = rows["scale_1"] = rows["scale_2"] = np.log(0.2)
    rows["rot_0"] = 1.0
    path = tmp_path / "hand.ply"
    PlyData([PlyElement.describe(rows, "vertex")], byte_order="<").write(str(path))
    return path


def read_video(path):
    # (list(reader) would trust the reader's length, which is inf for ffmpeg streams.)
    return [frame for frame in imageio.get_reader(path)]


def assert_object_visible(png, background=(255, 255, 255)):
    image = imageio.imread(png)
    assert image.ndim == 3 and image.shape[2] >= 3
    h, w = image.shape[:2]
    centre = image[h // 4: 3 * h // 4, w // 4: 3 * w // 4, :3].astype(int)
    differs = np.abs(centre - np.array(background)).sum(-1) > 30
    assert differs.mean() > 0.1, f"{png.name}: centre looks like empty background"
    return image


def test_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "render" in out
    assert set(build_parser()._subparsers._group_actions[0].choices) >= {"render"}


def test_render_orbit_of_a_project_ply(project_ply, tmp_path, capsys):
    out_dir = tmp_path / "orbit"
    code = main(["render", str(project_ply), "--orbit", "3", "--out", str(out_dir),
                 "--width", "40", "--height", "30", "--background", "white"])
    assert code == 0, capsys.readouterr().err
    pngs = sorted(out_dir.glob("frame_*.png"))
    assert [p.name for p in pngs] == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    images = [assert_object_visible(png) for png in pngs]
    assert all(image.shape[:2] == (30, 40) for image in images)
    frames = read_video(out_dir / "turntable.mp4")
    assert len(frames) == 3 and frames[0].shape[:2] == (30, 40)
    for frame, image in zip(frames, images):  # the video shows the PNG frames (up to H.264 loss)
        assert np.abs(frame.astype(int) - image[..., :3].astype(int)).mean() < 6
    assert "wrote 3 frames" in capsys.readouterr().out


def test_render_a_splat_file(tmp_path):
    scene = GaussianScene(GaussianConfig(num_points=200, init_opacity=0.8))
    path = scene.export(tmp_path / "scene.splat")
    assert main(["render", str(path), "--orbit", "1", "--out", str(tmp_path / "o"), "--width", "24",
                 "--background", "#000000"]) == 0
    assert_object_visible(tmp_path / "o" / "frame_0000.png", background=(0, 0, 0))


def test_render_cameras_file_of_a_hand_written_ply(hand_written_ply, tmp_path):
    cams = orbit_cameras(2, elevation_deg=10, radius=2.5, width=64, height=64)
    save_nerf_synthetic(tmp_path / "transforms.json", cams, ["./test/r_0", "./test/r_1.png"])
    out_dir = tmp_path / "views"
    code = main(["render", str(hand_written_ply), "--cameras", str(tmp_path / "transforms.json"),
                 "--out", str(out_dir), "--width", "24", "--height", "20", "--background", "0,0,1"])
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["r_0.png", "r_1.png"]
    image = assert_object_visible(out_dir / "r_0.png", background=(0, 0, 255))
    assert image.shape[:2] == (20, 24)
    centre = image[10, 12, :3].astype(int)
    assert centre[0] > 200 and centre[1] < 60  # red blob in the middle


@pytest.mark.parametrize("make_input, args, message", [
    (lambda d: d / "missing.ply", [], "not found"),
    (lambda d: _points_ply(d), [], "not a Gaussian splat"),
    (lambda d: _text_file(d), [], "not a .ply file"),
    (lambda d: _project(d), ["--width", "0"], "not an image size"),
    (lambda d: _project(d), ["--height", "big"], "not a whole number"),
    (lambda d: _project(d), ["--fov", "200"], "--fov"),
    (lambda d: _project(d), ["--cameras", "nowhere.json"], "not found"),
    (lambda d: _project(d), ["--background", "mauve"], "not a colour"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, make_input, args, message):
    scene = make_input(tmp_path)
    code = main(["render", str(scene), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "turntable.mp4").exists()


def _points_ply(d):
    """A .ply that is neither splats nor a mesh (a mesh .ply renders, see tests/test_export_cli.py)."""
    import trimesh

    trimesh.PointCloud(np.random.default_rng(0).random((10, 3))).export(d / "points.ply")
    return d / "points.ply"


def _text_file(d):
    (d / "readme.ply").write_text("not a splat\n")
    return d / "readme.ply"


def _project(d):
    return GaussianScene(GaussianConfig(num_points=20)).export(d / "ok.ply")


def test_frame_names_are_unique_basenames():
    assert frame_names(["./test/r_0", "./test/r_1.png"]) == ["r_0.png", "r_1.png"]
    assert frame_names(["train/r_0", "test/r_0"]) == ["0000_r_0.png", "0001_r_0.png"]


def test_video_pads_odd_sizes_and_rejects_mixed_sizes(tmp_path):
    frames = [np.full((17, 21, 3), 40 * i, np.uint8) for i in range(4)]
    path = write_video(tmp_path / "v.mp4", frames, fps=10)
    decoded = read_video(path)
    assert len(decoded) == 4 and decoded[0].shape == (18, 22, 3)
    assert abs(int(decoded[2][8, 10, 0]) - 80) < 8  # H.264 keeps flat colours close
    assert pad_to_even(frames[0]).shape == (18, 22, 3)
    with pytest.raises(ValueError, match="one size"):
        write_video(tmp_path / "bad.mp4", [frames[0], np.zeros((8, 8, 3), np.uint8)])
    assert not (tmp_path / "bad.mp4").exists() and not list(tmp_path.glob(".bad*"))


def test_turntable_renders_any_scene_in_chunks(tmp_path):
    class CountingScene(GaussianScene):
        calls: list = []

        def render(self, cameras, background=None):
            self.calls.append(len(cameras))
            return super().render(cameras, background)

    scene = CountingScene(GaussianConfig(num_points=50, init_opacity=0.5))
    result = turntable(scene, orbit_cameras(5, width=16, height=16), tmp_path, chunk=2,
                       background=torch.zeros(3), progress=False)
    assert scene.calls == [2, 2, 1]
    assert len(result.frames) == 5 and result.video.is_file()
    # Frame k is camera k's render (in chunks, in order), written as 8-bit.
    with torch.no_grad():
        renders = GaussianScene.render(scene, orbit_cameras(5, width=16, height=16), torch.zeros(3)).rgb
    for path, render in zip(result.frames, renders):
        assert np.abs(imageio.imread(path)[..., :3] / 255.0 - render.numpy()).max() <= 0.5 / 255 + 1e-6
