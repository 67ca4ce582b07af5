"""The main job: napari with the plugin's widgets docked and the sample data loaded.

Headless (``--headless``, e.g. under Xvfb) it takes screenshots of the viewer and of
each widget, writes a short Markdown report, and exits.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UdaError
from .io import Geometry
from .metrics import organ_volumes_ml
from .organs import ORGANS

PLUGIN = "napari-uda"
SAMPLES = ("ct", "t2wi", "pet")
WIDGETS = ("Volume info", "Phantom generator")


def run_demo(out: Path, headless: bool = False) -> int:
    """Open the viewer; when ``headless``, write screenshots and ``report.md`` to ``out`` and return."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        raise UdaError("no display: run under Xvfb (the README's './uda demo' does this) or set DISPLAY")
    import napari

    viewer = napari.Viewer(title="napari-uda demo", show=True)
    for key in SAMPLES:
        viewer.open_sample(PLUGIN, key)
    docked = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in WIDGETS}
    ct_labels = next(layer for layer in viewer.layers if layer.name.endswith("_organs"))
    viewer.layers.selection.active = ct_labels
    viewer.grid.enabled = True
    viewer.reset_view()
    # step to the CT's middle slice, in world coordinates
    z_mid = ct_labels.translate[0] + ct_labels.scale[0] * ct_labels.data.shape[0] / 2
    viewer.dims.set_point(0, z_mid)
    if not headless:
        napari.run()
        return 0

    out.mkdir(parents=True, exist_ok=True)
    viewer.window._qt_window.resize(1600, 1000)
    napari.qt.get_qapp().processEvents()
    shots = {"viewer": out / "viewer.png"}
    viewer.screenshot(str(shots["viewer"]), canvas_only=False)
    for name, widget in docked.items():
        path = out / f"widget_{name.lower().replace(' ', '_')}.png"
        widget.grab().save(str(path))
        shots[name] = path
    geometry = Geometry.from_dict(ct_labels.metadata["geometry"])
    vols = organ_volumes_ml(ct_labels.data, geometry.spacing)
    lines = [
        "# napari-uda demo report", "",
        f"Layers loaded from the sample data: {', '.join(layer.name for layer in viewer.layers)}.", "",
        "| layer | shape (z, y, x) | spacing (mm) | origin (mm) | layer.scale |", "|---|---|---|---|---|",
    ]
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
