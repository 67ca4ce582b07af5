"""npe2 reader and writer contributions (thin wrappers over :mod:`napari_uda.core.io`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk
from napari.utils.notifications import show_error

from napari_uda.core.errors import VolumeError
from napari_uda.core.files import stem_of, suffix_of
from napari_uda.core.io import Volume, read_volume, write_volume
from napari_uda.napari.layers import LayerDataTuple, geometry_from_layer_meta, volume_to_layer_data


def _is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerDataTuple]] | None:
    """Return the volume reader for NIfTI / MetaImage / NRRD files and DICOM folders, else None."""
    paths = [path] if isinstance(path, str) else list(path)
    for p in map(Path, paths):
        if not (suffix_of(p) or _is_dicom_folder(p)):
            return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerDataTuple]:
    """Read each path as an Image or (organ) Labels layer with its geometry.

    Errors are raised as :class:`VolumeError` naming the file; napari shows them as notifications.
    """
    paths = [path] if isinstance(path, str) else list(path)
    layers = []
    for p in paths:
        try:
            volume = read_volume(p)
        except VolumeError as exc:
            show_error(str(exc))  # napari would otherwise only say that "a plugin failed"
            raise
        layers.append(volume_to_layer_data(volume, stem_of(p), source=str(p)))
    return layers


def _write(path: str, data: Any, meta: dict[str, Any], labels: bool) -> list[str]:
    if not suffix_of(path):
        path = path + ".nii.gz"
    array = np.asarray(data)
    if array.ndim != 3:
        raise VolumeError(f"{path}: only 3D layers can be written, this one is {array.ndim}D")
    if labels:
        array = array.astype(np.uint8 if array.max(initial=0) <= 255 else np.uint16)
    geometry = geometry_from_layer_meta(meta)
    modality = (meta.get("metadata") or {}).get("modality")
    write_volume(Volume(array, geometry, modality), path)
    return [path]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer to NIfTI / MHA / NRRD with its source geometry."""
    return _write(path, data, meta, labels=True)


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer to NIfTI / MHA / NRRD with its source geometry."""
    return _write(path, data, meta, labels=False)
