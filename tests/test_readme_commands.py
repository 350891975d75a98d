"""Every `scorelift ...` command shown in README.md runs, so the docs cannot drift from the code.

The commands are read from README.md's fenced code blocks: every line that starts with
`scorelift ` (a trailing `\\` joins the next line, `# ...` comments are dropped). Each is
run through the real entry point (`app.cli.main`, in this process) after three rewrites,
all of them tables below:

- PLACEHOLDERS: words the README uses for the user's own files (DATA_DIR, RUN,
  photo.png, ...) become small files made once per module;
- `a|b|c` runs once per alternative (`--format glb|obj|ply|splat` is four exports) and
  `[key=value ...]` (optional overrides) is dropped;
- FAST: arguments appended per command shape that make the job take seconds (two steps,
  16-32 px renders, one turntable frame, coarse meshing). Appended last, they win over the
  README's own values (argparse and dotted overrides both keep the last one).

A command whose shape (subcommand + mode flags) has no FAST entry, or that names an
upper-case placeholder the table does not know, fails: add the entry here when you add a
command to the README. Two shapes are not run to completion, by design:

- `scorelift train-prior ...` has no budget small enough for a test: `--steps 1` still
  renders an image cache and trains the text prior's VAE for its fixed 7 minutes
  (`vae_minutes`, no flag), and the default `--out` is the shipped weights' folder. It is
  run with `--help` appended instead: the subcommand, WHAT and the option values before
  `--help` are parsed for real, and every option the README names must appear in the
  trainer's help.
- `scorelift web` serves until stopped: it is launched in a subprocess on a free port,
  must answer HTTP 200 on its page, and is then stopped with SIGTERM.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from app.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# --- reading the README -----------------------------------------------------------------------


def code_block_lines(markdown: str) -> list[str]:
    """The lines inside ``` fenced blocks, backslash continuations joined."""
    lines, inside, pending = [], False, ""
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((pending + line).strip())
        pending = ""
    return lines


def readme_commands(markdown: str) -> list[list[str]]:
    """Every `scorelift ...` line of the code blocks as shell words, without its comment."""
    return [shlex.split(line, comments=True) for line in code_block_lines(markdown) if line.startswith("scorelift ")]


OPTIONAL = ["[key=value", "...]"]   # `[key=value ...]`: optional overrides, left out


def expand(tokens: list[str]) -> list[list[str]]:
    """argv lists (without 'scorelift') for one README command: `[key=value ...]` dropped,
    one argv per combination of `a|b` alternatives."""
    assert tokens[0] == "scorelift", tokens
    words = tokens[1:]
    for i in range(len(words) - 1):
        if words[i:i + 2] == OPTIONAL:
            words = words[:i] + words[i + 2:]
            break
    choices = [word.split("|") if "|" in word else [word] for word in words]
    return [list(combination) for combination in itertools.product(*choices)]


# --- the tables -------------------------------------------------------------------------------

# Small jobs: one turntable frame of 16 px, coarse meshing and baking (text and image presets).
# The demo keeps the preset's exports (.ply and a baked .glb); the other jobs write the .ply
# only, since `scorelift export RUN --format glb|obj` tests the mesh exports.
SMALL_EXPORTS = ["turntable_frames=1", "turntable_size=16", "export_options.resolution=24",
                 "export_options.texture_size=32", "export_options.target_faces=2000", "handoff.resolution=24",
                 "dmtet.resolution=12", "preview_every=1", "checkpoint_every=1"]
SMALL = [*SMALL_EXPORTS, "export=[ply]"]
SMALL_RECONSTRUCT = ["steps=2", "width=16", "height=16", "turntable_frames=1", "turntable_size=16",
                     "preview_every=1", "checkpoint_every=1"]

TINY_RELIGHT = ["stages.0.steps=3", "stages.1.steps=2", "stages.2.steps=2", "stages.3.steps=2", "turntable_frames=2",
                "turntable_size=16", "glb_resolution=16", "glb_texture_size=32", "preview_every=2",
                "checkpoint_every=2", "renderer.gaussian.num_points=200", "renderer.pbr.env_height=8"]

# Command shape -> arguments appended to make it fast. A shape is the subcommand plus the
# mode flags it uses (the entry with the most flags present wins). "{out}" is a fresh folder.
PARSE_ONLY, LAUNCH_AND_STOP = "parse only", "launch and stop"
FAST: dict[tuple[str, ...], list[str] | str] = {
    ("demo",): ["--steps", "2", "--out", "{out}", *SMALL_EXPORTS],
    ("demo", "--reconstruct"): ["--views", "4", "--out", "{out}", *SMALL_RECONSTRUCT],
    ("reconstruct",): ["--out", "{out}", *SMALL_RECONSTRUCT],
    ("generate",): ["--steps", "2", "--out", "{out}", *SMALL],
    ("generate", "--image"): ["--steps", "2", "--out", "{out}", "reference_size=32", *SMALL],
    ("batch",): ["--out", "{out}", "stages.0.steps=2", *SMALL],
    ("batch", "--ray"): ["--out", "{out}", "stages.0.steps=2", *SMALL],  # a local Ray runtime, shut down after
    ("render",): ["--width", "16", "--height", "16"],
    ("export",): ["--resolution", "16", "--texture-size", "16", "--faces", "500", "--out", "{out}/asset"],
    ("relight", "--data"): ["--out", "{out}", *TINY_RELIGHT],
    ("relight", "--from"): ["--out", "{out}", "--views", "8", "--size", "16", "export_glb=false", *TINY_RELIGHT],
    ("render", "--passes"): [],  # the README's own arguments at the test file's image size
    ("animate",): ["--out", "{out}", "lift.prior_model={zero123}", "crop_size=32", "background.steps=2", "lift.steps=2",
                   "motion.steps=2", "placement.steps=2", "preview_every=1", "checkpoint_every=1"],
    ("track",): ["--out", "{out}/P.npz"],
    ("train-prior",): PARSE_ONLY,
    ("web",): LAUNCH_AND_STOP,
}


@dataclass
class Inputs:
    """The user's files the README names, made small."""

    root: Path
    data_dir: Path       # a NeRF-synthetic folder: 4 views of 16 px, train and test cameras
    run: Path            # a finished run folder (Gaussians, model.ply)
    photo: Path          # a 32 px RGBA picture of one object
    prompts: Path        # two prompts
    relight_run: Path | None = None  # a finished relight run (PBR Gaussians + environment)
    envmap: Path | None = None       # a small Radiance .hdr environment map
    clip: Path | None = None         # a 4-frame 64 px synthetic video: frames/, masks/, queries.npz
    animate_run: Path | None = None  # a finished (tiny) animate run of it
    zero123: Path | None = None      # a tiny Zero123 checkpoint

    def fresh(self, name: str) -> Path:
        for i in itertools.count():
            path = self.root / f"{name}-{i}"
            if not path.exists():
                return path
        raise AssertionError("unreachable")


PLACEHOLDERS = {
    "DATA_DIR": lambda inputs: inputs.data_dir,
    "RUN": lambda inputs: inputs.run,
    "ASSET_OR_RUN": lambda inputs: inputs.run,
    "DIR": lambda inputs: inputs.fresh("out"),
    "model.ply": lambda inputs: inputs.run / "model.ply",
    "transforms_test.json": lambda inputs: inputs.data_dir / "transforms_test.json",
    "photo.png": lambda inputs: inputs.photo,
    "prompts.txt": lambda inputs: inputs.prompts,
    "RELIGHT_RUN": lambda inputs: inputs.relight_run,
    "env.hdr": lambda inputs: inputs.envmap,
    "VIDEO": lambda inputs: inputs.clip / "frames",
    "MASKS_DIR": lambda inputs: inputs.clip / "masks",
    "ANIMATE_RUN": lambda inputs: inputs.animate_run,
    "Q.npz": lambda inputs: inputs.clip / "queries.npz",
    "P.npz": lambda inputs: inputs.fresh("tracks") / "P.npz",
}
UPPER_CASE_WORD = re.compile(r"[A-Z][A-Z0-9_]+")


def shape_of(argv: list[str]) -> tuple[str, ...]:
    """The FAST key for argv; fails naming the command when there is none."""
    matches = [key for key in FAST if key[0] == argv[0] and all(flag in argv for flag in key[1:])]
    if not matches:
        pytest.fail(f"README command 'scorelift {shlex.join(argv)}': no FAST entry for '{argv[0]}' in "
                    "tests/test_readme_commands.py; add one that makes it run in seconds")
    return max(matches, key=len)


def substitute(argv: list[str], inputs: Inputs) -> list[str]:
    out = []
    for token in argv:
        if token in PLACEHOLDERS:
            out.append(str(PLACEHOLDERS[token](inputs)))
        elif UPPER_CASE_WORD.fullmatch(token):
            pytest.fail(f"README placeholder '{token}' is not in PLACEHOLDERS (tests/test_readme_commands.py)")
        else:
            out.append(token)
    return out


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    from core.data.views import procedural_object, write_procedural_views

    root = tmp_path_factory.mktemp("readme")
    data_dir = root / "data"
    write_procedural_views(data_dir, procedural_object("cube", "red"), n_views=4, size=16)
    shutil.copy(data_dir / "transforms_train.json", data_dir / "transforms_test.json")
    write_procedural_views(root / "photo", procedural_object("cone", "green"), n_views=1, size=32)
    photo = shutil.copy(root / "photo" / "train" / "r_000.png", root / "photo.png")
    prompts = root / "prompts.txt"
    prompts.write_text("a red cube\na blue sphere\n")
    run = root / "run"
    assert main(["reconstruct", str(data_dir), "--out", str(run), *SMALL_RECONSTRUCT]) == 0
    relight_run = root / "relight"
    assert main(["relight", "--data", str(data_dir), "--out", str(relight_run), *TINY_RELIGHT]) == 0
    from renderers.shading.envmap_files import write_envmap

    sky = np.ones((8, 16, 3), np.float32) * np.linspace(0.2, 1.5, 8, dtype=np.float32)[::-1, None, None]
    envmap = write_envmap(root / "env.hdr", sky)
    from core.data.video_synth import SyntheticVideoConfig, render_video, write_video
    from core.priors.tiny import build_tiny_zero123

    clip = root / "clip"
    write_video(render_video(SyntheticVideoConfig(frames=4, width=64, height=64, pan_deg=4.0, dolly=0.0,
                                                  query_stride=16)), clip)
    np.savez(clip / "queries.npz", query_points=np.load(clip / "gt.npz")["query_points"])
    zero123 = build_tiny_zero123(root / "zero123")
    animate_run = root / "animate"
    fast = [arg.replace("{zero123}", str(zero123)) for arg in FAST[("animate",)][2:]]
    assert main(["animate", str(clip / "frames"), "--masks", str(clip / "masks"), "--out", str(animate_run),
                 *fast]) == 0
    return Inputs(root, data_dir, run, Path(photo), prompts, relight_run, Path(envmap), clip, animate_run,
                  Path(zero123))


COMMANDS = readme_commands(README.read_text())
RUNS = [argv for command in COMMANDS for argv in expand(command)]


# --- tests ------------------------------------------------------------------------------------


def test_commands_are_read_from_code_blocks_with_alternatives_expanded():
    markdown = "\n".join([
        "Prose mentioning `scorelift demo` is not a command.",
        "```",
        "make demo",
        "scorelift export RUN --format glb|ply   # two exports",
        'scorelift generate "a red cube" [key=value ...]',
        "scorelift reconstruct DATA_DIR \\",
        "    steps=500",
        "```",
        "scorelift web",
    ])
    commands = readme_commands(markdown)
    assert commands == [["scorelift", "export", "RUN", "--format", "glb|ply"],
                        ["scorelift", "generate", "a red cube", "[key=value", "...]"],
                        ["scorelift", "reconstruct", "DATA_DIR", "steps=500"]]
    assert [argv for c in commands for argv in expand(c)] == [
        ["export", "RUN", "--format", "glb"], ["export", "RUN", "--format", "ply"],
        ["generate", "a red cube"], ["reconstruct", "DATA_DIR", "steps=500"]]


