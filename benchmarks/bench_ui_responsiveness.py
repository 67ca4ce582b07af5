"""How long napari's UI thread stalls while the widgets translate and segment a volume.

Run:  xvfb-run -a .venv/bin/python benchmarks/bench_ui_responsiveness.py [--shape 160 256 256] [--out FILE.json]

A Qt timer ticks every 10 ms on the UI thread while (1) the Translator widget translates a
160x256x256 CT volume (random values) with a small translator and (2) the Segmenter widget
predicts a sample T2WI with the two folds of the bundled model; the largest gap between ticks is
how long the UI was frozen. The tests only check that the work runs off the UI thread (a timing
bound there fails at random on a busy machine); the figures belong here, measured with nothing
else running.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "sample_data" / "models" / "t2wi_organ_attention"
SAMPLE_T2WI = ROOT / "sample_data" / "t2wi" / "images" / "t2wi_000.nii.gz"


def tiny_translator(root: Path) -> Path:
    """A 2-iteration Organ Attention translator in ``root/tr`` (the figure is about threads, not quality)."""
    from napari_uda.data.phantom import write_phantom_dataset
    from napari_uda.translate.training import train_translator
    from napari_uda.translate.translator import TranslatorConfig

    write_phantom_dataset(root / "d", {"ct": 1, "t2wi": 1}, seed=2, shape=(12, 32, 32))
    cfg = TranslatorConfig(modality="T2WI", variant="organ-attention", size=32, iterations=2, ngf=8, ndf=8, n_blocks=2,
                           s_pretrain_iterations=1)
    train_translator(cfg, [root / "d/ct/images/ct_000.nii.gz"], [root / "d/ct/labels/ct_000.nii.gz"],
                     [root / "d/t2wi/images/t2wi_000.nii.gz"], root / "tr", device="cpu")
    return root / "tr"


def gaps_during(widget, start: Callable[[], None]) -> dict[str, float]:
    """Largest and 99th-percentile gap (ms) between 10 ms timer ticks while ``widget``'s job runs and
    for 2 s after (its done-callback, which adds the layers, runs on the UI thread)."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    t0 = time.perf_counter()
    start()
    while widget.job.running:
        QApplication.processEvents()
        time.sleep(0.001)
    busy = time.perf_counter() - t0
    settle = time.perf_counter() + 2.0  # the job's done-callback (adding layers) runs on the UI thread after it
    while time.perf_counter() < settle:
        QApplication.processEvents()
        time.sleep(0.001)
    timer.stop()
    assert widget.job.last_error is None, widget.job.last_error
    gaps = np.diff(ticks) * 1000
    return {"busy_s": round(busy, 2), "max_gap_ms": round(float(gaps.max()), 1),
            "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1), "ticks": len(ticks)}


def measure(shape: tuple[int, int, int]) -> dict[str, dict[str, float]]:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_uda.core.io import Geometry, Volume, read_volume
    from napari_uda.napari.layers import volume_to_layer_data
    from napari_uda.napari.widgets.segmenter import SegmenterWidget
    from napari_uda.napari.widgets.translator import TranslatorWidget

    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_translator(Path(tmp))
        viewer = napari.Viewer(show=True)
        translator = TranslatorWidget(viewer)
        translator.folder.set_path(folder)
        translator.device.setCurrentText("cpu")
        translator.load_clicked()
        while translator.job.running:
            QApplication.processEvents()
        big = np.random.default_rng(0).normal(0, 300, shape).astype(np.float32)
        data, kwargs, _ = volume_to_layer_data(Volume(big, Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0)), "CT"), "big", False)
        viewer.layers.selection.active = viewer.add_image(data, **kwargs)
        result = {"translation": gaps_during(translator, translator.translate_clicked)}
        segmenter = SegmenterWidget(viewer)
        segmenter.model.set_path(BUNDLED)  # a model folder: its segmenter/ part is used
        segmenter.device.setCurrentText("cpu")
        data, kwargs, _ = volume_to_layer_data(read_volume(SAMPLE_T2WI), "t2wi_000", False)
        viewer.layers.selection.active = viewer.add_image(data, **kwargs)
        result["inference (2 folds)"] = gaps_during(segmenter, segmenter.segment_clicked)
        viewer.close()
    return {"shape_zyx": list(shape), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    result = measure(tuple(args.shape))
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
