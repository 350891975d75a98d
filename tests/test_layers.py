"""The layers hold: every import in the code (module level and inside functions, read with
`ast`, so a lazy import cannot hide an upward arrow) points down the map of
docs/architecture.md ("Parts and which way the arrows go"):

    app/             doors
    core/pipelines/  stages and hand-offs (with the losses they assemble: normal_guidance,
                     regularisers)
    core/training/   training and evaluating the built-in priors on the procedural world
    core/distill/    objectives
    core/priors/     the teachers and their loading
    core/data/       datasets and the procedural world
    core/export/     files out, meshing, baking, turntables
    core/runner.py, config.py, cameras.py, io.py, errors.py   the ground floor
    renderers/       the floor: besides themselves only core/cameras, config, io, errors

A module may import its own part, anything below it, and third-party code; plus the rules
the map states in words: the teachers see only images (core/priors imports none of
core/data, renderers, core/training), objectives see no renderers or pipelines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "core", "renderers", "configs")

# part -> height; a module may import parts of its height or lower
LAYERS = {
    "app": 8,
    "core.pipelines": 7, "core.normal_guidance": 7, "core.regularisers": 7,
    "core.training": 6,
    "core.distill": 5,
    "core.priors": 4,
    "core.data": 3,
    "core.export": 2,
    "core.runner": 1, "core.config": 1, "core.cameras": 1, "core.io": 1, "core.errors": 1, "core": 1,
    "configs": 0,
    "renderers": 0,
}
RENDERERS_MAY_USE = ("renderers", "core.cameras", "core.config", "core.io", "core.errors")
FORBIDDEN = {  # part -> parts it never imports, whatever their height
    "core.priors": ("core.data", "renderers", "core.training"),
    "core.distill": ("renderers", "core.pipelines"),
}


def part_of(module: str) -> str:
    """The LAYERS key that owns dotted `module` (longest prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in LAYERS:
            return name
    raise KeyError(module)


def within(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """(absolute dotted module, line) for every import statement anywhere in `path`; for
    `from X import Y`, both X and X.Y (Y may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.append((module, node.lineno))
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"]
    return [(m, line) for m, line in found if m.split(".")[0] in PACKAGES]


def violations(module: str, target: str) -> str | None:
    """Why `module` may not import `target`, or None when the arrow points down."""
    src = part_of(module)
    try:
        dst = part_of(target)
    except KeyError:
        return None
    if src == "renderers":  # the floor has its own list: the ground-floor modules it may use
        if any(within(target, allowed) for allowed in RENDERERS_MAY_USE):
            return None
        return "renderers use only core/cameras, config, io, errors"
    for part, banned in FORBIDDEN.items():
        if within(module, part):
            hit = [b for b in banned if within(target, b)]
            if hit:
                return f"{part} never imports {hit[0]}"
    if LAYERS[dst] > LAYERS[src]:
        return f"upward arrow: {src} (height {LAYERS[src]}) -> {dst} (height {LAYERS[dst]})"
    return None


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_import_points_down():
    bad = []
    for path in source_files():
        module = module_name(path)
        for target, line in imported_modules(path):
            why = violations(module, target)
            if why:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}: {why}")
    assert not bad, "\n".join(bad)


def test_every_module_belongs_to_a_part():
    # a new top-level module under core/ must be placed on the map (LAYERS), not slip through
    unplaced = []
    for path in source_files():
        try:
            part_of(module_name(path))
        except KeyError:
            unplaced.append(str(path.relative_to(ROOT)))
    assert not unplaced
    top = {module_name(p) for p in (ROOT / "core").glob("*.py")} | {
        f"core.{p.name}" for p in (ROOT / "core").iterdir() if (p / "__init__.py").is_file()}
    assert top - {"core"} <= set(LAYERS), sorted(top - set(LAYERS))


@pytest.mark.parametrize("module, target, expected", [
    ("renderers.mesh.scene", "core.export.assets", "renderers use only"),
    ("renderers.mesh.scene", "core.errors", None),
    ("core.priors.builtin.normal_model", "core.data.procedural", "core.priors never imports core.data"),
    ("core.priors.loading", "core.training.train", "core.priors never imports core.training"),
    ("core.distill.lora", "renderers.base", "core.distill never imports renderers"),
    ("core.runner", "core.export.video", "upward arrow"),
    ("core.export.assets", "app.cli", "upward arrow"),
    ("app.cli", "core.pipelines.text_to_3d", None),
    ("core.training.train", "core.priors.builtin", None),
])
def test_the_rules_catch_what_they_should(module, target, expected):
    why = violations(module, target)
    assert (why is None) if expected is None else (why is not None and expected in why)


def test_lazy_and_relative_imports_are_seen(tmp_path):
    # the checker must see imports inside functions and resolve relative ones, or the cycle
    # it was written against (renderers.mesh -> core.export.assets inside a method) hides again
    fake = ROOT / "renderers" / "mesh" / "scene.py"
    found = dict(imported_modules(fake))
    assert "renderers.mesh.mesh" in found  # `from .mesh import TriangleMesh`
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from core.export.assets import write_mesh\n")
    tree_imports = [n for n in ast.walk(ast.parse(probe.read_text())) if isinstance(n, ast.ImportFrom)]
    assert tree_imports and tree_imports[0].module == "core.export.assets"
