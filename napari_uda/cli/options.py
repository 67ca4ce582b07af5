"""Argument types and the options several commands share, each declared once."""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_uda.core.choices import (
    ACCEPT_RULES,
    BASE_STAGES,
    BUDGETS as PIPELINE_BUDGETS,
    CROP_MARGIN_MM,
    PAIRINGS,
    PLANNERS,
    SEGMENTER_BUDGETS,
)


def bounded(kind: type, low: float, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a ``kind`` number in [low, high] (argparse turns the ValueError into one usage line)."""
    def parse(text: str) -> Any:
        value = kind(text)
        if not (low <= value and (high is None or value <= high)) or value != value:
            raise ValueError(text)
        return value

    parse.__name__ = f"{kind.__name__} in [{low}, {'inf' if high is None else high}]"
    return parse


def _writable(path: Path, text: str) -> Path:
    """``path``'s nearest existing folder (itself or an ancestor), which must be writable."""
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is not writable")
    return ancestor


def _output_folder(text: str) -> Path:
    """An argparse type: a folder to write into (existing or creatable), checked before any work."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    _writable(path, text)
    return path


def _output_prefix(text: str) -> Path:
    """An argparse type: FILE of FILE.json/.csv/.md, in a folder that can be written."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name prefix (FILE writes FILE.json ...)")
    _writable(path.parent, text)
    return path



def _variants(text: str) -> list[str]:
    """An argparse type: pipeline translator variants separated by commas."""
    variants = [v.strip() for v in text.split(",") if v.strip()]
    wrong = [v for v in variants if v not in BASE_STAGES]
    if wrong or not variants:
        raise argparse.ArgumentTypeError(f"{text}: give translator variants among {', '.join(BASE_STAGES)}, "
                                         "separated by commas")
    return variants


OUTPUT_FOLDER, OUTPUT_PREFIX, VARIANT_LIST = _output_folder, _output_prefix, _variants
COUNT = bounded(int, 1)  # at least one
NON_NEGATIVE = bounded(int, 0)
DATASET_ID = bounded(int, 1, 999)
FOLD = bounded(int, 0, 99)
SPACING_FACTOR = bounded(float, 1.0, 16.0)  # beyond 16 a 512-voxel axis is a few voxels: nothing left to learn
MILLIMETRES = bounded(float, 0.0, 1000.0)


def add_workspace(p: argparse.ArgumentParser, required: bool = True, kind: Callable[[str], Any] = Path,
                  help: str | None = None) -> None:
    """``--workspace W``: the workspace folder a command works in."""
    p.add_argument("--workspace", required=required, type=kind, default=None, help=help)


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``: where the work runs."""
    p.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: best available)")


def add_scheduler(p: argparse.ArgumentParser) -> None:
    """``--scheduler``/``--workers``: the Dask engine batch work runs on (default: serially here)."""
    p.add_argument("--scheduler", default=None,
                   help="run the batch work on Dask: 'local' (a cluster of --workers processes here), a scheduler "
                        "address (tcp://HOST:8786) or a scheduler file (scheduler.json); default: serially")
    p.add_argument("--workers", type=COUNT, default=None,
                   help="worker processes of --scheduler local (default: 2, or one per GPU on CUDA)")


def add_json(p: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output instead of lines for people."""
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_target_modality(p: argparse.ArgumentParser, required: bool = True, default: str | None = None,
                        help: str = "target modality, e.g. T2WI, C+V, PET-FDG") -> None:
    """``--modality``: a modality of the registry (``napari_uda.core.modalities``)."""
    p.add_argument("--modality", required=required, default=default, help=help)


def add_dataset(p: argparse.ArgumentParser, required: bool = True, help: str = "nnU-Net dataset id (1..999)") -> None:
    """``--dataset ID``: an nnU-Net dataset of the workspace."""
    p.add_argument("--dataset", required=required, type=DATASET_ID, default=None, help=help)


