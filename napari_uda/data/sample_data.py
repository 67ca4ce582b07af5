"""The bundled sample data: a small phantom set, committed in ``sample_data/`` or regenerated into a cache."""
from __future__ import annotations

import os
from pathlib import Path

from napari_uda.core.modalities import get_modality
from napari_uda.data.phantom import case_name, write_phantom_dataset

#: How ``sample_data/`` was made (``napari-uda phantom`` with these arguments, per modality).
SAMPLE_SEED = 2026


SAMPLE_CASES = {"ct": 3, "t2wi": 2, "cv": 2, "pet_fdg": 2}


_REPO_SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


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
