"""`scorelift relight` end to end, its inputs and outputs, environment map files, render --passes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from app.cli import main
from core.data.views import procedural_object, write_procedural_views
from core.errors import UserError
from renderers.shading.envmap import direction_to_equirect_uv, read_radiance_hdr
from renderers.shading.envmap_files import exr_supported, read_envmap, write_envmap

TINY = ["stages.0.steps=3", "stages.1.steps=2", "stages.2.steps=2", "stages.3.steps=2", "turntable_frames=2",
        "turntable_size=16", "glb_resolution=16", "glb_texture_size=32", "preview_every=2", "checkpoint_every=2",
        "renderer.gaussian.num_points=200", "renderer.pbr.env_height=8"]
PASSES = ["rgb", "albedo", "roughness", "metallic", "normal", "progress"]


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    write_procedural_views(root, procedural_object("cube", "red", "shiny"), n_views=6, size=24)
    meta = json.loads((root / "transforms_train.json").read_text())
    test = dict(meta, frames=meta["frames"][:2])
    (root / "transforms_test.json").write_text(json.dumps(test))
    return root


@pytest.fixture(scope="module")
def run(views, tmp_path_factory):
    out = tmp_path_factory.mktemp("relight") / "run"
    assert main(["relight", "--data", str(views), "--out", str(out), *TINY]) == 0
    return out


def test_relight_run_writes_every_output_and_resumes(run, views):
    for name in ("config.yaml", "metrics.jsonl", "model_pbr.ply", "model_radiance.ply", "environment.hdr",
                 "environment.npy", "model.glb", "turntable/turntable.mp4", "turntable/frame_0001.png"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["radiance"] * 3 + ["specular"] * 2 + ["diffuse"] * 2 + ["joint"] * 2
    assert "progress_push" in records[-1] and "white_light" in records[-1] and "depth_normal" in records[0]
    assert any(p.name.startswith("joint_") for p in (run / "previews").iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "diffuse.pt", "joint.pt", "radiance.pt", "specular.pt"]
    assert (run / "environment.hdr").read_bytes().startswith(b"#?")
    env = np.load(run / "environment.npy")
    assert env.shape == (8, 16, 3) and env.dtype == np.float32
    # The .hdr is real RGBE: an independent reader decodes the same map to RGBE precision.
    np.testing.assert_allclose(read_radiance_hdr(run / "environment.hdr"), env, rtol=1 / 64, atol=1e-6)
    import trimesh

    glb = trimesh.load(str(run / "model.glb"))
    material = next(iter(glb.geometry.values())).visual.material
    assert material.baseColorTexture is not None and material.metallicRoughnessTexture is not None
    # --resume of a finished run repeats no step.
    assert main(["relight", "--data", str(views), "--out", str(run), "--resume", *TINY]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(records)


def test_render_passes_writes_every_file(run, views, tmp_path):
    out = tmp_path / "passes"
    assert main(["render", str(run), "--cameras", str(views / "transforms_test.json"), "--passes", ",".join(PASSES),
                 "--out", str(out)]) == 0
    import imageio.v3 as iio

    for name in PASSES:
        files = sorted(p.name for p in (out / name).iterdir())
        assert files == ["r_000.png", "r_001.png"], name
        image = iio.imread(out / name / "r_000.png")
        assert image.shape == (24, 24, 4)
    alpha = iio.imread(out / "rgb" / "r_000.png")[..., 3]
    assert alpha.max() > 200 and alpha.min() < 50  # coverage: the object over an empty background
    grey = iio.imread(out / "roughness" / "r_000.png")
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    again = tmp_path / "again"
    assert main(["render", str(run), "--cameras", str(views / "transforms_test.json"), "--passes", "rgb",
                 "--envmap", str(run / "environment.npy"), "--out", str(again)]) == 0
    np.testing.assert_array_equal(iio.imread(again / "rgb" / "r_000.png"), iio.imread(out / "rgb" / "r_000.png"))
    brighter = tmp_path / "bright.npy"
    np.save(brighter, np.load(run / "environment.npy") * 4)
    lit = tmp_path / "lit"
    assert main(["render", str(run), "--cameras", str(views / "transforms_test.json"), "--passes", "rgb",
                 "--envmap", str(brighter), "--out", str(lit)]) == 0
    assert iio.imread(lit / "rgb" / "r_000.png")[..., :3].mean() > iio.imread(out / "rgb" / "r_000.png")[..., :3].mean()
    plain = tmp_path / "plain"  # without --passes: composited rgb PNGs directly in DIR
    assert main(["render", str(run), "--cameras", str(views / "transforms_test.json"), "--out", str(plain)]) == 0
    assert sorted(p.name for p in plain.iterdir()) == ["r_000.png", "r_001.png"]


def test_render_rejects_bad_envmaps_and_passes(run, tmp_path, capsys):
    np.save(tmp_path / "flat.npy", np.ones((8, 16), np.float32))
    (tmp_path / "junk.hdr").write_bytes(b"not an image")
    for extra in (["--envmap", str(tmp_path / "flat.npy")], ["--envmap", str(tmp_path / "junk.hdr")],
                  ["--envmap", str(tmp_path / "missing.hdr")], ["--passes", "rgb,shininess"]):
        assert main(["render", str(run), "--orbit", "1", "--width", "8", "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("scorelift render: error:") and "\n" not in err


def blender_folder(tmp_path, n=3, size=16):
    root = tmp_path / "data"
    write_procedural_views(root, procedural_object("sphere", "blue"), n_views=n, size=size)
    return root


@pytest.mark.parametrize("breakage", ["missing image", "wrong size", "empty split", "empty test split",
                                      "no focal", "no folder"])
def test_bad_blender_folders_exit_2_and_leave_no_run(tmp_path, capsys, breakage):
    root = blender_folder(tmp_path)
    tf = root / "transforms_train.json"
    meta = json.loads(tf.read_text())
    if breakage == "missing image":
        (root / "train" / "r_001.png").unlink()
    elif breakage == "wrong size":
        import imageio.v3 as iio

        iio.imwrite(root / "train" / "r_002.png", np.zeros((20, 16, 4), np.uint8))
    elif breakage == "empty split":
        tf.write_text(json.dumps(dict(meta, frames=[])))
    elif breakage == "empty test split":
        (root / "transforms_test.json").write_text(json.dumps(dict(meta, frames=[])))
    elif breakage == "no focal":
        meta.pop("camera_angle_x"), meta.pop("fl_x")
        tf.write_text(json.dumps(meta))
    else:
        root = tmp_path / "nowhere"
    out = tmp_path / "run"
    assert main(["relight", "--data", str(root), "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scorelift relight: error:") and "\n" not in err
    assert not out.exists()


def test_file_path_with_extension_and_camera_angle_only(tmp_path):
    from core.data.nerf_synthetic import check_blender_folder

    root = blender_folder(tmp_path)
    tf = root / "transforms_train.json"
    meta = json.loads(tf.read_text())
    for frame in meta["frames"]:
        frame["file_path"] += ".png"
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
        meta.pop(key)
    tf.write_text(json.dumps(meta))
    assert check_blender_folder(root) == ["train"]


def test_relight_from_a_generated_run(tmp_path):
    from renderers.gaussian import GaussianConfig, GaussianScene

    source = tmp_path / "gen"
    source.mkdir()
    GaussianScene(GaussianConfig(num_points=300, init_radius=0.4, init_opacity=0.5)).export(source / "model.ply")
    out = tmp_path / "run"
    assert main(["relight", "--from", str(source), "--out", str(out), "--views", "8", "--size", "16",
                 "export_glb=false", *TINY]) == 0
    assert len(list((out / "views" / "train").iterdir())) == 8
    assert (out / "views" / "transforms_test.json").is_file() and (out / "model_pbr.ply").is_file()
    assert main(["relight", "--from", str(tmp_path / "missing"), "--out", str(tmp_path / "run2"), *TINY]) == 2
    assert not (tmp_path / "run2").exists()


# --- environment map files ---------------------------------------------------------------------


def test_envmap_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    env = (rng.random((8, 16, 3)) * np.array([0.02, 1.0, 40.0])).astype(np.float32)
    write_envmap(tmp_path / "e.npy", env)
    np.testing.assert_array_equal(read_envmap(tmp_path / "e.npy"), env)
    write_envmap(tmp_path / "e.hdr", env)
    tolerance = env.max(-1, keepdims=True) / 128  # RGBE: 8-bit mantissas under one shared exponent
    assert (np.abs(read_envmap(tmp_path / "e.hdr") - env) <= tolerance).all()
    assert (np.abs(read_radiance_hdr(tmp_path / "e.hdr") - env) <= tolerance).all()  # an independent reader
    # Channels keep their order (OpenCV is BGR inside).
    assert read_envmap(tmp_path / "e.hdr")[..., 2].mean() > 10 > read_envmap(tmp_path / "e.hdr")[..., 0].mean()
    if exr_supported():
        write_envmap(tmp_path / "e.exr", env)
        np.testing.assert_allclose(read_envmap(tmp_path / "e.exr"), env, rtol=1e-3)
    else:
        with pytest.raises(UserError, match="OpenEXR"):
            write_envmap(tmp_path / "e.exr", env)
    for bad in (np.ones((8, 16), np.float32), np.ones((8, 16, 2), np.float32), -np.ones((8, 16, 3), np.float32)):
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(UserError):
            read_envmap(tmp_path / "bad.npy")
    with pytest.raises(UserError, match="unknown"):
        read_envmap(tmp_path / "e.png")


def test_equirect_mapping_is_blenders():
    d = torch.nn.functional.normalize(torch.randn(500, 3), dim=-1)
    uv = direction_to_equirect_uv(d).numpy()
    x, y, z = d.numpy().T.astype(np.float64)
    u = (0.5 - np.arctan2(y, x) / (2 * math.pi)) % 1.0
    v = np.arccos(z) / math.pi
    np.testing.assert_allclose(uv[:, 0] % 1.0, u, atol=1e-5)
    np.testing.assert_allclose(uv[:, 1], v, atol=1e-5)


def test_relight_scene_generator_writes_a_blender_folder_with_ground_truth(tmp_path):
    from core.data.nerf_synthetic import check_blender_folder, load_dataset
    from core.data.procedural import COLOR_RGB
    from core.data.relight_scenes import SCENES, write_relight_scene

    root = write_relight_scene(tmp_path / "scene", SCENES["gold_torus"], n_train=3, n_test=2, size=16, env_height=8)
    assert check_blender_folder(root) == ["train", "test"]
    for split in ("test_B", "test_C"):
        assert len(load_dataset(root, split)) == 2
    for name in ("albedo", "normal", "roughness", "metallic"):
        assert sorted(p.name for p in (root / "gt" / name).iterdir()) == ["r_000.png", "r_001.png"]
    gt = np.load(root / "gt.npz")
    inside = gt["alpha"][..., 0] > 0.999
    albedo = gt["albedo"][inside]  # linear: the sRGB word colour decoded (IEC 61966-2-1)
    expected = ((np.array(COLOR_RGB["yellow"]) + 0.055) / 1.055) ** 2.4
    np.testing.assert_allclose(albedo, np.broadcast_to(expected, albedo.shape), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(gt["normal"][inside], axis=-1), 1.0, atol=1e-4)
    assert (gt["metallic"][inside] == 1).all() and np.allclose(gt["roughness"][inside], 0.3)
    # Relighting changes the picture: B and C differ from A on the object.
    assert np.abs(gt["rgb_B"][inside] - gt["rgb_A"][inside]).mean() > 0.05
    assert read_envmap(root / "env_B.hdr").shape == (8, 16, 3)


def test_sun_visibility_of_a_point_under_a_roof():
    from core.data.relight_scenes import sun_visibility

    # A unit square roof at z = 1 (two triangles) over points at z = 0.
    vertices = torch.tensor([[0.0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    points = torch.tensor([[0.5, 0.5, 0.0], [1.5, 0.5, 0.0], [0.2, 0.7, 0.0], [0.5, 0.5, 2.0]])
    normals = torch.tensor([0.0, 0.0, 1.0]).expand(4, 3)
    up = sun_visibility(vertices, faces, points, normals, (0.0, 0.0, 1.0))[:, 0]
    assert up.tolist() == [0.0, 1.0, 0.0, 1.0]  # under the roof: shadowed; beside or above it: lit
    # Sun at 45 degrees toward -X: a ray from (x, y, 0) meets z = 1 at x - 1, under the roof iff 0 <= x - 1 <= 1.
    slanted = sun_visibility(vertices, faces, points, normals, (-1.0, 0.0, 1.0))[:, 0]
    assert slanted.tolist() == [1.0, 0.0, 1.0, 1.0]


def test_progressive_preset_is_the_config_default():
    """`RelightConfig()` (the code's defaults, also what `_default_stages` builds) and
    configs/relight/progressive.yaml describe the same run, so neither drifts alone."""
    from core.config import load_config, resolve_preset
    from core.pipelines.relight import RelightConfig

    assert load_config(RelightConfig, resolve_preset("relight/progressive"), []) == RelightConfig()
