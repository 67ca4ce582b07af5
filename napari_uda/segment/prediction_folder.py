"""The layout of a folder of predictions, in one place (written by
:func:`napari_uda.segment.segmenter.predict_folds`, read by the pipeline, the widgets and the demo)::

    OUT/<case>.nii.gz            the fused label of the folds
    OUT/fold_<k>/<case>.nii.gz   fold k's label
    OUT/fold_<k>/<case>.npz      fold k's class probabilities (napari_uda.segment.probabilities)
    OUT/pseudo/<case>.nii.gz     a stage's pseudo-label (the strict majority of its folds)
    OUT/predictions.json         one record per case (inputs, per-fold running time and GPU memory)

``case`` is the input's file name without its volume suffix.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LABEL_SUFFIX = ".nii.gz"
PSEUDO_DIR = "pseudo"


@dataclass(frozen=True)
class PredictionFolder:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of_label(cls, label: str | Path) -> PredictionFolder:
        """The folder a fused label (``OUT/<case>.nii.gz``) or a pseudo-label (``OUT/pseudo/<case>.nii.gz``) is in."""
        parent = Path(label).parent
        return cls(parent.parent if parent.name == PSEUDO_DIR else parent)

    @property
    def records(self) -> Path:
        return self.root / "predictions.json"

    def fused(self, case: str) -> Path:
        return self.root / f"{case}{LABEL_SUFFIX}"

    def pseudo_label(self, case: str) -> Path:
        return self.root / PSEUDO_DIR / f"{case}{LABEL_SUFFIX}"

    def fold_dir(self, fold: int | str) -> Path:
        return self.root / f"fold_{fold}"

    def fold_label(self, fold: int | str, case: str) -> Path:
        return self.fold_dir(fold) / f"{case}{LABEL_SUFFIX}"

    def fold_probabilities(self, fold: int | str, case: str) -> Path:
        return self.fold_dir(fold) / f"{case}.npz"

    def fold_labels(self, case: str) -> dict[int, Path]:
        """Every fold's label of ``case`` that exists, by fold number, in fold order."""
        found = {}
        for p in self.root.glob(f"fold_*/{case}{LABEL_SUFFIX}"):
            suffix = p.parent.name[len("fold_"):]
            if suffix.isdigit():
                found[int(suffix)] = p
        return dict(sorted(found.items()))
