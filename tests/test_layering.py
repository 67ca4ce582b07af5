"""The layering: computation never imports napari or Qt. Only ``napari_uda.widgets`` and the napari
contributions (``_napari_io``: reader, writer) may; the command line, the pipeline and every
computation module must run on a cluster node without a display or a GUI toolkit."""
from __future__ import annotations

import subprocess
import sys

GUI_MODULES = ("napari", "qtpy", "magicgui", "PyQt6", "PyQt5", "PySide6")
NAPARI_GLUE = {"widgets", "_napari_io"}

CHECK = f"""
import importlib, pkgutil, sys
import napari_uda
for m in sorted(pkgutil.iter_modules(napari_uda.__path__), key=lambda m: m.name):
    if m.name in {NAPARI_GLUE!r}:
        continue
    importlib.import_module("napari_uda." + m.name)
    gui = [k for k in {GUI_MODULES!r} if k in sys.modules]
    if gui:
        print("napari_uda." + m.name, "imports", gui)
        break
else:
    print("clean")
"""


def test_computation_never_imports_napari_or_qt():
    res = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "clean", res.stdout
