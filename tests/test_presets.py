"""Every shipped preset runs two steps on CPU (with a tiny prior where it needs one)."""

import pytest

from app.cli import main
from core.config import list_presets
from core.data.views import procedural_object, write_procedural_views

TWO_STEPS = ["steps=2", "width=16", "height=16", "turntable_frames=1", "turntable_size=16", "preview_every=1",
             "checkpoint_every=1"]


def run_reconstruct_preset(name, tmp_path):
    write_procedural_views(tmp_path / "views", procedural_object("cube", "red"), n_views=4, size=16)
    return main(["reconstruct", str(tmp_path / "views"), "--config", name, "--out", str(tmp_path / "run"), *TWO_STEPS])


RUNNERS = {"reconstruct": run_reconstruct_preset}


@pytest.mark.parametrize("name", list_presets())
def test_preset_runs_two_steps(name, tmp_path):
    kind = name.split("/")[0]
    assert kind in RUNNERS, f"preset {name}: no test runner for presets under configs/{kind}/"
    assert RUNNERS[kind](name, tmp_path) == 0
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 2


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--views", "4", *TWO_STEPS]) == 0
    out = capsys.readouterr().out
    assert "a shiny striped orange torus" in out and "turntable.mp4" in out
    assert (tmp_path / "demo" / "model.ply").is_file()
