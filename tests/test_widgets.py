"""Every dock widget end to end in a real napari viewer (Xvfb) on phantom data with the tiny budgets:
workspace -> translator (child-process training, live preview, translation + attention layers)
-> segmenter (folds trained, inference layers) -> pseudo-labels -> fold consistency -> review
-> self-training. Layers and the review store are checked after each step; screenshots are saved.
"""
from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from napari_uda.core.io import read_volume
from napari_uda.core.records import PipelineRecord
from napari_uda.core.workspace import Workspace
from napari_uda.data.phantom import write_phantom_dataset
from napari_uda.napari.layers import volume_to_layer_data
from napari_uda.pipeline.transfer import TransferFrom
from napari_uda.review.store import ReviewStore, label_hash

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("widgets")
    write_phantom_dataset(root / "data", {"ct": 3, "t2wi": 3}, seed=21, shape=(24, 48, 48))
    return root


@pytest.fixture
def errors(monkeypatch):
    """Error notifications the widgets raise (napari shows them; here they are collected)."""
    seen: list[str] = []
    import napari_uda.napari.widgets._common as common

    monkeypatch.setattr(common, "show_error", seen.append)
    return seen


def wait_job(qtbot, widget, timeout=240_000):
    qtbot.waitUntil(lambda: not widget.job.running, timeout=timeout)
    assert widget.job.last_error is None, widget.job.last_error


def shot(viewer, widget, artifact_dir, name, qtbot):
    from qtpy.QtWidgets import QDockWidget

    dock = widget
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    dock.raise_()  # its tab in the dock area
    qtbot.wait(100)
    widget.grab().save(str(artifact_dir / f"widget_{name}.png"))
    viewer.screenshot(str(artifact_dir / f"viewer_{name}.png"), canvas_only=False)


def tiny_translator(tmp_path, variant="organ-attention"):
    """A 2-iteration translator (Organ Attention unless told) in ``tmp_path/tr``, trained on phantom data in ``tmp_path/d``."""
    from napari_uda.translate.training import train_translator
    from napari_uda.translate.translator import TranslatorConfig

    write_phantom_dataset(tmp_path / "d", {"ct": 1, "t2wi": 1}, seed=2, shape=(12, 32, 32))
    cfg = TranslatorConfig(modality="T2WI", variant=variant, size=32, iterations=2, ngf=8, ndf=8, n_blocks=2,
                           s_pretrain_iterations=1)
    train_translator(cfg, [tmp_path / "d/ct/images/ct_000.nii.gz"], [tmp_path / "d/ct/labels/ct_000.nii.gz"],
                     [tmp_path / "d/t2wi/images/t2wi_000.nii.gz"], tmp_path / "tr", device="cpu")


def add_volume(viewer, path, name):
    data, kwargs, kind = volume_to_layer_data(read_volume(path), name)
    return getattr(viewer, f"add_{kind}")(data, **kwargs)


