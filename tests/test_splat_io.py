"""Splat files: the standard 3DGS .ply layout and antimatter15 .splat, and their errors."""

import struct

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from renderers.gaussian.ply import (
    SH_C0, GaussianData, SplatFormatError, load_gaussians, load_ply, load_splat, ply_property_names, save_ply,
    save_splat,
)


def random_data(n: int, sh_degree: int, seed: int = 0) -> GaussianData:
    g = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    return GaussianData(
        means=torch.randn(n, 3, generator=g), quats=torch.randn(n, 4, generator=g),
        log_scales=torch.randn(n, 3, generator=g) - 3, logit_opacities=torch.randn(n, generator=g),
        sh0=torch.randn(n, 1, 3, generator=g), shN=torch.randn(n, k - 1, 3, generator=g),
    )


@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_ply_round_trip_is_exact(tmp_path, sh_degree):
    data = random_data(17, sh_degree)
    path = save_ply(tmp_path / "g.ply", data)
    back = load_ply(path)
    assert back.sh_degree == sh_degree
    for name in ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN"):
        assert torch.equal(getattr(back, name), getattr(data, name)), name


def test_ply_layout_is_the_3dgs_one(tmp_path):
    """Binary little-endian, properties in 3DGS order, f_rest channel-major (all R, then G, then B)."""
    data = random_data(5, sh_degree=2)
    path = save_ply(tmp_path / "g.ply", data)
    header = path.read_bytes()[:2000]
    assert b"format binary_little_endian 1.0" in header
    vertex = PlyData.read(str(path))["vertex"]
    assert [p.name for p in vertex.properties] == ply_property_names(2)
    assert all(p.val_dtype in ("f4", "float32", "float") for p in vertex.properties)
    assert len(ply_property_names(2)) == 3 + 3 + 3 + 24 + 1 + 3 + 4
    k1 = data.shN.shape[1]  # 8 higher-order coefficients
    for channel in range(3):
        for j in range(k1):
            np.testing.assert_array_equal(vertex[f"f_rest_{channel * k1 + j}"], data.shN[:, j, channel].numpy())
    np.testing.assert_array_equal(vertex["rot_0"], data.quats[:, 0].numpy())  # w first
    np.testing.assert_array_equal(vertex["nx"], np.zeros(5, np.float32))


def test_loads_a_hand_written_standard_ply(tmp_path):
    """A file another 3DGS tool could write: ascii, extra properties, its own property order."""
    n, k1 = 3, 3  # SH degree 1
    names = ["x", "y", "z", "red", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * k1)] + ["opacity", "rot_0", "rot_1", "rot_2", "rot_3"]
    names += ["scale_0", "scale_1", "scale_2"]
    rows = np.zeros(n, dtype=[(name, "u1" if name == "red" else "f4") for name in names])
    rows["x"], rows["y"], rows["z"] = [0.1, 0.2, 0.3], [1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]
    rows["f_dc_0"], rows["f_dc_1"], rows["f_dc_2"] = 0.5, -0.5, 1.5
    for i in range(3 * k1):
        rows[f"f_rest_{i}"] = 10.0 * i
    rows["opacity"] = [0.0, 1.0, -1.0]
    rows["rot_0"], rows["rot_3"] = 1.0, 0.25
    rows["scale_0"], rows["scale_1"], rows["scale_2"] = -2.0, -3.0, -4.0
    PlyData([PlyElement.describe(rows, "vertex")], text=True).write(str(tmp_path / "hand.ply"))

    data = load_ply(tmp_path / "hand.ply")
    assert data.sh_degree == 1 and len(data) == 3
    torch.testing.assert_close(data.means[1], torch.tensor([0.2, 2.0, -2.0]))
    torch.testing.assert_close(data.sh0[0, 0], torch.tensor([0.5, -0.5, 1.5]))
    # f_rest_i = 10 i, channel-major: coefficient j of channel c is f_rest_{c*3+j}.
    torch.testing.assert_close(data.shN[0], torch.tensor([[0.0, 30.0, 60.0], [10.0, 40.0, 70.0], [20.0, 50.0, 80.0]]))
    torch.testing.assert_close(data.logit_opacities, torch.tensor([0.0, 1.0, -1.0]))
    torch.testing.assert_close(data.quats[0], torch.tensor([1.0, 0.0, 0.0, 0.25]))
    torch.testing.assert_close(data.log_scales[2], torch.tensor([-2.0, -3.0, -4.0]))


