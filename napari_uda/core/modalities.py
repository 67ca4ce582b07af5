"""The modality registry: the source CT and every target a translator can be trained for.

One table; the CLI, the widgets, the phantom and the translators all look modalities
up here with :func:`get_modality`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from napari_uda.core.errors import UdaError

Kind = Literal["ct", "mri", "pet"]


@dataclass(frozen=True)
class Modality:
    """A modality: ``key`` as the papers write it, ``slug`` for file names and the CLI.

    ``output_range`` is the plausible intensity range that translated images are
    mapped back to (HU for CT, arbitrary units for MRI, SUV for PET).
    """

    key: str
    slug: str
    kind: Kind
    description: str
    output_range: tuple[float, float]

    @property
    def is_target(self) -> bool:
        return self.kind != "ct"


MODALITIES: tuple[Modality, ...] = (
    Modality("CT", "ct", "ct", "contrast-enhanced CT (source, labelled)", (-1000.0, 1500.0)),
    Modality("DWI", "dwi", "mri", "MRI diffusion-weighted", (0.0, 1000.0)),
    Modality("T2WI", "t2wi", "mri", "MRI T2-weighted", (0.0, 1000.0)),
    Modality("C+A", "ca", "mri", "MRI T1 contrast, arterial phase", (0.0, 1000.0)),
    Modality("InPhase", "inphase", "mri", "MRI T1 in-phase", (0.0, 1000.0)),
    Modality("OutPhase", "outphase", "mri", "MRI T1 opposed-phase", (0.0, 1000.0)),
    Modality("C+pre", "cpre", "mri", "MRI T1 fat-saturated, pre-contrast", (0.0, 1000.0)),
    Modality("C+V", "cv", "mri", "MRI T1 contrast, portal-venous phase", (0.0, 1000.0)),
    Modality("C+Delay", "cdelay", "mri", "MRI T1 contrast, delayed phase", (0.0, 1000.0)),
    Modality("MRI", "mri", "mri", "MRI, any sequence (generic)", (0.0, 1000.0)),
    Modality("PET-FDG", "pet_fdg", "pet", "PET with 18F-FDG (SUV)", (0.0, 20.0)),
    Modality("PET-PSMA", "pet_psma", "pet", "PET with PSMA tracer (SUV)", (0.0, 40.0)),
)

SOURCE = MODALITIES[0]
TARGETS: tuple[Modality, ...] = tuple(m for m in MODALITIES if m.is_target)

_LOOKUP: dict[str, Modality] = {}
for _m in MODALITIES:
    for _name in (_m.key, _m.slug, _m.key.replace("-", "_"), _m.slug.replace("_", "-")):
        _LOOKUP[_name.lower()] = _m
_LOOKUP["pet"] = _LOOKUP["pet_fdg"]


def get_modality(name: str) -> Modality:
    """Look a modality up by key or slug, case-insensitively (``"T2WI"``, ``"c+v"``, ``"pet_fdg"``)."""
    try:
        return _LOOKUP[name.strip().lower()]
    except KeyError:
        known = ", ".join(m.key for m in MODALITIES)
        raise UdaError(f"unknown modality {name!r}; known modalities: {known}") from None
