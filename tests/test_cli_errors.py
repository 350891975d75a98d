"""The command line tells a user's mistake from a bug: a `UserError` (raised where the mistake
is detected, however deep) ends as one line `scorelift CMD: error: ...` with exit code 2 and
leaves no half-written run folder; any other exception propagates with its traceback (the
interpreter then exits with 1), even a ValueError."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.cli import main
from core.errors import UserError


def test_an_unknown_prompt_word_is_one_line_exit_2_and_no_run_folder(tmp_path, capsys):
    # the built-in prior finds the unknown word at the first step, after the run folder exists
    out = tmp_path / "run"
    code = main(["generate", "a purple dodecahedron", "--out", str(out), "--steps", "1", "--device", "cpu",
                 "gaussian.num_points=50", "stages.0.cameras.batch_size=1", "turntable_frames=0"])
    err = capsys.readouterr().err
    assert code == 2
    last = err.strip().splitlines()[-1]  # (progress bars of the weight loader come before it)
    assert last.startswith("scorelift generate: error: ") and err.count("error:") == 1
    assert "'dodecahedron'" in last and "Traceback" not in err
    assert not out.exists()


def test_a_bug_keeps_its_traceback_even_as_a_value_error(tmp_path, monkeypatch):
    import core.pipelines.text_to_3d as text_to_3d

    def broken(cfg, out_dir, callbacks=None, prior=None):
        raise ValueError("an internal shape check failed")  # a bug, not bad input

    monkeypatch.setattr(text_to_3d, "generate", broken)
    with pytest.raises(ValueError, match="internal shape check") as info:
        main(["generate", "a red cube", "--out", str(tmp_path / "run"), "--steps", "1"])
    assert not isinstance(info.value, UserError)


def test_a_missing_dataset_is_a_user_error_before_any_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["reconstruct", str(tmp_path / "no_such_scene"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "no transforms_train.json or transforms.json" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_exit_codes_from_the_console(tmp_path):
    # through the interpreter, as a user runs it: 2 for the mistake, 1 with a traceback for a bug
    run = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))"]
    mistake = subprocess.run([*run, "render", str(tmp_path / "missing.ply"), "--out", str(tmp_path / "o")],
                             capture_output=True, text=True, timeout=120)
    assert mistake.returncode == 2 and "asset not found" in mistake.stderr and "Traceback" not in mistake.stderr
    bug = subprocess.run([sys.executable, "-c",
                          "import sys, core.export.assets as a\n"
                          "def f(path): raise KeyError('internal')\n"
                          "a.load_scene = f\n"
                          "from app.cli import main\n"
                          f"sys.exit(main(['render', {str(tmp_path / 'x.ply')!r}, '--out', {str(tmp_path / 'o')!r}]))"],
                         capture_output=True, text=True, timeout=120)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError: 'internal'" in bug.stderr
