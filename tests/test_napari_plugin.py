"""The plugin in a real napari viewer (under Xvfb): manifest, reader, writer, sample data, widgets, demo."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_uda.core.io import Geometry, Volume, read_volume, write_volume
from napari_uda.core.organs import ORGANS
from napari_uda.data.sample_data import sample_case_paths

pytestmark = pytest.mark.gui
PLUGIN = "napari-uda"


def test_manifest_valid_and_registered():
    res = subprocess.run([sys.executable, "-m", "npe2", "validate", PLUGIN], capture_output=True, encoding="utf-8", errors="replace")
    assert res.returncode == 0 and "valid" in res.stdout, res.stdout + res.stderr
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    names = {w.display_name for w in manifest.contributions.widgets}
    assert {"Phantom generator", "Volume info", "Workspace", "Translator", "Segmenter", "Fold consistency", "Review",
            "Self-training"} <= names
    assert {s.key for s in manifest.contributions.sample_data} == {"ct", "t2wi", "cv", "pet"}


def test_reader_gives_geometry_true_layers(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    image_path, label_path = sample_case_paths("ct")
    image = read_volume(image_path)
    [img_layer] = viewer.open(str(image_path), plugin=PLUGIN)
    [lab_layer] = viewer.open(str(label_path), plugin=PLUGIN)
    assert img_layer._type_string == "image" and lab_layer._type_string == "labels"
    np.testing.assert_allclose(img_layer.scale, image.spacing)
    np.testing.assert_allclose(img_layer.translate, image.origin)
    np.testing.assert_allclose(lab_layer.scale, image.spacing)
    assert Geometry.from_dict(img_layer.metadata["geometry"]) == image.geometry
    liver = ORGANS[0]
    np.testing.assert_allclose(lab_layer.colormap.map(np.array([1]))[0][:3], np.array(liver.color) / 255, atol=1e-6)
    assert list(lab_layer.features["organ"])[1] == "liver"


def test_reader_rotated_volume_gets_rotate(make_napari_viewer_proxy, tmp_path):
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("z", 20, degrees=True).as_matrix()
    path = write_volume(Volume(np.zeros((4, 5, 6), np.float32), Geometry((2, 1, 1), (0, 0, 0), tuple(map(tuple, rot)))),
                        tmp_path / "oblique.nii.gz")
    viewer = make_napari_viewer_proxy()
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_allclose(layer.rotate, rot, atol=1e-5)


def test_reader_error_is_a_notification(make_napari_viewer_proxy, tmp_path):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer_proxy()
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a volume")
    seen = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    with pytest.raises(Exception, match="broken.nii.gz"):
        viewer.open(str(bad), plugin=PLUGIN)
    assert any("broken.nii.gz" in m and "corrupt" in m for m in seen), seen


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_writer_keeps_source_geometry(make_napari_viewer_proxy, tmp_path, suffix):
    import napari

    viewer = make_napari_viewer_proxy()
    image_path, label_path = sample_case_paths("ct")
    [lab_layer] = viewer.open(str(label_path), plugin=PLUGIN)
    lab_layer.data[0, 0, 0] = 5  # an edit
    out = tmp_path / f"edited{suffix}"
    napari.save_layers(str(out), [lab_layer], plugin=PLUGIN)
    back, src = read_volume(out), read_volume(label_path)
    assert back.geometry.matches(src.geometry)
    assert back.array[0, 0, 0] == 5 and back.array.dtype == np.uint8
    [img_layer] = viewer.open(str(image_path), plugin=PLUGIN)
    napari.save_layers(str(tmp_path / f"img{suffix}"), [img_layer], plugin=PLUGIN)
    np.testing.assert_array_equal(read_volume(tmp_path / f"img{suffix}").array, read_volume(image_path).array)


def test_sample_data_in_viewer_with_screenshot(make_napari_viewer_proxy, artifact_dir, qtbot):
    viewer = make_napari_viewer_proxy(show=True)
    for key in ("ct", "t2wi", "cv", "pet"):
        viewer.open_sample(PLUGIN, key)
    assert len(viewer.layers) == 5  # CT, its organs, T2WI, C+V, PET
    for layer in viewer.layers:
        g = Geometry.from_dict(layer.metadata["geometry"])
        np.testing.assert_allclose(layer.scale, g.spacing)
        assert g.spacing[0] > g.spacing[1]
    viewer.canvas.grid.enabled = True
    ct = viewer.layers[0]
    viewer.dims.set_point(0, ct.translate[0] + ct.scale[0] * ct.data.shape[0] / 2)
    qtbot.wait(200)  # let Qt lay the canvas out, or the camera is fitted to a canvas of the wrong size
    viewer.reset_view()
    shot = viewer.screenshot(str(artifact_dir / "sample_data_grid.png"), canvas_only=True)
    # whole bodies framed on a dark background (84 % dark here); a canvas zoomed onto a few voxels
    # is about 30 % dark, a blank one 100 %
    brightness = shot[..., :3].max(axis=-1)
    assert 0.6 < (brightness < 30).mean() < 0.95 and (brightness > 100).mean() > 0.02


def test_phantom_widget_generates_layers(make_napari_viewer_proxy, qtbot):
    from napari_uda.napari.widgets.phantom import PhantomWidget

    viewer = make_napari_viewer_proxy()
    widget = PhantomWidget(viewer)
    widget.modality.setCurrentIndex([widget.modality.itemData(i) for i in range(widget.modality.count())].index("t2wi"))
    for box, v in zip(widget.shape, (12, 32, 32)):
        box.setValue(v)
    worker = widget.generate()
    assert not widget.button.isEnabled()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: len(viewer.layers) == 2, timeout=5000)
    image, labels = viewer.layers
    assert image.data.shape == (12, 32, 32) and labels._type_string == "labels"
    assert widget.button.isEnabled()


def test_plugin_widgets_share_the_viewers_workspace(make_napari_viewer_proxy, tmp_path):
    """napari gives each plugin widget its own proxy of the viewer; they must still share one workspace."""
    from napari_uda.core.workspace import Workspace
    from napari_uda.data.phantom import write_phantom_dataset

    write_phantom_dataset(tmp_path / "d", {"ct": 2, "t2wi": 1}, seed=3, shape=(8, 24, 24))
    ws = Workspace.create(tmp_path / "ws", tmp_path / "d/ct/images", tmp_path / "d/ct/labels", tmp_path / "d/t2wi/images", "T2WI")
    viewer = make_napari_viewer_proxy()
    _, workspace = viewer.window.add_plugin_dock_widget(PLUGIN, "Workspace")
    _, segmenter = viewer.window.add_plugin_dock_widget(PLUGIN, "Segmenter")
    assert workspace.viewer is not segmenter.viewer  # two proxies
    workspace.folder.set_path(ws.root)
    workspace.open_clicked()
    assert segmenter.link is workspace.link and segmenter.link.path == ws.root
    _, review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review")  # a widget opened later sees it too
    assert review.link.path == ws.root


def test_volume_info_widget_follows_selection(make_napari_viewer_proxy):
    from napari_uda.napari.widgets.volume_info import VolumeInfoWidget

    viewer = make_napari_viewer_proxy()
    widget = VolumeInfoWidget(viewer)
    viewer.open_sample(PLUGIN, "ct")
    viewer.layers.selection.active = viewer.layers[1]
    text = widget.text.toPlainText()
    assert "spacing:" in text and "organ volumes" in text and "liver" in text
    viewer.layers.selection.active = viewer.layers[0]
    assert "organ volumes" not in widget.text.toPlainText()


def test_demo_headless_writes_screenshots_and_report(tmp_path):
    # the pipeline part of the demo is the tiny pipeline of tests/test_pipeline.py; here the viewer part
    res = subprocess.run([sys.executable, "-m", "napari_uda.cli", "demo", "--headless", "--skip-pipeline", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    assert "liver" in report and "ct_000_organs" in report
    for name in ("viewer", "widget_volume_info", "widget_phantom_generator", "widget_workspace", "widget_translator",
                 "widget_segmenter", "widget_fold_consistency", "widget_review", "widget_self_training"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5000, name
