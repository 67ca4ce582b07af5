"""The workspace: one folder holding a project's whole state, described by ``workspace.json``.

Layout (every path below is inside the workspace folder ``W``)::

    workspace.json             the manifest (human-readable; rewritten atomically)
    review.sqlite              the review store (:mod:`napari_uda.review.store`)
    translators/<variant>/     trained translators (:mod:`napari_uda.translate.translator`)
    translated/<variant>/      the source CT translated to the target modality, CT geometry
    nnunet/{raw,preprocessed,results}/   nnU-Net's folders (:mod:`napari_uda.segment.segmenter`)
    predictions/<stage>/       each stage's predictions (fold_<k>/ and the fused <case>.nii.gz)
    reports/                   evaluation tables, source statistics
    logs/                      child-process logs and JSON-lines progress

The manifest lists the data (absolute paths), the translators, the segmentation models, the
pipeline stages that finished and the self-training rounds; opening the same folder again
(another napari session, the CLI on a cluster) restores all of it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_uda.core.errors import UdaError
from napari_uda.core.files import atomic_write_text, list_volumes, pair_labels, utc_timestamp
from napari_uda.core.modalities import get_modality

MANIFEST = "workspace.json"
#: Top-level manifest entries every reader relies on, and their types.
REQUIRED: dict[str, type] = {"modality": str, "data": dict, "folders": dict, "translators": dict, "models": dict,
                             "stages": dict, "rounds": list}
FORMAT = "napari-uda-workspace"
FORMAT_VERSION = 1


@dataclass
class Workspace:
    """A workspace folder and its manifest (a plain dict, saved by :meth:`save`)."""

    root: Path
    manifest: dict[str, Any]

    # --- create / open -------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, source_images: str | Path, source_labels: str | Path, target_images: str | Path,
               modality: str) -> Workspace:
        """A new workspace for adapting the labelled CT in ``source_images``/``source_labels`` to
        the ``modality`` scans in ``target_images``; reopens an existing one when the data agree."""
        root = Path(root).resolve()
        ct = [p.resolve() for p in list_volumes(source_images)]
        labels = [p.resolve() for p in pair_labels(ct, source_labels)]
        targets = [p.resolve() for p in list_volumes(target_images)]
        mod = get_modality(modality)
        if not mod.is_target:
            raise UdaError(f"the target modality must be MRI or PET, not {mod.key}")
        data = {"source_images": [str(p) for p in ct], "source_labels": [str(p) for p in labels],
                "target_images": [str(p) for p in targets]}
        if (root / MANIFEST).exists():
            ws = cls.open(root)
            if ws.manifest["modality"] != mod.key or ws.manifest["data"] != data:
                raise UdaError(f"{root / MANIFEST}: this workspace holds other data or another modality "
                               f"({ws.manifest['modality']}); choose another workspace folder")
            return ws
        folders = {"source_images": str(Path(source_images).resolve()), "source_labels": str(Path(source_labels).resolve()),
                   "target_images": str(Path(target_images).resolve())}
        ws = cls(root, {"format": FORMAT, "version": FORMAT_VERSION, "created": utc_timestamp(), "modality": mod.key,
                        "data": data, "folders": folders, "translators": {}, "models": {}, "stages": {}, "rounds": []})
        ws.save()
        return ws

    @classmethod
    def open(cls, root: str | Path) -> Workspace:
        """Open an existing workspace; a clear error when the folder is not one or the manifest is damaged."""
        root = Path(root).resolve()
        path = root / MANIFEST
        if not path.exists():
            raise UdaError(f"{root}: not a napari-uda workspace (no {MANIFEST}); create one first")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UdaError(f"{path}: damaged manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise UdaError(f"{path}: not a napari-uda workspace manifest")
        if manifest.get("version", 0) > FORMAT_VERSION:
            raise UdaError(f"{path}: written by a newer napari-uda (version {manifest['version']})")
        for key, kind in REQUIRED.items():
            if not isinstance(manifest.get(key), kind):
                raise UdaError(f"{path}: damaged manifest ({key!r} missing or not a {kind.__name__})")
        return cls(root, manifest)

    def save(self) -> None:
        """Write the manifest to a temporary file, fsync, rename: a crash leaves the old or the new one."""
        atomic_write_text(self.root / MANIFEST, json.dumps(self.manifest, indent=2), fsync=True)

    # --- data ---------------------------------------------------------------------------------------
    @property
    def modality(self) -> str:
        return str(self.manifest["modality"])

    def folder(self, key: str) -> Path:
        """The folder ``source_images``, ``source_labels`` or ``target_images`` was created from."""
        recorded = self.manifest.get("folders", {}).get(key)
        return Path(recorded) if recorded else self.files(key)[0].parent

    def files(self, key: str) -> list[Path]:
        """``source_images``, ``source_labels`` or ``target_images``, checked to still exist."""
        paths = [Path(p) for p in self.manifest["data"][key]]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise UdaError(f"{self.root / MANIFEST}: {key} missing on disk: {', '.join(missing[:3])}")
        return paths

    # --- folders -------------------------------------------------------------------------------------
    def translator_dir(self, variant: str) -> Path:
        return self.root / "translators" / variant

    def translated_dir(self, variant: str) -> Path:
        return self.root / "translated" / variant

    def predictions_dir(self, stage: str) -> Path:
        return self.root / "predictions" / stage

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    # --- what has been done ----------------------------------------------------------------------
    def record(self, section: str, name: str, **info: Any) -> None:
        """Record (and save) ``info`` under ``section`` (translators, models or stages) as ``name``."""
        if section not in ("translators", "models", "stages"):
            raise ValueError(f"unknown manifest section {section!r}")
        self.manifest[section][name] = {**info, "at": utc_timestamp()}
        self.save()

    def done(self, section: str, name: str) -> dict[str, Any] | None:
        return self.manifest[section].get(name)

    def add_round(self, number: int, **info: Any) -> None:
        rounds = [r for r in self.manifest["rounds"] if r["round"] != number]
        self.manifest["rounds"] = sorted([*rounds, {"round": number, **info, "at": utc_timestamp()}], key=lambda r: r["round"])
        self.save()

    def summary(self, review_counts: dict[str, int] | None = None) -> list[tuple[str, str]]:
        """(what, value) rows for a person: data, translators, models, stages, rounds, review progress."""
        m = self.manifest
        rows = [("workspace", str(self.root)), ("modality", m["modality"]),
                ("source CT", f"{len(m['data']['source_images'])} labelled"),
                ("target scans", str(len(m["data"]["target_images"])))]
        rows += [(f"translator {k}", f"{v.get('iterations', '?')} iterations") for k, v in m["translators"].items()]
        rows += [(f"model {k}", f"dataset {v['dataset']}, {v['budget']}, folds {v['folds']}") for k, v in m["models"].items()]
        rows += [(f"stage {k}", v.get("status", "done")) for k, v in m["stages"].items()]
        rows += [(f"round {r['round']}", f"{r.get('accepted', 0)} accepted pseudo-labels") for r in m["rounds"]]
        if review_counts:
            rows.append(("review", ", ".join(f"{n} {state}" for state, n in review_counts.items())))
        return rows

