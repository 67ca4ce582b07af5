"""The main job: the method on the bundled sample data, then napari with every widget on the result.

1. By default the bundled model (``sample_data/models/``: the CT->T2WI Organ Attention translator and
   the nnU-Net folds of the final stage, trained by ``benchmarks/make_bundled_models.py`` on other
   phantom patients) is imported into the workspace ``OUT/workspace``: it translates the sample CT,
   every fold predicts the sample T2WI, fold consistency fills the review queue, the prediction is
   post-processed and evaluated against the sample T2WI labels. Minutes on a CPU, no training.
   With ``train`` the whole method runs from scratch instead (translators, nnU-Net, one
   self-training round on pseudo-labels accepted by fold consistency) in ``OUT/workspace_train``; resumable.
2. napari opens with the sample data, the CT's translation and attention map, the T2WI's prediction
   and fold disagreement, the workspace and every dock widget.

Headless (``--headless``, e.g. under Xvfb) it saves a screenshot of the viewer and of each widget,
writes ``report.md`` and exits.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_uda.core.errors import UdaError
from napari_uda.core.files import stem_of
from napari_uda.core.io import Geometry, read_volume
from napari_uda.core.jobs import Progress
from napari_uda.core.organs import ORGANS
from napari_uda.evaluate.metrics import organ_volumes_ml
from napari_uda.segment.prediction_folder import PredictionFolder

PLUGIN = "napari-uda"
SAMPLES = ("ct", "t2wi", "pet")
WIDGETS = ("Workspace", "Translator", "Segmenter", "Fold consistency", "Review", "Self-training", "Volume info",
           "Phantom generator")
BUNDLED_MODEL = "t2wi_organ_attention"  # sample_data/models/<name>


def _sample_workspace(folder: Path) -> Any:
    from napari_uda.core.workspace import Workspace
    from napari_uda.data.sample_data import sample_data_dir

    data = sample_data_dir()
    return Workspace.create(folder, data / "ct/images", data / "ct/labels", data / "t2wi/images", "T2WI")


def run_sample_bundled(out: Path, progress: Progress | None = None) -> tuple[Path, str]:
    """The bundled model on the sample data in ``out/workspace``; returns (workspace, evaluation table)."""
    from napari_uda.data.sample_data import sample_data_dir
    from napari_uda.pipeline.workflow import FilterSettings, predict_with_model

    folder = sample_data_dir() / "models" / BUNDLED_MODEL
    if not folder.is_dir():
        raise UdaError(f"{folder}: the bundled model is missing; make it with benchmarks/make_bundled_models.py "
                       "or run the demo with --train")
    ws = _sample_workspace(out / "workspace")
    predict_with_model(ws, folder, "cpu", FilterSettings(top_k=1, rule="consistency"), progress)
    return ws.root, _evaluation_table(ws)


def run_sample_training(out: Path, budget: str = "tiny", progress: Progress | None = None) -> tuple[Path, str]:
    """The whole method from scratch on the sample data in ``out/workspace_train``; returns (workspace, evaluation table)."""
    from napari_uda.core.choices import get_budget
    from napari_uda.pipeline.workflow import FilterSettings, run_pipeline

    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    ws = _sample_workspace(out / "workspace_train")
    # nnU-Net trains at half the sample data's resolution (24x64x64): eight times fewer voxels, minutes not half an hour
    demo_budget = replace(get_budget(budget), spacing_factor=2.0)
    result = run_pipeline(ws, demo_budget, "organ-attention", rounds=1, auto=True, ablation=False, device="cpu",
                          settings=FilterSettings(top_k=1, rule="consistency"), progress=progress)
    print(f"final predictions in {result['final']}")
    return ws.root, _evaluation_table(ws)


def _evaluation_table(ws: Any) -> str:
    from napari_uda.data.sample_data import sample_data_dir
    from napari_uda.evaluate.evaluation import compare_markdown
    from napari_uda.pipeline.workflow import evaluate_stages

    evaluations = evaluate_stages(ws, sample_data_dir() / "t2wi/labels")

    def column(stage: str) -> str:  # an imported model is named for what it is, not for the slot it fills
        imported = ws.model(stage).imported_stage if ws.model(stage) else None
        return f"bundled {imported}" if imported else stage

    evaluations = {column(stage): e for stage, e in evaluations.items()}
    table = compare_markdown(evaluations, "dsc") + "\n" + compare_markdown(evaluations, "nsd") + "\n" + _headline(evaluations)
    print(f"\n{table}")
    return table


def _headline(evaluations: dict[str, Any]) -> str:
    """One line per evaluation, both metrics side by side, so the last line printed is not read as DSC when it is NSD."""
    lines = []
    for name, e in evaluations.items():
        s = e.summary()["all"]
        lines.append(f"{name}: mean DSC {s['dsc_mean']:.3f}, mean NSD {s['nsd_mean']:.3f} "
                     f"({len(e.organs)} organs, {len(e.cases)} scans)")
    return "\n".join(lines) + "\n"


def _result_layers(workspace: Path) -> list[tuple]:
    """Layer data tuples of the sample CT's translation and attention map and of the sample T2WI's
    final prediction with its fold disagreement."""
    from napari_uda.core.workspace import Workspace
    from napari_uda.data.sample_data import sample_case_paths
    from napari_uda.napari.widgets._common import ATTENTION_LAYER, layer_tuple
    from napari_uda.napari.widgets.segmenter import inference_layers

    ws = Workspace.open(workspace)
    variant = ws.pipeline().variant
    ct_name, t2_name = (Path(sample_case_paths(m)[0]).name for m in ("ct", "t2wi"))
    translated = ws.translated_dir(variant) / ct_name
    layers = [layer_tuple(read_volume(translated), f"{ct_name[:-7]} -> {ws.modality}", as_labels=False)]
    attention = translated.parent.with_name(translated.parent.name + "_attention") / ct_name
    if attention.exists():
        layers.append(layer_tuple(read_volume(attention), f"{ct_name[:-7]} attention", as_labels=False, **ATTENTION_LAYER))
    stage = ws.stage("final").from_stage
    case = stem_of(t2_name)
    folds = {str(f): read_volume(p) for f, p in PredictionFolder(ws.predictions_dir(stage)).fold_labels(case).items()}
    result = {"fused": read_volume(ws.predictions_dir("final") / t2_name), "folds": folds}
    return layers + inference_layers(f"{t2_name[:-7]} final", result, per_fold=False, disagreement=True)


def _side_by_side(viewer: Any, names: list[str]) -> float:
    """Grid tiles of two layers each, an image under its overlay: ``names`` is the CT and its organs,
    the translation and its attention, then the result layers of :func:`_result_layers` (the T2WI's
    prediction and fold disagreement), which go over the sample T2WI. Other layers are hidden (napari
    leaves no tile for them). Returns the world z (mm) where the CT's organs and the prediction both
    show most, since the two are different patients with different z extents."""
    from napari_uda.data.sample_data import sample_case_paths

    t2_name = Path(sample_case_paths("t2wi")[0]).name[:-7]
    order = names[:4] + [t2_name] + names[4:]
    for layer in viewer.layers:
        layer.visible = layer.name in order
    viewer.layers.move_multiple([viewer.layers.index(name) for name in order], 0)
    viewer.canvas.grid.stride = 2
    return _shared_slice(viewer.layers[names[1]], viewer.layers[names[4]])


def _shared_slice(a: Any, b: Any) -> float:
    """The world z (mm) of the axial slice of labels layer ``a`` where the smaller of the two organ
    areas (mm^2) of ``a`` and of ``b`` at that z is largest (axis-aligned layers, as the sample data)."""
    best, best_z = -1.0, float(a.translate[0])
    for k in range(a.data.shape[0]):
        z = float(a.translate[0] + a.scale[0] * k)
        j = int(round((z - b.translate[0]) / b.scale[0]))
        if 0 <= j < b.data.shape[0]:
            area = min(np.count_nonzero(a.data[k]) * a.scale[1] * a.scale[2],
                       np.count_nonzero(b.data[j]) * b.scale[1] * b.scale[2])
            if area > best:
                best, best_z = area, z
    return best_z


def run_demo(out: Path, headless: bool = False, budget: str = "tiny", pipeline: bool = True, train: bool = False,
             progress: Progress | None = None) -> int:
    """Run the bundled model (or, with ``train``, the whole method) on the sample data unless
    ``pipeline`` is False (reporting to ``progress``), open the viewer; when ``headless``, write screenshots and ``report.md`` to
    ``out`` and return."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        raise UdaError("no display: run under Xvfb (the README's './uda demo' does this) or set DISPLAY")
    out.mkdir(parents=True, exist_ok=True)
    workspace, table = (None, "")
    if pipeline:
        workspace, table = run_sample_training(out, budget, progress) if train else run_sample_bundled(out, progress)
    import napari

    from napari_uda.core.workspace import Workspace
    from napari_uda.napari.widgets._session import link_for

    viewer = napari.Viewer(title="napari-uda demo", show=True)
    for key in SAMPLES:
        viewer.open_sample(PLUGIN, key)
    result = _result_layers(workspace) if workspace is not None else []
    for data, kwargs, kind in result:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    if workspace is not None:
        link_for(viewer).set(Workspace.open(workspace))
    docked: dict[str, Any] = {}
    for name in WIDGETS:
        docked[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)[1]
    ct_labels = next(layer for layer in viewer.layers if layer.name.endswith("_organs"))
    if workspace is not None:  # the translator loaded: its preview shows the sample CT, translation and attention
        viewer.layers.selection.active = next(layer for layer in viewer.layers if layer.name == ct_labels.name[:-7])
        docked["Translator"].device.setCurrentText("cpu")
        docked["Translator"].load_clicked()
    app = napari.qt.get_qapp()
    # the widgets' loading jobs add layers (the review queue's first case): lay out the grid after them
    _wait_for_jobs(app, [w.job for w in docked.values() if hasattr(w, "job")])
    viewer.layers.selection.active = ct_labels
    viewer.canvas.grid.enabled = True
    z = ct_labels.translate[0] + ct_labels.scale[0] * ct_labels.data.shape[0] / 2
    if workspace is not None:
        z = _side_by_side(viewer, [ct_labels.name[:-7], ct_labels.name] + [kw["name"] for _, kw, _ in result])
    viewer.reset_view()
    viewer.dims.set_point(0, z)
    if not headless:
        napari.run()
        return 0

    viewer.window._qt_window.resize(1600, 1000)
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


def _wait_for_jobs(app: Any, jobs: list[Any], timeout_s: float = 300.0) -> None:
    """Process Qt events until no widget job runs (the translator's preview, headless only)."""
    import time

    end = time.monotonic() + timeout_s
    while any(job.running for job in jobs) and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.05)
    app.processEvents()


def _dock_of(widget: Any) -> Any:
    """The dock widget holding ``widget`` (to bring its tab to the front)."""
    from qtpy.QtWidgets import QDockWidget

    while widget is not None and not isinstance(widget, QDockWidget):
        widget = widget.parentWidget()
    return widget