def add_nnunet_plan(p: argparse.ArgumentParser) -> None:
    """``--planner`` and ``--configuration``: which nnU-Net plan a model was made with."""
    p.add_argument("--planner", default="resenc-m", choices=list(PLANNERS))
    p.add_argument("--configuration", default="3d_fullres")


def add_segmenter_budget(p: argparse.ArgumentParser) -> None:
    """``--budget``: an nnU-Net trainer budget (``segment`` commands; not the pipeline's budgets)."""
    p.add_argument("--budget", default="full", choices=list(SEGMENTER_BUDGETS),
                   help="the nnU-Net trainer's budget (see napari_uda.core.choices.SEGMENTER_BUDGETS)")


def add_pairing(p: argparse.ArgumentParser) -> None:
    """``--pair-by`` and ``--patient``: how label transfer pairs a target scan with its patient's scan."""
    p.add_argument("--patient", default=None, metavar="REGEX",
                   help="the patient of a scan: this regular expression's first group in its case name (default: the "
                        "case name itself), e.g. '^(patient_[0-9]+)'")
    p.add_argument("--pair-by", choices=PAIRINGS, default="name",
                   help="name: a target and a scan of one patient share its name (--patient); volume: the names differ, "
                        "pair each target with the most alike scan in Sobel space (ASIT's volume matching; both folders "
                        "should hold the same patients)")


def add_pipeline_run(p: argparse.ArgumentParser) -> None:
    """``--budget``, ``--device``, ``--top-k``, ``--select``, ``--tta``, ``--coarse-to-fine``, ``--margin-mm``,
    ``--transfer-from`` (with its pairing), ``--auto-accept`` and the Dask engine of the method's runs."""
    p.add_argument("--budget", default="small", choices=list(PIPELINE_BUDGETS),
                   help="tiny (tests), small (a CPU demo), full (a GPU); see napari_uda.core.choices.BUDGETS")
    add_device(p)
    p.add_argument("--top-k", type=COUNT, default=None,
                   help="at most this many pseudo-labels accepted automatically (default: the better half)")
    p.add_argument("--select", default=None, choices=ACCEPT_RULES,
                   help="how pseudo-labels are selected: pass every filter (FLARE 2025), fold consistency alone (FLARE "
                        "2024), or the lowest uncertainty across rounds with the union of the rounds' labels (ASIT; "
                        "needs 2 rounds, round 1 by consistency); default: the budget's (consistency for tiny and "
                        "small, filters for full)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time mirroring (every flip of the model's mirror axes, averaged; exactly "
                        "equivariant) for the stages trained from now on; the CPU budgets' segmenters then "
                        "train with mirroring augmentation too (default: off, or as the workspace recorded)")
    p.add_argument("--coarse-to-fine", action=argparse.BooleanOptionalAction, default=None,
                   help="FLARE 2025's coarse-to-fine for the stages trained from now on: a coarse model at twice the "
                        "spacing finds the organs, a fine model trained on crops of them segments there (default: off, "
                        "or as the workspace recorded)")
    p.add_argument("--margin-mm", type=MILLIMETRES, default=CROP_MARGIN_MM,
                   help="coarse-to-fine: the margin around the organs of the fine model's crops, in mm")
    transfer = p.add_mutually_exclusive_group()
    transfer.add_argument("--transfer-from", type=Path, default=None, metavar="W_OTHER",
                          help="ASIT's multi-domain matching: the workspace of the same patients in another sub-domain "
                               "(where the model is good, e.g. the T1 phases); its final labels are registered onto "
                               "these target scans and replace their pseudo-labels in the queue before each round, "
                               "marked as transferred (default: none, or as the workspace recorded)")
    transfer.add_argument("--no-transfer", action="store_true", help="stop the transfer the workspace recorded")
    add_pairing(p)
    p.add_argument("--auto-accept", action="store_true",
                   help="accept pseudo-labels that pass the filters without review (recorded as reviewer auto:<settings>)")
    add_scheduler(p)
