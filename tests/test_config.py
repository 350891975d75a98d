from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from core.config import ConfigError, apply_overrides, from_dict, load_config, save_config, to_dict


@dataclass
class Inner:
    sh_degree: int = 3
    kind: Literal["gaussian", "nerf"] = "gaussian"
    lr: float = 1e-3


@dataclass
class Outer:
    steps: int = 10
    name: str = "x"
    scale: tuple[float, float] = (0.0, 1.0)
    prior: Optional[str] = None
    renderer: Inner = field(default_factory=Inner)


def test_preset_and_overrides(tmp_path):
    (tmp_path / "p.yaml").write_text("steps: 3\nrenderer:\n  lr: 0.5\n")
    cfg = load_config(Outer, tmp_path / "p.yaml", ["renderer.sh_degree=0", "steps=500", "scale=[1, 2]"])
    assert cfg.steps == 500 and cfg.renderer.sh_degree == 0 and cfg.renderer.lr == 0.5
    assert cfg.scale == (1.0, 2.0)
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Outer, tmp_path / "out.yaml") == cfg


def test_unknown_key_names_key_and_allowed():
    with pytest.raises(ConfigError, match=r"renderer\.sh_degre'.*allowed keys under renderer: sh_degree, kind, lr"):
        from_dict(Outer, {"renderer": {"sh_degre": 1}})
    with pytest.raises(ConfigError, match="allowed keys: steps, name, scale, prior, renderer"):
        load_config(Outer, None, ["stpes=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps=abc", "steps: expected an integer"),
        ("steps=1.5", "steps: expected an integer"),
        ("renderer.kind=mesh", r"renderer.kind: 'mesh' is not allowed; expected one of 'gaussian', 'nerf'"),
        ("scale=[1]", "scale: expected 2 values"),
        ("renderer=3", "renderer: expected a mapping with keys sh_degree, kind, lr"),
        ("steps.x=1", "steps: expected an integer"),
        ("steps", "must look like key.subkey=value"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, [override])


def test_optional_and_roundtrip():
    cfg = load_config(Outer, None, ["prior=some/folder"])
    assert cfg.prior == "some/folder"
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


def test_missing_preset_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_list_items_are_overridden_by_index():
    data = {"stages": [{"steps": 1}, {"steps": 2}]}
    assert apply_overrides(data, ["stages.1.steps=5"]) == {"stages": [{"steps": 1}, {"steps": 5}]}
    with pytest.raises(ConfigError, match="'2' must index the list"):
        apply_overrides(data, ["stages.2.steps=5"])
    with pytest.raises(ConfigError, match="'x' must index the list"):
        apply_overrides(data, ["stages.x=5"])


@dataclass
class WithUnion:
    size: int | Literal["auto"] = "auto"
    inner: Inner | float = 0.0


def test_union_error_says_why_each_member_rejected_the_value():
    with pytest.raises(ConfigError) as e:
        from_dict(WithUnion, {"size": "fast"})
    message = str(e.value)
    # one reason per member of the union, in the union's order
    assert "size: expected" in message
    assert "as int: expected an integer, got 'fast'" in message
    assert "as one of 'auto': 'fast' is not allowed" in message
    with pytest.raises(ConfigError) as e:
        from_dict(WithUnion, {"inner": {"nope": 1}})
    assert "unknown config key 'inner.nope'" in str(e.value) and "as float: expected a number" in str(e.value)


def test_config_error_is_a_user_error():
    from core.errors import UserError

    with pytest.raises(UserError):
        from_dict(WithUnion, {"size": 1.5})