def test_widgets_end_to_end(make_napari_viewer, qtbot, data, artifact_dir, errors):
    from napari_uda.napari.widgets.consistency import ConsistencyWidget
    from napari_uda.napari.widgets.review import LABEL_LAYER, ReviewWidget
    from napari_uda.napari.widgets.segmenter import SegmenterWidget
    from napari_uda.napari.widgets.selftrain import SelfTrainingWidget
    from napari_uda.napari.widgets.translator import TranslatorWidget
    from napari_uda.napari.widgets.workspace import WorkspaceWidget

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1850, 1150)
    d = data / "data"
    # --- workspace --------------------------------------------------------------------------------
    wsw = WorkspaceWidget(viewer)
    viewer.window.add_dock_widget(wsw, name="Workspace", tabify=True)
    wsw.create_clicked()
    assert errors == ["a new workspace needs its folder, the CT images and labels and the target scans"]
    wsw.folder.set_path(data / "ws")
    for field, sub in ((wsw.source_images, "ct/images"), (wsw.source_labels, "ct/labels"), (wsw.target_images, "t2wi/images")):
        field.set_path(d / sub)
    wsw.create_clicked()
    assert (data / "ws" / "workspace.json").exists() and wsw.link.path == (data / "ws").resolve()
    assert wsw.table.rowCount() >= 4 and wsw.table.item(1, 1).text() == "T2WI"
    shot(viewer, wsw, artifact_dir, "workspace", qtbot)

    # --- translator: training in a child process with live preview, then translation ---------------
    trw = TranslatorWidget(viewer)
    viewer.window.add_dock_widget(trw, name="Translator", tabify=True)
    assert trw.modality.currentText() == "T2WI"
    trw.budget.setCurrentText("tiny")
    trw.iterations.setValue(20)
    trw.device.setCurrentText("cpu")
    trw.train_clicked()
    wait_job(qtbot, trw)
    assert (data / "ws/translators/organ-attention/translator.safetensors").exists() and trw.translator is not None
    assert trw.losses.series and not trw.thumbs[1].pixmap().isNull() and not trw.thumbs[2].pixmap().isNull()
    ct = add_volume(viewer, d / "ct/images/ct_000.nii.gz", "ct_000")
    viewer.layers.selection.active = ct
    trw.translate_clicked()
    wait_job(qtbot, trw)
    translated, attention = viewer.layers["ct_000 -> T2WI"], viewer.layers["ct_000 attention"]
    np.testing.assert_allclose(translated.scale, ct.scale)
    np.testing.assert_allclose(attention.translate, ct.translate)
    assert attention.colormap.name == "magma" and 0 <= attention.data.min() and attention.data.max() <= 1
    trw.grid.setChecked(True)
    assert viewer.canvas.grid.enabled
    shot(viewer, trw, artifact_dir, "translator", qtbot)
    trw.grid.setChecked(False)

    # --- segmenter: folds trained on translated CT, inference with per-fold and disagreement layers --
    sgw = SegmenterWidget(viewer)
    viewer.window.add_dock_widget(sgw, name="Segmenter", tabify=True)
    sgw.segment_clicked()
    assert errors[-1].startswith("choose a trained model")
    sgw.budget.setCurrentText("tiny")
    sgw.device.setCurrentText("cpu")
    sgw.train_clicked()
    wait_job(qtbot, sgw)
    assert sgw.models.currentText() == "organ_attention" and sgw.model.path().name.startswith("nnUNetTrainer_UDA_tiny")
    mri = add_volume(viewer, d / "t2wi/images/t2wi_000.nii.gz", "t2wi_000")
    viewer.layers.selection.active = mri
    sgw.per_fold.setChecked(True)
    sgw.segment_clicked()
    wait_job(qtbot, sgw)
    organs = viewer.layers["t2wi_000 organs"]
    assert organs._type_string == "labels" and organs.data.shape == mri.data.shape
    np.testing.assert_allclose(organs.scale, mri.scale)
    assert "t2wi_000 fold 0" in viewer.layers and "t2wi_000 fold 1" in viewer.layers
    assert set(np.unique(viewer.layers["t2wi_000 fold disagreement"].data)) <= {0, 1}
    assert "2 fold(s)" in sgw.stats.text()
    sgw.pseudo_label_clicked()
    wait_job(qtbot, sgw)
    assert "3 case(s) scored" in sgw.stats.text()
    shot(viewer, sgw, artifact_dir, "segmenter", qtbot)

    # --- fold consistency ---------------------------------------------------------------------------
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    cw = ConsistencyWidget(viewer)
    viewer.window.add_dock_widget(cw, name="Fold consistency", tabify=True)
    assert cw.table.rowCount() == 3 and cw.table.columnCount() == 4 + 13
    assert len(cw.chart.bars) == 13 and all(0 <= v <= 1 for _, v, _ in cw.chart.bars)
    cw.table.sortItems(1, Qt.DescendingOrder)
    scores = [float(cw.table.item(i, 1).data(0)) for i in range(3)]
    assert scores == sorted(scores, reverse=True)
    case = cw.table.item(0, 0).text()
    cw._clicked(0, 0)
    wait_job(qtbot, cw)
    assert {case, f"{case} fused", f"{case} fold disagreement"} <= {layer.name for layer in viewer.layers}
    shot(viewer, cw, artifact_dir, "consistency", qtbot)

    # --- review: accept (shortcut), edit then accept, reject, undo ---------------------------------------
    rw = ReviewWidget(viewer)
    viewer.window.add_dock_widget(rw, name="Review", tabify=True)
    rw.reviewer.setText("ana")
    wait_job(qtbot, rw)
    assert rw.queue.count() == 3 and rw.progress.text().startswith("0 of 3 decided")
    first = rw.current.case
    rw.act("accept")
    wait_job(qtbot, rw)
    second = rw.current.case
    assert second != first
    layer = viewer.layers[LABEL_LAYER]
    # the reviewer repaints the liver: a strict-majority pseudo-label of tiny-budget folds may hold no liver
    # at all, so erasing alone would not always change it
    layer.data[layer.data == 1] = 0
    layer.data[:, :4, :4] = 1
    layer.refresh()
    edited = layer.data.copy()
    rw.note.setText("liver was wrong")
    assert rw.decide("accept") == "edited"
    wait_job(qtbot, rw)
    third = rw.current.case
    rw.decide("reject")
    rw.decide("undo")
    assert rw.progress.text().startswith("2 of 3 decided")
    with ReviewStore.for_workspace(data / "ws") as store:
        assert store.state(first)[0] == "accepted" and store.state(third)[0] == "not reviewed"
        state, decision = store.state(second)
        assert state == "edited" and decision.note == "liver was wrong" and decision.reviewer == "ana"
        assert decision.label_hash == label_hash(edited) == label_hash(read_volume(decision.label_path).array)
    rw.reviewer.setText("")
    rw.act("reject")
    assert errors[-1] == "a decision needs a reviewer name"
    shot(viewer, rw, artifact_dir, "review", qtbot)

    # --- self-training: a round in a child process, then comparison with evaluation -------------------
    stw = SelfTrainingWidget(viewer)
    viewer.window.add_dock_widget(stw, name="Self-training", tabify=True)
    assert not stw.auto.isChecked()
    stw.budget.setCurrentText("tiny")
    stw.device.setCurrentText("cpu")
    stw.rounds.setValue(1)
    stw.start_clicked()
    wait_job(qtbot, stw, timeout=400_000)
    stages = [stw.table.item(i, 0).text() for i in range(stw.table.rowCount())]
    assert stages == ["organ_attention", "self_training_r1"]
    stw.labels.set_path(d / "t2wi/labels")
    stw.evaluate_clicked()
    wait_job(qtbot, stw)
    dsc = [float(stw.table.item(i, 4).data(0)) for i in range(stw.table.rowCount())]
    assert all(0 <= v <= 1 for v in dsc)
    assert int(stw.table.item(1, 1).data(0)) == 2  # the two accepted cases trained round 1
    shot(viewer, stw, artifact_dir, "selftrain", qtbot)

    # --- reopening the workspace in a new session restores it ----------------------------------------------
    viewer2 = make_napari_viewer()
    again = WorkspaceWidget(viewer2, workspace=data / "ws")
    rows = {again.table.item(i, 0).text(): again.table.item(i, 1).text() for i in range(again.table.rowCount())}
    assert rows["round 1"] == "2 accepted pseudo-labels, next selected by consistency" and "model self_training_r1" in rows
    assert Workspace.open(data / "ws").manifest["stages"]["self_training_r1"]["status"] == "done"


