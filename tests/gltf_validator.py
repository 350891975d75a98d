"""The Khronos glTF validator (npm `gltf-validator`), run with the machine's Node.js.

Installed once into a cache folder (default ~/.cache/scorelift/gltf-validator, or
$SCORELIFT_CACHE/gltf-validator) and reused; nothing lands in the repository.
Without node/npm this fails loudly: CI has them, and a skipped validation would let
an invalid .glb through unnoticed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

VERSION = "2.0.0-dev.3.10"

_SCRIPT = """\
const fs = require("fs");
const path = require("path");
const validator = require(path.join(__dirname, "node_modules", "gltf-validator"));
const bytes = new Uint8Array(fs.readFileSync(process.argv[2]));
validator.validateBytes(bytes, { maxIssues: 200 })
  .then((report) => process.stdout.write(JSON.stringify(report)))
  .catch((error) => { console.error(String(error)); process.exit(2); });
"""


class ValidatorUnavailable(RuntimeError):
    pass


def _cache_dir() -> Path:
    root = os.environ.get("SCORELIFT_CACHE") or Path.home() / ".cache" / "scorelift"
    return Path(root) / "gltf-validator"


def install() -> tuple[str, Path]:
    """(node executable, validate.js path), installing the npm package on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise ValidatorUnavailable(
            "the glTF validator needs Node.js and npm on PATH (e.g. `apt-get install nodejs npm`); "
            "CI has them, so this test does not skip"
        )
    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    package = folder / "node_modules" / "gltf-validator" / "package.json"
    with open(folder / ".lock", "w") as lock:  # parallel test runs install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not package.exists() or json.loads(package.read_text()).get("version") != VERSION:
            result = subprocess.run(
                [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--no-save",
                 f"gltf-validator@{VERSION}"],
                capture_output=True, text=True, timeout=300,
            )
            if result.returncode != 0 or not package.exists():
                raise ValidatorUnavailable(f"npm install gltf-validator@{VERSION} failed:\n{result.stderr[-2000:]}")
        script = folder / "validate.js"
        if not script.exists() or script.read_text() != _SCRIPT:
            script.write_text(_SCRIPT)
    return node, script


def validate(path: str | Path) -> dict:
    """The validator's JSON report for a .glb; report["issues"]["numErrors"] counts errors."""
    node, script = install()
    result = subprocess.run([node, str(script), str(path)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"glTF validator crashed on {path}:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)
