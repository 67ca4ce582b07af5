"""The workspace: one folder holding a project's whole state, described by ``workspace.json``.

Layout (every path below is inside the workspace folder ``W``)::

    workspace.json             the manifest (human-readable; rewritten atomically)
    review.sqlite              the review store (:mod:`napari_uda.review.store`)
    translators/<variant>/     trained translators (:mod:`napari_uda.translate.translator`)
    translated/<variant>/      the source CT translated to the target modality, CT geometry
    sobel/<case>.nii.gz        the target scans in Sobel space, as an ASIT stage's segmenter reads them
    nnunet/{raw,preprocessed,results}/   nnU-Net's folders (:mod:`napari_uda.segment.segmenter`)
    predictions/<stage>/       each stage's predictions (fold_<k>/ and the fused <case>.nii.gz)
    reports/                   evaluation tables, source statistics
    logs/                      child-process logs and JSON-lines progress

The manifest lists the data (absolute paths), the translators, the segmentation models, the
pipeline stages that finished and the self-training rounds, read and written as the typed records
of :mod:`napari_uda.core.records`; opening the same folder again (another napari session, the CLI
on a cluster) restores all of it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from napari_uda.core.errors import UdaError
from napari_uda.core.files import atomic_write_text, list_volumes, pair_labels, utc_timestamp
from napari_uda.core.modalities import get_modality
from napari_uda.core.records import ModelRecord, PipelineRecord, R, RoundRecord, StageRecord, TranslatorRecord

MANIFEST = "workspace.json"
#: Top-level manifest entries every reader relies on, and their types.
REQUIRED: dict[str, type] = {"modality": str, "data": dict, "folders": dict, "translators": dict, "models": dict,
                             "stages": dict, "rounds": list}
FORMAT = "napari-uda-workspace"
FORMAT_VERSION = 1


@dataclass
class Workspace:
    """A workspace folder and its manifest (the JSON object, saved by :meth:`save`; its entries are
    read and written as records: :meth:`model`, :meth:`stage`, :meth:`record`, ...)."""

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

    @property
    def sobel_dir(self) -> Path:
        return self.root / "sobel"

    def predictions_dir(self, stage: str) -> Path:
        return self.root / "predictions" / stage

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def evaluation_prefix(self, stage: str) -> Path:
        """``W/reports/evaluation_<stage>``: the evaluation of a stage's predictions, as .json/.csv/.md."""
        return self.reports_dir / f"evaluation_{stage}"

    # --- what has been done: typed records (napari_uda.core.records) -----------------------------
    def record(self, name: str, rec: TranslatorRecord | ModelRecord | StageRecord) -> None:
        """Record (and save) ``rec`` as ``name`` in its manifest section, stamped with the time."""
        self.manifest[rec.SECTION][name] = replace(rec, at=utc_timestamp()).to_dict()
        self.save()

    def _entry(self, kind: type[R], name: str) -> R | None:
        d = self.manifest[kind.SECTION].get(name)
        return None if d is None else kind.from_dict(d, f"{self.root / MANIFEST}: {kind.SECTION}.{name}")

    def translator(self, variant: str) -> TranslatorRecord | None:
        return self._entry(TranslatorRecord, variant)

    def model(self, stage: str) -> ModelRecord | None:
        return self._entry(ModelRecord, stage)

    def stage(self, name: str) -> StageRecord | None:
        return self._entry(StageRecord, name)

    def stage_done(self, name: str) -> bool:
        """Whether stage ``name`` has been scored (or, for ``final``, written)."""
        rec = self.stage(name)
        return rec is not None and rec.status == "done"

    def models(self) -> dict[str, ModelRecord]:
        return {name: self.model(name) for name in self.manifest["models"]}  # type: ignore[misc]

    def stages(self) -> dict[str, StageRecord]:
        return {name: self.stage(name) for name in self.manifest["stages"]}  # type: ignore[misc]

    def rounds(self) -> list[RoundRecord]:
        return [RoundRecord.from_dict(r, f"{self.root / MANIFEST}: rounds") for r in self.manifest["rounds"]]

    def add_round(self, rec: RoundRecord) -> None:
        """Record (and save) a finished self-training round, replacing one of the same number."""
        rounds = [r for r in self.rounds() if r.round != rec.round] + [replace(rec, at=utc_timestamp())]
        self.manifest["rounds"] = [r.to_dict() for r in sorted(rounds, key=lambda r: r.round)]
        self.save()

    def pipeline(self) -> PipelineRecord | None:
        """The pipeline's settings, once it has run here."""
        d = self.manifest.get(PipelineRecord.SECTION)
        return None if d is None else PipelineRecord.from_dict(d, f"{self.root / MANIFEST}: pipeline")

    def set_pipeline(self, rec: PipelineRecord) -> None:
        self.manifest[PipelineRecord.SECTION] = rec.to_dict()
        self.save()

    def summary(self, review_counts: dict[str, int] | None = None) -> list[tuple[str, str]]:
        """(what, value) rows for a person: data, translators, models, stages, rounds, review progress."""
        m = self.manifest
        rows = [("workspace", str(self.root)), ("modality", m["modality"]),
                ("source CT", f"{len(m['data']['source_images'])} labelled"),
                ("target scans", str(len(m["data"]["target_images"])))]
        pipeline = self.pipeline()
        if pipeline is not None:
            rows.append(("pipeline", f"{pipeline.variant}, {pipeline.budget}" + ", test-time mirroring" * pipeline.tta
                         + ("" if pipeline.crop_margin_mm is None else f", coarse-to-fine ({pipeline.crop_margin_mm:g} mm)")
                         + ("" if pipeline.transfer_from is None else f", labels transferred from {pipeline.transfer_from} "
                            f"(pairs by {pipeline.transfer_pair_by})")))
        rows += [(f"translator {k}", f"{self.translator(k).iterations} iterations") for k in m["translators"]]
        rows += [(f"model {k}", f"dataset {v.dataset}, {v.budget}, folds {v.folds}") for k, v in self.models().items()]
        rows += [(f"stage {k}", v.status) for k, v in self.stages().items()]
        rows += [(f"round {r.round}", f"{r.accepted} accepted pseudo-labels"
                  + (f", next selected by {r.select}" if r.select else "")) for r in self.rounds()]
        if review_counts:
            rows.append(("review", ", ".join(f"{n} {state}" for state, n in review_counts.items())))
        return rows

