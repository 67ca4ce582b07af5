"""Prediction with a model's folds: one fold loaded once (:class:`FoldPredictor`) predicts a case
into a prediction folder, the folds' outputs of a case are fused (:func:`fuse_case`), and
:func:`predict_folds` does all of it for a list of scans in this process.

The same pieces run as tasks on a Dask cluster (:mod:`napari_uda.cluster.predict`): a case and a
fold give the same files whichever engine ran them. Every file is written to a temporary name
and renamed into place, so a stopped or retried task never leaves half a file.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_uda.core.efficiency import RunMeter
from napari_uda.core.errors import UdaError
from napari_uda.core.files import read_json, stem_of
from napari_uda.core.io import Geometry, Volume, read_scan, read_volume, write_volume
from napari_uda.core.jobs import Progress, StopFlag, check_stop, emit
from napari_uda.core.orientation import channels_from_canonical, from_canonical, to_canonical
from napari_uda.segment.ensemble import fuse_probabilities, majority_vote
from napari_uda.segment.mirroring import mirrored_mean, volume_axes
from napari_uda.segment.nnunet_model import FOLD_WEIGHTS, check_fold, load_fold, pickle_hint, trained_folds
from napari_uda.segment.prediction_folder import PredictionFolder
from napari_uda.segment.probabilities import save_probabilities


def check_model(model_dir: str | Path, folds: Sequence[int] | None) -> tuple[Path, list[int]]:
    """The nnU-Net model folder (an exported model folder's ``segmenter/``) and the folds to predict
    with (default: every trained one), every fold's files checked before anything is written."""
    from napari_uda.core.model_folder import SEGMENTER, part_folder

    model_dir = part_folder(model_dir, SEGMENTER)
    folds = list(trained_folds(model_dir) if folds is None else folds)
    if not folds:
        raise UdaError(f"{model_dir}: no trained folds ({FOLD_WEIGHTS}) to predict with"
                       + pickle_hint(model_dir, "fold_*/*.pth"))
    for fold in folds:
        check_fold(model_dir, fold)
    n_channels = len(read_json(model_dir / "dataset.json")["channel_names"])
    if n_channels != 1:
        raise UdaError(f"{model_dir}: the model expects {n_channels} input channels; napari-uda predicts single-channel volumes")
    return model_dir, folds


class FoldPredictor:
    """One fold of a model, loaded once (network built from the plans, safetensors weights: nothing
    unpickled) into nnU-Net's predictor on ``device``. With ``mirroring`` it predicts every flip of
    the fold's mirror axes and averages them flipped back (:mod:`~napari_uda.segment.mirroring`: a
    mirrored scan then predicts the mirrored result exactly, which nnU-Net's own per-tile mirroring
    does not)."""

    def __init__(self, model_dir: str | Path, fold: int, device: str = "cpu", mirroring: bool = False) -> None:
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        self.fold, self.device = fold, torch.device(device)
        self.predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                         perform_everything_on_device=self.device.type == "cuda", device=self.device,
                                         verbose=False, allow_tqdm=False)
        m = load_fold(model_dir, fold)
        self.predictor.manual_initialization(m["network"], m["plans_manager"], m["configuration_manager"], [m["state"]],
                                             m["dataset_json"], m["trainer"], m["mirror_axes"])
        patch_dims = len(m["configuration_manager"].patch_size)
        self.mirror_axes = volume_axes(m["mirror_axes"], patch_dims) if mirroring else ()

    def predict(self, vol: Volume, out: PredictionFolder, case: str, probabilities: bool = True) -> dict[str, Any]:
        """Predict ``vol`` (in the canonical orientation, back on its own axes) into ``out``'s
        ``fold_<k>/<case>.nii.gz`` (and ``.npz`` float16 probabilities); returns the run's time
        (and, on CUDA, GPU memory) record."""
        canon = to_canonical(vol)
        properties = {"spacing": list(canon.spacing)}

        def probabilities_of(array: np.ndarray) -> np.ndarray:  # (c, z, y, x) of (z, y, x)
            return self.predictor.predict_single_npy_array(array[None].astype(np.float32), properties, None, None,
                                                           True)[1]

        with RunMeter(self.device) as meter:
            probs = mirrored_mean(probabilities_of, canon.array, self.mirror_axes)
            seg = self.predictor.label_manager.convert_probabilities_to_segmentation(probs)
        if canon is not vol:  # back onto the input's own axes
            seg = from_canonical(Volume(seg, canon.geometry), vol.geometry).array
            probs = channels_from_canonical(probs, canon.geometry, vol.geometry)
        if probabilities:
            save_probabilities(out.fold_probabilities(self.fold, case), probs, vol.geometry)
        write_volume(Volume(seg.astype(np.uint8), vol.geometry), out.fold_label(self.fold, case))
        return meter.result

    def close(self) -> None:
        """Give back the predictor's memory (on CUDA, the cached blocks too)."""
        del self.predictor
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


def fuse_case(out: PredictionFolder, case: str, folds: Sequence[int], geometry: Geometry,
              probabilities: bool = True) -> Path:
    """``out/<case>.nii.gz`` (with the input's ``geometry``) from the folds' outputs: argmax of the
    mean fold probabilities (eq. 9, streamed), or a majority vote of the fold labels without them."""
    if probabilities:
        fused = fuse_probabilities([out.fold_probabilities(f, case) for f in folds])
    else:
        fused = majority_vote([read_volume(out.fold_label(f, case)).array for f in folds])
    return write_volume(Volume(fused, geometry), out.fused(case))


def write_records(out: PredictionFolder, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``out/predictions.json``: per case its input, each fold's run record and the fused labels."""
    out.records.write_text(json.dumps(records, indent=2))
    return records


def predict_folds(model_dir: str | Path, inputs: Sequence[Path], out: str | Path, folds: Sequence[int] | None = None,
                  device: str = "cpu", save_probabilities_files: bool = True, mirroring: bool = False,
                  progress: Progress | None = None, should_stop: StopFlag | None = None) -> list[dict[str, Any]]:
    """Predict every input with every fold in this process, one fold loaded at a time (layout:
    :class:`~napari_uda.segment.prediction_folder.PredictionFolder`), then fuse each case. Returns
    one record per case with per-fold running time and, on CUDA, GPU memory peak and area under the
    curve. ``model_dir`` is an nnU-Net model folder or an exported model folder (its ``segmenter/``)."""
    model_dir, folds = check_model(model_dir, folds)
    pred = PredictionFolder(out)
    volumes = {stem_of(p): read_scan(p) for p in inputs}
    records = {case: {"case": case, "input": str(p), "folds": {}} for case, p in zip(volumes, inputs)}
    for fold in folds:
        predictor = FoldPredictor(model_dir, fold, device, mirroring)
        for i, (case, vol) in enumerate(volumes.items()):
            check_stop(should_stop, "prediction")
            result = predictor.predict(vol, pred, case, save_probabilities_files)
            records[case]["folds"][str(fold)] = result
            emit(progress, f"predict fold {fold}", f"{case} {result['seconds']:.1f} s", i + 1, len(volumes), "cases",
                 case=case, **result)
        predictor.close()
    for case in volumes:
        records[case]["fused"] = str(fuse_case(pred, case, folds, volumes[case].geometry, save_probabilities_files))
    return write_records(pred, list(records.values()))
