"""Batch prediction on a Dask cluster: one task per (case, fold) and one fusion task per case.

Each worker holds the folds it has loaded (:class:`ModelCache`, a worker plugin), so a model is
loaded once per worker, not once per case; CUDA tasks ask for a ``GPU`` resource. Tasks write their
files atomically (a retried task, after a worker died, rewrites whole files); only the client writes
``predictions.json``. The files are those of the serial :func:`~napari_uda.segment.prediction.predict_folds`:
the same code predicts a case with a fold either way.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_uda.cluster.engine import follow, task_resources
from napari_uda.core.files import stem_of
from napari_uda.core.io import Geometry, read_scan
from napari_uda.core.jobs import Progress, StopFlag
from napari_uda.segment.prediction import FoldPredictor, check_model, fuse_case, predict_folds, write_records
from napari_uda.segment.prediction_folder import PredictionFolder

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # no Dask installed: serial prediction only
    WorkerPlugin = object  # type: ignore[misc,assignment]


class ModelCache(WorkerPlugin):
    """On a worker: the folds it has loaded, by (model, fold, device, mirroring); torch limited to
    the worker's threads, so worker processes do not oversubscribe the cores; the workers of a local
    cluster on a machine with several GPUs take one each (a remote worker sees the GPU its
    ``CUDA_VISIBLE_DEVICES`` gives it)."""

    name = "napari-uda-models"

    def __init__(self) -> None:
        self.models: dict[tuple[str, int, str, bool], FoldPredictor] = {}
        self.gpu = 0

    def setup(self, worker: Any) -> None:
        import torch

        torch.set_num_threads(max(1, worker.state.nthreads))
        if isinstance(worker.name, int) and torch.cuda.is_available():  # a local cluster's workers: one GPU each
            self.gpu = worker.name % torch.cuda.device_count()

    def get(self, model_dir: str, fold: int, device: str, mirroring: bool) -> FoldPredictor:
        """The fold, loaded on first use; plain ``cuda`` is this worker's GPU."""
        device = f"cuda:{self.gpu}" if device == "cuda" else device
        key = (model_dir, fold, device, mirroring)
        if key not in self.models:
            self.models[key] = FoldPredictor(model_dir, fold, device, mirroring)
        return self.models[key]

    def teardown(self, worker: Any) -> None:
        for predictor in self.models.values():
            predictor.close()
        self.models.clear()


def predict_task(model_dir: str, fold: int, path: str, out: str, device: str, mirroring: bool,
                 probabilities: bool) -> tuple[dict[str, Any], Geometry]:
    """On a worker: predict one case with one fold into ``out``; returns the run record and the
    input's geometry (what the fusion task needs, so it does not read the scan again)."""
    from distributed import get_worker

    predictor = get_worker().plugins[ModelCache.name].get(model_dir, fold, device, mirroring)
    vol = read_scan(path)
    return predictor.predict(vol, PredictionFolder(out), stem_of(path), probabilities), vol.geometry


def fuse_task(out: str, case: str, folds: list[int], probabilities: bool,
              *fold_runs: tuple[dict[str, Any], Geometry]) -> str:
    """On a worker, once the case's folds are done: the fused labels of one case."""
    return str(fuse_case(PredictionFolder(out), case, folds, fold_runs[0][1], probabilities))


def predict_folds_on(client: Any, model_dir: str | Path, inputs: Sequence[Path], out: str | Path,
                     folds: Sequence[int] | None = None, device: str = "cpu", save_probabilities_files: bool = True,
                     mirroring: bool = False, progress: Progress | None = None,
                     should_stop: StopFlag | None = None) -> list[dict[str, Any]]:
    """:func:`~napari_uda.segment.prediction.predict_folds` on ``client``'s cluster (None: serially
    here). Progress counts finished tasks; a stop cancels the cluster's tasks and raises :class:`Cancelled`."""
    if client is None:
        return predict_folds(model_dir, inputs, out, folds, device, save_probabilities_files, mirroring,
                             progress, should_stop)
    model_dir, folds = check_model(model_dir, folds)
    resources = task_resources(device, client)
    client.register_plugin(ModelCache(), name=ModelCache.name)
    runs, fused, token = {}, {}, uuid.uuid4().hex[:12]
    for path in inputs:
        case = stem_of(path)
        for fold in folds:
            runs[case, fold] = client.submit(predict_task, str(model_dir), fold, str(path), str(out), device, mirroring,
                                             save_probabilities_files, resources=resources, pure=False,
                                             key=f"napari-uda-predict-{token}-{case}-fold{fold}")
        fused[case] = client.submit(fuse_task, str(out), case, folds, save_probabilities_files,
                                    *[runs[case, f] for f in folds], pure=False,
                                    key=f"napari-uda-fuse-{token}-{case}")
    follow(client, "predict", {**{f"{c} fold {f}": fut for (c, f), fut in runs.items()},
                     **{f"{c} fused": fut for c, fut in fused.items()}}, progress, should_stop)
    records = [{"case": stem_of(p), "input": str(p),
                "folds": {str(f): runs[stem_of(p), f].result()[0] for f in folds}, "fused": fused[stem_of(p)].result()}
               for p in inputs]
    return write_records(PredictionFolder(out), records)
