"""Model folders: one format for handing a stage's models to someone else (written by
:func:`napari_uda.pipeline.export.export_stage`)::

    DIR/model.json                          what it is
    DIR/segmenter/plans.json, dataset.json  nnU-Net's plans and dataset description
    DIR/segmenter/fold_<k>/model.safetensors + model.json   one trained fold (napari_uda.segment.nnunet_model)
    DIR/translator/translator.safetensors + translator.json the CT->target translator, if the stage used one

Weights are safetensors only: nothing in a model folder is ever unpickled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_uda.core.errors import UdaError
from napari_uda.core.files import read_json

SIDECAR = "model.json"


FORMAT = "napari-uda-model"


SEGMENTER, TRANSLATOR = "segmenter", "translator"


TRANSLATOR_FILES = ("translator.safetensors", "translator.json")


def read_sidecar(folder: str | Path) -> dict[str, Any] | None:
    """``folder/model.json`` if ``folder`` is an exported model folder, else None; a sidecar that
    is not valid JSON or not ours is an error naming it."""
    path = Path(folder) / SIDECAR
    if not path.is_file():
        return None
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UdaError(f"{path}: not a napari-uda model folder sidecar")
    return meta


def part_folder(folder: str | Path, part: str) -> Path:
    """Where ``part`` (``segmenter`` or ``translator``) lives: inside an exported model folder, its
    sub-folder; any other folder is taken as that part itself (a workspace's model or translator)."""
    folder = Path(folder)
    if read_sidecar(folder) is None:
        return folder
    if not (folder / part).is_dir():
        raise UdaError(f"{folder / SIDECAR}: this model folder holds no {part}")
    return folder / part
