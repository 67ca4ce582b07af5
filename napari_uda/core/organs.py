"""The organ table: FLARE numbering, names, colours and scoring tolerances.

This is the one place where organs are defined. napari label colours, reports,
nnU-Net ``dataset.json`` and the metrics all read from here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Organ:
    """One FLARE organ class.

    ``nsd_tolerance_mm`` is the per-organ tolerance of the official FLARE scoring;
    ``crop_to_gt_z`` marks tubular organs whose masks are cropped to the z-extent
    of the ground truth before scoring.
    """

    index: int
    key: str
    name: str
    color: tuple[int, int, int]
    nsd_tolerance_mm: float
    crop_to_gt_z: bool = False


ORGANS: tuple[Organ, ...] = (
    Organ(1, "liver", "liver", (220, 90, 70), 5.0),
    Organ(2, "right_kidney", "right kidney", (230, 200, 50), 3.0),
    Organ(3, "spleen", "spleen", (90, 170, 60), 3.0),
    Organ(4, "pancreas", "pancreas", (240, 150, 200), 5.0),
    Organ(5, "aorta", "aorta", (230, 30, 40), 2.0, crop_to_gt_z=True),
    Organ(6, "ivc", "inferior vena cava", (60, 90, 230), 2.0, crop_to_gt_z=True),
    Organ(7, "right_adrenal", "right adrenal gland", (250, 140, 20), 2.0),
    Organ(8, "left_adrenal", "left adrenal gland", (200, 110, 20), 2.0),
    Organ(9, "gallbladder", "gallbladder", (40, 200, 120), 2.0),
    Organ(10, "esophagus", "esophagus", (170, 120, 230), 3.0, crop_to_gt_z=True),
    Organ(11, "stomach", "stomach", (150, 200, 240), 5.0),
    Organ(12, "duodenum", "duodenum", (250, 220, 160), 7.0),
    Organ(13, "left_kidney", "left kidney", (180, 160, 30), 3.0),
)

BACKGROUND = 0
ORGAN_BY_INDEX: dict[int, Organ] = {o.index: o for o in ORGANS}
ORGAN_BY_KEY: dict[str, Organ] = {o.key: o for o in ORGANS}
ORGAN_INDICES: tuple[int, ...] = tuple(o.index for o in ORGANS)
MAX_LABEL = max(ORGAN_INDICES)
N_CLASSES = MAX_LABEL + 1  # background included

#: Organs that FLARE scores on PET.
PET_SCORED: tuple[int, ...] = (
    ORGAN_BY_KEY["liver"].index,
    ORGAN_BY_KEY["right_kidney"].index,
    ORGAN_BY_KEY["spleen"].index,
    ORGAN_BY_KEY["left_kidney"].index,
)


def is_organ_label_array(array: np.ndarray) -> bool:
    """True for integer arrays whose values all lie in the organ table (0..13)."""
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.integer) or a.size == 0:
        return False
    return int(a.min()) >= BACKGROUND and int(a.max()) <= MAX_LABEL


def organ_name(index: int) -> str:
    """Human-readable name of a label value (``"background"`` for 0)."""
    if index == BACKGROUND:
        return "background"
    return ORGAN_BY_INDEX[index].name


def napari_colormap() -> dict[int | None, tuple[float, float, float, float]]:
    """Label value -> RGBA in [0, 1], background transparent, for napari Labels layers."""
    colors: dict[int | None, tuple[float, float, float, float]] = {
        None: (0.0, 0.0, 0.0, 0.0),
        BACKGROUND: (0.0, 0.0, 0.0, 0.0),
    }
    for o in ORGANS:
        r, g, b = o.color
        colors[o.index] = (r / 255, g / 255, b / 255, 1.0)
    return colors


def nnunet_labels() -> dict[str, int]:
    """The ``labels`` entry of an nnU-Net v2 ``dataset.json``."""
    return {"background": BACKGROUND, **{o.key: o.index for o in ORGANS}}
