"""The main job: the method on the bundled sample data, then napari with every widget on the result.

1. The pipeline (CT -> T2WI, Organ Attention, one self-training round on pseudo-labels accepted by
   fold consistency) runs in the workspace ``OUT/workspace`` (resumable: a second run is instant),
   and the evaluation of every stage against the sample T2WI labels is printed.
2. napari opens with the sample data, the workspace and every dock widget.

Headless (``--headless``, e.g. under Xvfb) it saves a screenshot of the viewer and of each widget,
writes ``report.md`` and exits.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import UdaError
from .io import Geometry
from .metrics import organ_volumes_ml
from .organs import ORGANS

PLUGIN = "napari-uda"
SAMPLES = ("ct", "t2wi", "pet")
WIDGETS = ("Workspace", "Translator", "Segmenter", "Fold consistency", "Review", "Self-training", "Volume info",
           "Phantom generator")


def run_sample_pipeline(out: Path, budget: str = "tiny") -> tuple[Path, str]:
    """The pipeline on the sample data into ``out/workspace``; returns (workspace, evaluation table)."""
    from .evaluation import compare_markdown
    from .pipeline import FilterSettings, evaluate_stages, get_budget, run_pipeline
    from .sample_data import sample_data_dir
    from .workspace import Workspace

    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    data = sample_data_dir()
    ws = Workspace.create(out / "workspace", data / "ct/images", data / "ct/labels", data / "t2wi/images", "T2WI")
    # nnU-Net trains at half the sample data's resolution (24x64x64): eight times fewer voxels, minutes not half an hour
    demo_budget = replace(get_budget(budget), spacing_factor=2.0)
    result = run_pipeline(ws, demo_budget, "organ-attention", rounds=1, auto=True, ablation=False, device="cpu",
                          settings=FilterSettings(top_k=1, rule="consistency"),
                          progress=lambda e: print(f"[{e['stage']}] {e['message']}", flush=True))
    evaluations = evaluate_stages(ws, data / "t2wi/labels")
    table = compare_markdown(evaluations, "dsc") + "\n" + compare_markdown(evaluations, "nsd")
    print(f"final predictions in {result['final']}\n\n{table}")
    return ws.root, table


def run_demo(out: Path, headless: bool = False, budget: str = "tiny", pipeline: bool = True) -> int:
    """Run the sample pipeline (unless ``pipeline`` is False), open the viewer; when ``headless``,
    write screenshots and ``report.md`` to ``out`` and return."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        raise UdaError("no display: run under Xvfb (the README's './uda demo' does this) or set DISPLAY")
    out.mkdir(parents=True, exist_ok=True)
    workspace, table = run_sample_pipeline(out, budget) if pipeline else (None, "")
    import napari

    from .widgets._session import link_for
    from .workspace import Workspace

    viewer = napari.Viewer(title="napari-uda demo", show=True)
    for key in SAMPLES:
        viewer.open_sample(PLUGIN, key)
    if workspace is not None:
        link_for(viewer).set(Workspace.open(workspace))
    docked: dict[str, Any] = {}
    for name in WIDGETS:
        docked[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)[1]
    ct_labels = next(layer for layer in viewer.layers if layer.name.endswith("_organs"))
    viewer.layers.selection.active = ct_labels
    viewer.grid.enabled = True
    viewer.reset_view()
    z_mid = ct_labels.translate[0] + ct_labels.scale[0] * ct_labels.data.shape[0] / 2
    viewer.dims.set_point(0, z_mid)
    if not headless:
        napari.run()
        return 0

    viewer.window._qt_window.resize(1600, 1000)
    app = napari.qt.get_qapp()
    app.processEvents()
    viewer.reset_view()  # fit the camera to the canvas as laid out, not as first created
    _dock_of(docked["Fold consistency"]).raise_()
    app.processEvents()
    shots = {"viewer": out / "viewer.png"}
    viewer.screenshot(str(shots["viewer"]), canvas_only=False)
    for name, widget in docked.items():
        path = out / f"widget_{name.lower().replace(' ', '_').replace('-', '_')}.png"
        _dock_of(widget).raise_()
        app.processEvents()
        widget.grab().save(str(path))
        shots[name] = path
    geometry = Geometry.from_dict(ct_labels.metadata["geometry"])
    vols = organ_volumes_ml(ct_labels.data, geometry.spacing)
    lines = ["# napari-uda demo report", ""]
    if table:
        lines += [f"Pipeline on the sample data (workspace `{workspace}`): CT -> T2WI, Organ Attention, one "
                  "self-training round, evaluated against the sample T2WI labels (evaluation only).", "", table]
    lines += [f"Layers loaded from the sample data: {', '.join(layer.name for layer in viewer.layers)}.", "",
              "| layer | shape (z, y, x) | spacing (mm) | origin (mm) | layer.scale |", "|---|---|---|---|---|"]
    for layer in viewer.layers:
        g = layer.metadata.get("geometry", {})
        fmt = lambda v: ", ".join(f"{x:.2f}" for x in v)  # noqa: E731
        lines.append(f"| {layer.name} | {layer.data.shape} | {fmt(g.get('spacing', []))} | {fmt(g.get('origin', []))} | {fmt(layer.scale)} |")
    lines += ["", f"Organ volumes of `{ct_labels.name}` (mL):", "", "| organ | volume |", "|---|---|"]
    lines += [f"| {o.name} | {vols[o.index]:.1f} |" for o in ORGANS]
    lines += ["", "Screenshots: " + ", ".join(f"`{p.name}`" for p in shots.values())]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    viewer.close()
    print(f"demo report and screenshots written to {out.resolve()}")
    return 0


def _dock_of(widget: Any) -> Any:
    """The dock widget holding ``widget`` (to bring its tab to the front)."""
    from qtpy.QtWidgets import QDockWidget

    while widget is not None and not isinstance(widget, QDockWidget):
        widget = widget.parentWidget()
    return widget
