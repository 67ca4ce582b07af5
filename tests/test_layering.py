"""The layering: subpackages named for the method's stages, each importing only the packages its
docstring's ``May import:`` line names, and computation that never imports napari or Qt. Only
``napari_uda.napari`` may; the command line, the pipeline and every computation package must run on
a cluster node without a display or a GUI toolkit."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import napari_uda

PKG = Path(napari_uda.__file__).parent
GUI_MODULES = ("napari", "qtpy", "magicgui", "PyQt6", "PyQt5", "PySide6", "vispy")
GUI_PACKAGE = "napari"


def packages() -> list[str]:
    return sorted(p.parent.name for p in PKG.glob("*/__init__.py"))


def allowed(package: str) -> set[str]:
    """The packages ``package`` may import, read from its docstring's ``May import:`` line."""
    doc = ast.get_docstring(ast.parse((PKG / package / "__init__.py").read_text())) or ""
    m = re.search(r"^May import: (.+?)\.$", doc, re.M)
    assert m, f"napari_uda.{package}: its docstring has no 'May import: ...' line"
    return set() if m.group(1).startswith("nothing") else {p.strip() for p in m.group(1).split(",")}


def imported_modules(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (at any depth: lazy imports count)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the layering is checked on absolute ones)"
            names.append(node.module or "")
    return names


def test_every_module_lives_in_a_stage_package():
    loose = sorted(p.name for p in PKG.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules outside the stage packages: {loose}"
    assert {"core", "translate", "segment", "pseudo", "review", "pipeline", "evaluate", "data", "napari", "cli"} <= set(packages())


def test_packages_import_only_what_their_docstring_allows():
    bad = []
    for package in packages():
        ok = allowed(package) | {package}
        assert ok - {package} <= set(packages()), f"napari_uda.{package}: may import unknown packages"
        for path in (PKG / package).rglob("*.py"):
            for name in imported_modules(path):
                parts = name.split(".")
                if parts[0] == "napari_uda" and len(parts) > 1 and parts[1] not in ok:
                    bad.append(f"{path.relative_to(PKG)} imports {name}")
                if parts[0] in GUI_MODULES and package != GUI_PACKAGE:
                    bad.append(f"{path.relative_to(PKG)} imports {name} (only napari_uda.{GUI_PACKAGE} may)")
    assert bad == []


def test_no_sql_outside_the_review_store():
    store = PKG / "review" / "store.py"
    sql = [f"{p.relative_to(PKG)}:{i}" for p in PKG.rglob("*.py") if p != store
           for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\.execute(many)?\(|\bsqlite3\b", line)]
    assert sql == []


def test_no_function_is_longer_than_80_lines():
    long = [f"{p.relative_to(PKG)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in PKG.rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert long == []


def test_the_layering_check_sees_a_forbidden_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from napari_uda.pipeline.workflow import run_pipeline\n    import qtpy\n")
    assert imported_modules(module) == ["napari_uda.pipeline.workflow", "qtpy"]
    assert "pipeline" not in allowed("core") and "translate" not in allowed("segment")


CHECK = f"""
import importlib, pkgutil, sys
import napari_uda
for m in pkgutil.walk_packages(napari_uda.__path__, "napari_uda."):
    if m.name.startswith("napari_uda.{GUI_PACKAGE}") or m.name.endswith("__main__"):
        continue
    importlib.import_module(m.name)
    gui = [k for k in {GUI_MODULES!r} if k in sys.modules]
    if gui:
        print(m.name, "imports", gui)
        break
else:
    print("clean")
"""


def test_computation_never_imports_napari_or_qt():
    res = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "clean", res.stdout
