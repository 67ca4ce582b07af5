"""The bundled sample data (a small phantom set) and the napari sample-data contributions."""
from __future__ import annotations

import os
from pathlib import Path

from .io import read_volume, stem_of
from .layers import LayerDataTuple, volume_to_layer_data
from .modalities import get_modality
from .phantom import case_name, write_phantom_dataset

#: How ``sample_data/`` was made (``napari-uda phantom`` with these arguments, per modality).
SAMPLE_SEED = 2026
SAMPLE_CASES = {"ct": 3, "t2wi": 2, "cv": 2, "pet_fdg": 2}

_REPO_SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


def sample_data_dir() -> Path:
    """The committed ``sample_data/`` folder; for an installed wheel, the same set regenerated into a cache."""
    if (_REPO_SAMPLE / "manifest.json").exists():
        return _REPO_SAMPLE
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-uda" / "sample_data"
    if not (cache / "manifest.json").exists():
        make_sample_data(cache)
    return cache


def make_sample_data(out: Path) -> None:
    """(Re)create the sample set: ``SAMPLE_CASES`` patients per modality with ``SAMPLE_SEED``."""
    write_phantom_dataset(out, SAMPLE_CASES, seed=SAMPLE_SEED)


def sample_case_paths(modality: str, case: int = 0) -> tuple[Path, Path]:
    """(image, labels) paths of one sample case."""
    mod = get_modality(modality)
    name = case_name(mod, case)
    root = sample_data_dir() / mod.slug
    return root / "images" / f"{name}.nii.gz", root / "labels" / f"{name}.nii.gz"


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
