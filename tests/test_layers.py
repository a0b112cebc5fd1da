"""The import-layer contract: kdlib's subpackages form layers, and every import (function-level ones too) points down.

Layers, bottom to top: the base modules (io, device, colab), data, engine, eval, run, analysis, bench, studies,
book, and the command-line dispatcher. A module may import its own layer or any lower one. The engine therefore
imports only the base and kdlib.data, and nothing imports kdlib.book but the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kdlib"
LAYERS = (
    ("io", "device", "colab", ""),
    ("data",),
    ("engine",),
    ("eval",),
    ("run",),
    ("analysis",),
    ("bench",),
    ("studies",),
    ("book",),
    ("cli", "__main__"),
)


def layer_of(module: str) -> int:
    """The layer of a dotted kdlib module name ('kdlib.engine.distill' -> the engine's); '' is the package itself."""
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise ValueError(f"{module}: no layer declared for kdlib.{top}; add it to LAYERS")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def imports(source: str) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every kdlib import in `source`, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kdlib":
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "kdlib"]
    return found


def upward_imports(path: Path, source: str | None = None) -> list[str]:
    """'module:line imports target' for every import of `path` that points to a higher layer."""
    me = module_name(path)
    bad = []
    for line, target, names in imports(path.read_text() if source is None else source):
        targets = [f"{target}.{n}" for n in names if (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).is_dir()]
        for t in targets or [target]:
            if layer_of(t) > layer_of(me):
                bad.append(f"{me}:{line} imports {t}")
    return bad


def private_imports(path: Path) -> list[str]:
    """'module:line imports target._name' for every private name imported from another module."""
    me = module_name(path)
    return [
        f"{me}:{line} imports {target}.{n}"
        for line, target, names in imports(path.read_text())
        for n in names
        if n.startswith("_") and not n.startswith("__") and target != me
    ]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert {layer_of(module_name(p)) for p in MODULES} == set(range(len(LAYERS)))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down(path):
    assert upward_imports(path) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_private_names_from_other_modules(path):
    assert private_imports(path) == []


def test_the_contract_catches_an_upward_import():
    engine_module = PACKAGE / "engine" / "distill.py"
    source = engine_module.read_text() + "\n\ndef late():\n    from kdlib.book import runner\n"
    line = len(source.splitlines())
    assert upward_imports(engine_module, source) == [f"kdlib.engine.distill:{line} imports kdlib.book"]


def test_only_the_cli_imports_the_book():
    importers = {
        module_name(p)
        for p in MODULES
        for _, target, _ in imports(p.read_text())
        if target.startswith("kdlib.book") and not module_name(p).startswith("kdlib.book")
    }
    assert importers <= {"kdlib.cli"}