def test_a_command_the_tables_cannot_handle_fails(tmp_path):
    # A new README command needs a FAST entry, and a new placeholder a PLACEHOLDERS entry.
    with pytest.raises(pytest.fail.Exception, match="no FAST entry for 'frobnicate'"):
        shape_of(["frobnicate", "RUN"])
    inputs = Inputs(tmp_path, tmp_path / "data", tmp_path / "run", tmp_path / "photo.png", tmp_path / "prompts.txt")
    with pytest.raises(pytest.fail.Exception, match="'MESH_FILE' is not in PLACEHOLDERS"):
        substitute(["render", "MESH_FILE", "--out", "DIR"], inputs)
    assert substitute(["export", "RUN", "--format", "glb"], inputs) == ["export", str(tmp_path / "run"), "--format", "glb"]


def test_readme_shows_the_commands_people_start_with():
    # The usage block must not silently vanish (then this file would test nothing).
    subcommands = {argv[0] for argv in RUNS}
    assert {"demo", "generate", "reconstruct", "batch", "render", "export", "web", "train-prior"} <= subcommands


@pytest.mark.parametrize("argv", RUNS, ids=[shlex.join(argv) for argv in RUNS])
def test_readme_command_runs(argv, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # default run folders (runs/...) land in the test's folder
    fast = FAST[shape_of(argv)]
    argv = substitute(argv, inputs)
    if fast == PARSE_ONLY:
        check_parses(argv, capsys)
    elif fast == LAUNCH_AND_STOP:
        check_serves(argv, inputs.fresh("web"))
    else:
        out = inputs.fresh("out")
        code = main([*argv, *[arg.replace("{out}", str(out)).replace("{zero123}", str(inputs.zero123)) for arg in fast]])
        assert code == 0, f"scorelift {shlex.join(argv)} exited with {code}"
        assert any(out.rglob("*")), f"scorelift {shlex.join(argv)} wrote nothing into {out}"


def check_parses(argv: list[str], capsys) -> None:
    """The trainer parses the README's arguments and its help lists every option named."""
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    help_text = capsys.readouterr().out
    for option in (a for a in argv if a.startswith("--")):
        assert option in help_text, f"{option} is not an option of scorelift {argv[0]} {argv[1]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_serves(argv: list[str], runs: Path, timeout_s: float = 120.0) -> None:
    """`scorelift ARGV` serves its page (HTTP 200) in a subprocess, then stops on SIGTERM."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = runs.with_suffix(".log")
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "app.cli", *argv, "--port", str(port), "--runs", str(runs)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline, status = time.monotonic() + timeout_s, None
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                        status = response.status
                        break
                except OSError:
                    time.sleep(0.5)
            assert status == 200, f"no page on port {port} (exit code {process.poll()}):\n{log.read_text()[-3000:]}"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