def test_loaded_translator_previews_the_ct_in_the_viewer(make_napari_viewer_proxy, qtbot, tmp_path, errors):
    """Loading a translator (a model folder's works too) shows CT, translation and attention in the
    preview panel for the CT in the viewer, off the UI thread, without adding layers."""
    from napari_uda.napari.widgets.translator import TranslatorWidget

    tiny_translator(tmp_path)
    viewer = make_napari_viewer_proxy(show=True)
    widget = TranslatorWidget(viewer)
    add_volume(viewer, tmp_path / "d/ct/images/ct_000.nii.gz", "ct_000")
    widget.folder.set_path(tmp_path / "tr")
    widget.device.setCurrentText("cpu")
    assert all(t.pixmap() is None or t.pixmap().isNull() for t in widget.thumbs)
    widget.load_clicked()
    wait_job(qtbot, widget)
    assert not errors and all(not t.pixmap().isNull() for t in widget.thumbs)
    assert [layer.name for layer in viewer.layers] == ["ct_000"]


def test_tanq_translates_a_ct_layer_by_the_labels_layer_on_its_grid(make_napari_viewer_proxy, qtbot, tmp_path, errors):
    """A TANQ translator in the Translator widget takes its regions from the Labels layer on the CT's
    grid: the layer it adds is ``translate_volume`` with those labels, and the job says whose."""
    from napari_uda.napari.widgets.translator import TranslatorWidget
    from napari_uda.translate.translator import load_translator, translate_volume

    tiny_translator(tmp_path, "tanq")
    viewer = make_napari_viewer_proxy()
    widget = TranslatorWidget(viewer)
    add_volume(viewer, tmp_path / "d/ct/labels/ct_000.nii.gz", "ct_000 organs")
    ct = add_volume(viewer, tmp_path / "d/ct/images/ct_000.nii.gz", "ct_000")
    widget.folder.set_path(tmp_path / "tr")
    widget.device.setCurrentText("cpu")
    viewer.layers.selection.active = ct
    widget.translate_clicked()
    assert "by the organs of 'ct_000 organs'" in widget.job.status.text()
    wait_job(qtbot, widget)
    assert not errors
    tr = load_translator(tmp_path / "tr", "cpu")
    expected, _ = translate_volume(tr, read_volume(tmp_path / "d/ct/images/ct_000.nii.gz"),
                                   labels=read_volume(tmp_path / "d/ct/labels/ct_000.nii.gz"))
    np.testing.assert_allclose(viewer.layers["ct_000 -> T2WI"].data, expected.array, rtol=1e-5, atol=1e-3)


