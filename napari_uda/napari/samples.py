"""napari's sample-data contributions: the bundled sample cases as layers."""
from __future__ import annotations

from napari_uda.core.files import stem_of
from napari_uda.core.io import read_volume
from napari_uda.core.modalities import get_modality
from napari_uda.data.sample_data import sample_case_paths
from napari_uda.napari.layers import LayerDataTuple, volume_to_layer_data


def _load(modality: str, with_labels: bool) -> list[LayerDataTuple]:
    image_path, label_path = sample_case_paths(modality)
    image = read_volume(image_path, get_modality(modality).key)
    layers = [volume_to_layer_data(image, stem_of(image_path), as_labels=False, source=str(image_path))]
    if with_labels:
        labels = read_volume(label_path, get_modality(modality).key)
        layers.append(volume_to_layer_data(labels, f"{stem_of(label_path)}_organs", as_labels=True, source=str(label_path)))
    return layers


def ct_with_organs() -> list[LayerDataTuple]:
    """Abdominal phantom: CT (HU) with its 13 organ labels."""
    return _load("ct", with_labels=True)


def t2wi_mri() -> list[LayerDataTuple]:
    """Abdominal phantom: T2-weighted MRI of another patient (no labels: the target domain)."""
    return _load("t2wi", with_labels=False)


def cv_mri() -> list[LayerDataTuple]:
    """Abdominal phantom: T1 contrast-enhanced portal-venous MRI (no labels)."""
    return _load("cv", with_labels=False)


def pet_fdg() -> list[LayerDataTuple]:
    """Abdominal phantom: FDG PET in SUV (no labels)."""
    return _load("pet_fdg", with_labels=False)