def test_splat_round_trip_and_viewer_order(tmp_path):
    data = random_data(40, sh_degree=1)
    data.sh0 = ((torch.rand(40, 1, 3) - 0.5) / SH_C0)  # colours inside [0,1], as u8 can hold
    path = save_splat(tmp_path / "g.splat", data)
    assert path.stat().st_size == 32 * 40
    back = load_splat(path)
    assert back.sh_degree == 0 and len(back) == 40
    # The file is sorted; match rows back by position (positions are stored exactly).
    order = [int((data.means == m).all(-1).nonzero()[0, 0]) for m in back.means]
    assert sorted(order) == list(range(40))
    key = data.log_scales.sum(-1).exp() * torch.sigmoid(data.logit_opacities)
    assert torch.all(key[order][:-1] >= key[order][1:]), "not sorted by descending scale volume * opacity"
    torch.testing.assert_close(back.log_scales, data.log_scales[order], rtol=0, atol=1e-5)
    rgb = lambda d: 0.5 + SH_C0 * d.sh0[:, 0]  # noqa: E731
    torch.testing.assert_close(rgb(back), rgb(data)[order], rtol=0, atol=0.5 / 255 + 1e-6)
    torch.testing.assert_close(torch.sigmoid(back.logit_opacities), torch.sigmoid(data.logit_opacities[order]),
                               rtol=0, atol=0.5 / 255 + 1e-5)
    q_in = torch.nn.functional.normalize(data.quats[order], dim=-1)
    q_out = torch.nn.functional.normalize(back.quats, dim=-1)
    assert (q_in * q_out).sum(-1).abs().min() > 0.999


def test_splat_byte_layout(tmp_path):
    data = GaussianData(
        means=torch.tensor([[1.0, 2.0, 3.0]]), quats=torch.tensor([[2.0, 0.0, 0.0, 0.0]]),
        log_scales=torch.log(torch.tensor([[0.5, 0.25, 0.125]])), logit_opacities=torch.tensor([0.0]),
        sh0=torch.zeros(1, 1, 3), shN=torch.zeros(1, 0, 3),
    )
    raw = save_splat(tmp_path / "one.splat", data).read_bytes()
    assert struct.unpack("<3f", raw[:12]) == (1.0, 2.0, 3.0)
    assert struct.unpack("<3f", raw[12:24]) == pytest.approx((0.5, 0.25, 0.125))
    assert tuple(raw[24:28]) == (128, 128, 128, 128)  # grey (f_dc 0), opacity sigmoid(0) = 0.5
    assert tuple(raw[28:32]) == (255, 128, 128, 128)  # normalised w = 1 -> 256, clipped


def test_gaussian_data_rejects_bad_shapes():
    data = random_data(4, 0)
    with pytest.raises(ValueError, match="shN"):
        GaussianData(data.means, data.quats, data.log_scales, data.logit_opacities, data.sh0, torch.zeros(4, 2, 3))
    with pytest.raises(ValueError, match="quats"):
        GaussianData(data.means, data.quats[:, :3], data.log_scales, data.logit_opacities, data.sh0, data.shN)


def test_truncated_ply_is_a_clear_error(tmp_path):
    raw = save_ply(tmp_path / "g.ply", random_data(20, 1)).read_bytes()
    (tmp_path / "cut.ply").write_bytes(raw[: len(raw) - 50])
    with pytest.raises(SplatFormatError, match="truncated"):
        load_ply(tmp_path / "cut.ply")


def test_mesh_ply_is_not_a_splat(tmp_path):
    import trimesh

    trimesh.creation.box().export(tmp_path / "box.ply")
    with pytest.raises(SplatFormatError, match="not a Gaussian splat.*expected the 3DGS layout"):
        load_gaussians(tmp_path / "box.ply")


def test_non_ply_and_bad_splat_files(tmp_path):
    (tmp_path / "notes.ply").write_text("hello, not a ply\n")
    with pytest.raises(SplatFormatError, match="not a .ply file"):
        load_gaussians(tmp_path / "notes.ply")
    (tmp_path / "odd.splat").write_bytes(b"\0" * 33)
    with pytest.raises(SplatFormatError, match="multiple of 32"):
        load_gaussians(tmp_path / "odd.splat")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_gaussians(tmp_path / "missing.ply")
    assert issubclass(SplatFormatError, ValueError)


def test_wrong_number_of_sh_fields(tmp_path):
    names = ply_property_names(0) + ["f_rest_0", "f_rest_1", "f_rest_2", "f_rest_3"]
    rows = np.zeros(2, dtype=[(name, "f4") for name in names])
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "bad.ply"))
    with pytest.raises(SplatFormatError, match="4 f_rest_"):
        load_ply(tmp_path / "bad.ply")
    empty = np.zeros(0, dtype=[(name, "f4") for name in ply_property_names(0)])
    PlyData([PlyElement.describe(empty, "vertex")]).write(str(tmp_path / "empty.ply"))
    with pytest.raises(SplatFormatError, match="no Gaussians"):
        load_ply(tmp_path / "empty.ply")