def test_dar_translates_a_ct_layer_once_per_style_cluster(make_napari_viewer_proxy, qtbot, tmp_path, errors):
    """A DAR translator adds one translation per style cluster and previews each in its own thumbnail."""
    from napari_uda.napari.widgets.translator import TranslatorWidget

    tiny_translator(tmp_path, "dar")
    viewer = make_napari_viewer_proxy()
    widget = TranslatorWidget(viewer)
    ct = add_volume(viewer, tmp_path / "d/ct/images/ct_000.nii.gz", "ct_000")
    widget.folder.set_path(tmp_path / "tr")
    widget.device.setCurrentText("cpu")
    assert not any(t.isVisibleTo(widget) for t in widget.style_thumbs)
    viewer.layers.selection.active = ct
    widget.translate_clicked()
    wait_job(qtbot, widget)
    assert not errors
    assert [layer.name for layer in viewer.layers][1:] == [f"ct_000 -> T2WI style {k}" for k in range(5)]
    assert all(t.isVisibleTo(widget) and not t.pixmap().isNull() for t in widget.style_thumbs)


def test_translation_runs_off_the_ui_thread(make_napari_viewer_proxy, qtbot, tmp_path, monkeypatch):
    """While a translation is held mid-volume in its worker, the UI thread keeps serving Qt events
    (timer ticks); released, it finishes and adds its layers. How long the UI thread may stall
    under load is measured in ``benchmarks/bench_ui_responsiveness.py``, not asserted here."""
    import threading

    import napari_uda.translate.translator as translator_module
    from napari_uda.napari.widgets.translator import TranslatorWidget

    tiny_translator(tmp_path)
    viewer = make_napari_viewer_proxy()
    widget = TranslatorWidget(viewer)
    widget.folder.set_path(tmp_path / "tr")
    widget.device.setCurrentText("cpu")
    widget.load_clicked()
    wait_job(qtbot, widget)
    held, release, threads = threading.Event(), threading.Event(), []
    real = translator_module.translate_volume

    def held_translation(*args, **kwargs):
        threads.append(threading.current_thread())
        held.set()
        assert release.wait(60), "the test never released the translation"
        return real(*args, **kwargs)

    monkeypatch.setattr(translator_module, "translate_volume", held_translation)
    add_volume(viewer, tmp_path / "d/ct/images/ct_000.nii.gz", "ct_000")
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(held.is_set()))
    timer.start(10)
    widget.translate_clicked()
    qtbot.waitUntil(lambda: sum(ticks) >= 5, timeout=60_000)  # the UI thread ticks while the worker is held
    release.set()
    wait_job(qtbot, widget, timeout=120_000)
    timer.stop()
    assert threads and threads[0] is not threading.main_thread()
    assert "ct_000 -> T2WI" in viewer.layers


