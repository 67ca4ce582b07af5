"""Typed records of what a workspace has done: the entries of its manifest (``workspace.json``,
:mod:`napari_uda.core.workspace`) for translators, segmentation models, pipeline stages,
self-training rounds and the pipeline's settings.

Each is stored as a JSON object of its fields that are set (not None). Reading one ignores keys it
does not know, so a manifest written by a later minor version still opens; a missing required
field is a damaged manifest. Paths are absolute, as strings.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from napari_uda.core.errors import UdaError

R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class Record:
    """A manifest entry; ``SECTION`` names the manifest section it is kept in."""

    SECTION: ClassVar[str] = ""

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any], where: str) -> R:
        """The record ``d`` holds; ``where`` (the manifest and entry) names it in the error."""
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as exc:  # a required field missing
            missing = sorted(f.name for f in fields(cls) if f.name not in d)
            raise UdaError(f"{where}: damaged manifest entry (missing {', '.join(missing) or exc})") from None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class TranslatorRecord(Record):
    """A trained (or imported) translator in ``path``; ``translated``: the source CT translated by it."""

    SECTION: ClassVar[str] = "translators"
    path: str
    iterations: int
    translated: str | None = None
    size: int | None = None
    config: dict[str, Any] | None = None
    trained_by: str | None = None
    imported_from: str | None = None
    at: str = ""


@dataclass(frozen=True)
class ModelRecord(Record):
    """A stage's nnU-Net model: its dataset id, the trainer (``budget``), plans and folds."""

    SECTION: ClassVar[str] = "models"
    path: str
    dataset: int
    budget: str
    planner: str
    configuration: str
    folds: list[int]
    round: int = 0
    trained_on: int = 0
    channel: str = ""
    fine_tuned_from: str | None = None
    imported_from: str | None = None
    imported_stage: str | None = None
    crop_margin_mm: float | None = None  # coarse-to-fine's fine model: trained on organ-region crops
    at: str = ""


@dataclass(frozen=True)
class StageRecord(Record):
    """A pipeline stage's predictions of every target scan: ``predicted``, then ``done`` once scored
    into the review store (``model_id``); the ``final`` stage names the stage it post-processed."""

    SECTION: ClassVar[str] = "stages"
    status: str
    predictions: str
    model: str | None = None
    round: int = 0
    cases: int | None = None
    scored: int | None = None
    model_id: int | None = None
    from_stage: str | None = None
    postprocessed: bool | None = None
    tta: bool | None = None  # predicted with test-time mirroring
    coarse_model: str | None = None  # predicted coarse-to-fine: this model found the region
    at: str = ""


@dataclass(frozen=True)
class RoundRecord(Record):
    """Self-training round ``round``: its stage, how many accepted pseudo-labels it trained on, and each
    case's uncertainty across rounds (None where a round predicted no foreground); ``select``: the
    selection rule automatic acceptance ranks the next round's pseudo-labels by (``ACCEPT_RULES``)."""

    SECTION: ClassVar[str] = "rounds"
    round: int
    stage: str
    accepted: int = 0
    uncertainty: dict[str, float | None] = field(default_factory=dict)
    select: str | None = None
    at: str = ""


@dataclass(frozen=True)
class PipelineRecord(Record):
    """The settings the workspace's pipeline runs with (a rerun must use the same)."""

    SECTION: ClassVar[str] = "pipeline"
    variant: str
    budget: str
    base_stage: str
    rounds: int = 1
    auto_accept: bool = False
    ablation: bool = False
    real_ct: bool = False
    intensity_aug: bool = False
    finetune: bool = False
    ablation_variants: list[str] | None = None  # the other translators an ablation trains; None: every one
    pool_variants: list[str] | None = None  # multi-view pooling: the base stage trains on these translators' translations
    tta: bool = False  # test-time mirroring for the stages trained and predicted from now on (mirroring augmentation with it)
    crop_margin_mm: float | None = None  # coarse-to-fine for the stages trained from now on: the fine crops' margin
    transfer_from: str | None = None  # MDM (ASIT): the workspace whose final labels are transferred before each round
    transfer_pair_by: str = "name"  # how its scans find this workspace's (PAIRINGS)
    transfer_patient: str | None = None  # pairing by name: the patient's regular expression (None: the case name)

    def training_variants(self) -> list[str]:
        """The translators whose translations train the base stage and the self-training rounds."""
        return list(self.pool_variants) if self.pool_variants else [self.variant]