def test_cancel_stops_translator_training(make_napari_viewer_proxy, qtbot, data, errors):
    """Cancel terminates the training child process; its checkpoint lets Train resume."""
    from napari_uda.napari.widgets._session import link_for
    from napari_uda.napari.widgets.translator import TranslatorWidget

    viewer = make_napari_viewer_proxy()
    d = data / "data"
    link_for(viewer).set(Workspace.create(data / "ws_cancel", d / "ct/images", d / "ct/labels", d / "t2wi/images", "T2WI"))
    widget = TranslatorWidget(viewer)
    widget.budget.setCurrentText("tiny")
    widget.iterations.setValue(100_000)
    widget.device.setCurrentText("cpu")
    widget.train_clicked()
    qtbot.waitUntil(lambda: widget.job.bar.value() >= 10, timeout=120_000)
    widget.job.cancel()
    qtbot.waitUntil(lambda: not widget.job.running, timeout=60_000)
    assert "cancelled" in widget.job.status.text()
    assert (data / "ws_cancel/translators/organ-attention/train_state.pt").exists()
    import subprocess
    out = subprocess.run(["pgrep", "-f", "ws_cancel/translators"], capture_output=True, text=True)
    assert out.stdout.strip() == "", "the training process outlived Cancel"


def test_the_selftraining_widget_transfers_labels_into_the_queue_off_the_ui_thread(make_napari_viewer_proxy, qtbot,
                                                                                  data, tmp_path, errors):
    """ASIT's label transfer from the Self-training widget: the other sub-domain's scan of a patient (here
    the same scan, so the registration is close to the identity) brings its label into the queue."""
    import shutil

    from napari_uda.napari.widgets._session import link_for
    from napari_uda.napari.widgets.selftrain import SelfTrainingWidget
    from napari_uda.pseudo.filters import mean_dice

    viewer = make_napari_viewer_proxy()
    d = data / "data"
    ws = Workspace.create(tmp_path / "ws", d / "ct/images", d / "ct/labels", d / "t2wi/images", "T2WI")
    for folder, src in (("other", "images"), ("other_labels", "labels")):
        (tmp_path / folder).mkdir()
        shutil.copy(d / "t2wi" / src / "t2wi_001.nii.gz", tmp_path / folder / "t2wi_001.nii.gz")
    link_for(viewer).set(ws)
    widget = SelfTrainingWidget(viewer)
    widget.transfer_rounds.setChecked(True)  # multi-domain matching in the rounds: a workspace to transfer from
    widget.start_clicked()
    assert errors[-1] == "choose the other sub-domain's workspace whose final labels the rounds transfer"
    assert widget.job.worker is None
    ws.set_pipeline(PipelineRecord("organ-attention", "tiny", "organ_attention", transfer_from=str(tmp_path / "w_t1"),
                                   transfer_patient="^(t2wi_[0-9]+)"))
    widget.transfer_rounds.setChecked(False)
    widget.refresh()  # shows what the workspace recorded, and the rounds go on with it
    assert widget.transfer_rounds.isChecked() and widget.other_workspace.path() == tmp_path / "w_t1"
    assert widget.transfer() == TransferFrom(str(tmp_path / "w_t1"), "name", "^(t2wi_[0-9]+)")
    widget.transfer_rounds.setChecked(False)
    assert widget.transfer() == TransferFrom(None)
    widget.transfer_clicked()
    assert errors[-1] == "choose the other sub-domain's scans and their labels"
    widget.other_scans.set_path(tmp_path / "other")
    widget.other_labels.set_path(tmp_path / "other_labels")
    widget.transfer_clicked()
    wait_job(qtbot, widget, timeout=60_000)
    with ReviewStore.for_workspace(ws.root) as store:
        (row,) = [r for r in store.queue("T2WI") if r.label is not None]
    assert row.case == "t2wi_001" and [f.name for f in row.filters] == ["transferred"]
    truth = read_volume(d / "t2wi/labels/t2wi_001.nii.gz").array
    assert mean_dice(read_volume(row.label).array, truth) >= 0.9
    for folder in ("other", "other_labels"):  # names that say nothing: volume matching finds the patient
        (tmp_path / folder / "t2wi_001.nii.gz").rename(tmp_path / folder / "scan_a.nii.gz")
    widget.pair_by.setCurrentText("volume")
    assert not widget.patient.isEnabled()
    widget.transfer_clicked()
    wait_job(qtbot, widget, timeout=60_000)
    with ReviewStore.for_workspace(ws.root) as store:
        (row,) = [r for r in store.queue("T2WI") if r.label is not None]
    assert row.case == "t2wi_001" and [f.name for f in row.filters] == ["transferred"]  # the newer transfer replaced it
    assert row.filters[0].reason.startswith("from scan_a.nii.gz (volume matching, similarity")


def test_review_only_session_with_keyboard_shortcuts(make_napari_viewer, qtbot, tmp_path, errors):
    """A review-only session: a workspace with scored pseudo-labels, no model, decisions by keyboard."""
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_uda.napari.widgets.consistency import ConsistencyWidget
    from napari_uda.napari.widgets.review import ReviewWidget
    from napari_uda.napari.widgets.workspace import WorkspaceWidget
    from napari_uda.pseudo.filters import FilterResult

    write_phantom_dataset(tmp_path / "d", {"ct": 2, "t2wi": 2}, seed=5, shape=(12, 32, 32))
    ws = Workspace.create(tmp_path / "ws", tmp_path / "d/ct/images", tmp_path / "d/ct/labels", tmp_path / "d/t2wi/images", "T2WI")
    with ReviewStore.for_workspace(ws.root) as store:
        mid = store.add_model("r0")
        for i, path in enumerate(ws.files("target_images")):
            case = path.name[:-7]
            store.add_case(case, path, "T2WI")
            store.add_prediction(case, mid, tmp_path / f"d/t2wi/labels/{case}.nii.gz", {1: 0.9 - i / 10, 2: 0.5}, 0.7 - i / 10,
                                 [FilterResult("organs_present", i == 0, "all present" if i == 0 else "missing: spleen")])
    viewer = make_napari_viewer(show=True)
    WorkspaceWidget(viewer, workspace=ws.root)
    consistency = ConsistencyWidget(viewer)
    assert consistency.table.rowCount() == 2 and consistency.table.item(1, 2).text() == "1 failed"
    assert "missing: spleen" in consistency.table.item(1, 2).toolTip()
    rw = ReviewWidget(viewer)
    viewer.window.add_dock_widget(rw, name="Review", tabify=True)
    rw.reviewer.setText("ana")
    wait_job(qtbot, rw)
    assert rw.current.case == "t2wi_000" and rw.reasons.text() == "passed every filter"
    QApplication.setActiveWindow(viewer.window._qt_window)  # no window manager under Xvfb to do it
    qtbot.waitUntil(lambda: QApplication.activeWindow() is viewer.window._qt_window, timeout=5000)
    QTest.keyClick(rw, Qt.Key_A, Qt.ShiftModifier)
    wait_job(qtbot, rw)
    assert rw.current.case == "t2wi_001" and rw.reasons.text() == "organs_present: missing: spleen"
    QTest.keyClick(rw, Qt.Key_R, Qt.ShiftModifier)
    QTest.keyClick(rw, Qt.Key_U, Qt.ShiftModifier)
    QTest.keyClick(rw, Qt.Key_P, Qt.ShiftModifier)
    wait_job(qtbot, rw)
    assert rw.current.case == "t2wi_000"
    with ReviewStore.for_workspace(ws.root) as store:
        assert store.state("t2wi_000")[0] == "accepted" and store.state("t2wi_001")[0] == "not reviewed"
        assert [d.action for d in store.history("t2wi_001")] == ["reject", "undo"]
    assert not errors


def test_job_panel_never_animates_and_stops_with_its_viewer(qtbot):
    """A waiting job shows a determinate bar (a busy one repaints the window continuously, a CPU core
    under software OpenGL); a panel deleted while its job runs stops the job, whose end touches no widget."""
    import threading
    import time

    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication, QWidget

    from napari_uda.napari.widgets._jobs import JobPanel

    parent = QWidget()
    panel = JobPanel(parent)
    stopped = threading.Event()

    def work(report, should_stop):
        while not should_stop():
            time.sleep(0.02)
        stopped.set()

    panel.start("waiting", work)
    assert panel.bar.maximum() > panel.bar.minimum()  # determinate before any progress event
    parent.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=10_000)
    assert stopped.is_set()


def test_the_selftraining_command_carries_selection_tta_and_coarse_to_fine_and_the_cli_accepts_it(tmp_path):
    from types import SimpleNamespace

    from napari_uda.cli.app import build_parser
    from napari_uda.napari.widgets.selftrain import selftrain_command

    ws = SimpleNamespace(root=tmp_path / "ws")
    cmd = selftrain_command(ws, 2, "small", True, "cpu", select="uncertainty", tta=True)
    args = build_parser().parse_args(cmd[3:])  # after python -m napari_uda.cli
    assert (args.select, args.tta, args.rounds, args.auto_accept) == ("uncertainty", True, 2, True)
    args = build_parser().parse_args(selftrain_command(ws, 1, "tiny", False, "cpu", tta=False)[3:])
    assert args.tta is False and args.select is None
    default = build_parser().parse_args(selftrain_command(ws, 1, "tiny", False, "cpu")[3:])
    assert default.tta is None and default.coarse_to_fine is None
    c2f = build_parser().parse_args(selftrain_command(ws, 1, "tiny", False, "cpu", coarse_to_fine=True, margin_mm=7.5)[3:])
    assert (c2f.coarse_to_fine, c2f.margin_mm) == (True, 7.5)
    off = build_parser().parse_args(selftrain_command(ws, 1, "tiny", False, "cpu", coarse_to_fine=False)[3:])
    assert off.coarse_to_fine is False
    assert default.transfer_from is None and not default.no_transfer
    mdm = selftrain_command(ws, 1, "tiny", False, "cpu", transfer=TransferFrom("/w/t1", "name", "^(p[0-9]+)"))
    mdm = build_parser().parse_args(mdm[3:])
    assert (str(mdm.transfer_from), mdm.pair_by, mdm.patient, mdm.no_transfer) == ("/w/t1", "name", "^(p[0-9]+)", False)
    by_volume = build_parser().parse_args(selftrain_command(ws, 1, "tiny", False, "cpu",
                                                            transfer=TransferFrom("/w/t1", "volume"))[3:])
    assert (by_volume.pair_by, by_volume.patient) == ("volume", None)
    assert build_parser().parse_args(selftrain_command(ws, 1, "tiny", False, "cpu", transfer=TransferFrom(None))[3:]).no_transfer


def test_tables_show_an_unmeasured_value_as_an_empty_cell(qtbot):
    """A stage not yet evaluated (NaN DSC) or without scores reads as an empty cell, not "nan"."""
    from qtpy.QtWidgets import QTableWidget

    from napari_uda.napari.widgets._common import fill_table

    table = QTableWidget()
    qtbot.addWidget(table)
    fill_table(table, ["stage", "accepted cases", "mean case score", "DSC"], [["r1", 2, 0.81234, float("nan")]])
    assert [table.item(0, c).text() for c in range(4)] == ["r1", "2", "0.812", ""]
    assert table.item(0, 3).toolTip() == "not measured" and table.item(0, 2).toolTip() == ""
