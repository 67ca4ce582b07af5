"""ASIT's multi-domain matching in a workspace: pseudo-labels of the same patients' scans in another
sub-domain (one where the segmenter is good, such as the T1 phases) carried onto the workspace's
target scans by affine registration (:mod:`napari_uda.pseudo.label_transfer`); each transferred
label becomes its case's latest pseudo-label in the review queue, marked ``transferred`` with the
scan it came from, so that a person decides on it as on any other. Scans are paired by patient name
(:func:`match_patients`) or, where the names differ, by volume matching in Sobel space
(:func:`match_by_volume`). The labels come from folders (:func:`transfer_from_folders`, ``review
transfer``) or, in the pipeline (``--transfer-from``), from another workspace's final predictions
(:func:`transfer_from_workspace`), before every round's acceptance."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_uda.core.choices import PAIRINGS
from napari_uda.core.errors import UdaError
from napari_uda.core.files import list_volumes, pair_labels, stem_of
from napari_uda.core.io import read_scan, write_volume
from napari_uda.core.jobs import Progress, StopFlag, check_stop, emit
from napari_uda.core.workspace import Workspace
from napari_uda.pseudo.filters import FilterResult
from napari_uda.pseudo.label_transfer import transfer_label_files
from napari_uda.pseudo.volume_matching import match_volumes, sobel_signature
from napari_uda.review.store import ReviewStore

Paired = tuple[Path, Path, str]  # (target scan, the other sub-domain's scan of its patient, how they were paired)

TRANSFERRED = "transferred"  # the filter outcome, the model's name suffix and W/predictions/transferred/


@dataclass(frozen=True)
class TransferFrom:
    """Multi-domain matching in the pipeline (``--transfer-from``): the workspace of the same patients
    in another sub-domain whose final labels are transferred (None: none), and how scans are paired."""

    workspace: str | None
    pair_by: str = "name"
    patient: str | None = None  # pairing by name: the patient's regular expression (None: the case name)

    def fields(self) -> dict[str, str | None]:
        """As the pipeline's record (:class:`napari_uda.core.records.PipelineRecord`) holds it."""
        return {"transfer_from": self.workspace, "transfer_pair_by": self.pair_by, "transfer_patient": self.patient}

    def check(self, ws: Workspace) -> None:
        """One line before any work where the transfer could not run: no such workspace or final
        labels, the workspace itself, a bad pairing, or (by name) no patient in common."""
        if self.workspace is None:
            return
        _, labels = final_labels(self.workspace, ws)
        if self.pair_by == "name":
            match_patients(ws.files("target_images"), list(labels), self.patient)
        else:
            pair_scans([], [], self.pair_by, self.patient)


def patient_key(path: Path, pattern: str | None) -> str | None:
    """The patient a scan belongs to: its case name, or the first group (else the whole match) of
    ``pattern`` searched in it; None where ``pattern`` does not match."""
    case = stem_of(path)
    if pattern is None:
        return case
    found = re.search(pattern, case)
    if found is None:
        return None
    return found.group(1) if found.groups() else found.group(0)


def match_patients(targets: Sequence[Path], scans: Sequence[Path], pattern: str | None = None) -> list[Paired]:
    """The pairs of every target whose patient (:func:`patient_key`) has exactly one scan among
    ``scans``; an error if two scans claim one patient or none matches."""
    try:
        re.compile(pattern or "")
    except re.error as exc:
        raise UdaError(f"--patient {pattern!r}: not a regular expression ({exc})") from None
    by_patient: dict[str, Path] = {}
    for scan in scans:
        key = patient_key(scan, pattern)
        if key is None:
            continue
        if key in by_patient:
            raise UdaError(f"{scan}: patient {key!r} also has {by_patient[key].name}; one scan per patient")
        by_patient[key] = scan
    pairs = [(t, by_patient[k], f"patient {k!r}") for t in targets if (k := patient_key(t, pattern)) is not None
             and k in by_patient]
    if not pairs:
        raise UdaError(f"none of the {len(scans)} scans belongs to a patient of the workspace's {len(targets)} target "
                       "scans (patients are case names" + (f" matched by {pattern!r})" if pattern else ")"))
    return pairs


def _signature(path: Path) -> np.ndarray:
    """The file's Sobel signature; a bad scan is one line naming it."""
    volume = read_scan(path)
    try:
        return sobel_signature(volume)
    except UdaError as exc:
        raise UdaError(f"{path}: {exc}") from None


def match_by_volume(targets: Sequence[Path], scans: Sequence[Path], progress: Progress | None = None,
                    should_stop: StopFlag | None = None) -> list[Paired]:
    """The pairs by volume matching
    (:func:`napari_uda.pseudo.volume_matching.match_volumes`): min(len(targets), len(scans)) pairs,
    each noted with its similarity and the target's next best."""
    signatures = []
    for i, path in enumerate([*targets, *scans]):
        check_stop(should_stop, "volume matching", "run it again")
        signatures.append(_signature(path))
        emit(progress, "volume matching", f"{path.name}: Sobel signature", i + 1, len(targets) + len(scans), "scans")
    matches = match_volumes(signatures[:len(targets)], signatures[len(targets):])
    return [(targets[m.target], scans[m.source], f"volume matching, similarity {m.similarity:.2f}, next best "
             f"{m.runner_up:.2f}") for m in matches]


def transfer_into_review(ws: Workspace, store: ReviewStore, pairs: Sequence[tuple[Path, Path, Path, str]],
                         progress: Progress | None = None, should_stop: StopFlag | None = None,
                         origin: str | None = None, keep_done: bool = False) -> dict[str, str]:
    """For each (target scan, other sub-domain scan, its label, how the two were paired): the label
    carried onto the target scan, written to ``W/predictions/transferred/r<R>/<case>.nii.gz`` and
    recorded as the case's latest pseudo-label (model ``<workspace>:transferred:r<R>`` of the latest round R, 0 before any)
    with the scores and filters of its previous one plus a ``transferred`` outcome naming the source
    scan (in ``origin``, e.g. another workspace) and the registration's metric. With ``keep_done`` a
    case whose latest pseudo-label is already this round's transfer is left as it is. Cases done are
    kept when the run is stopped. Returns case -> the outcome's reason, for the cases transferred now."""
    r = max((x.round for x in ws.rounds()), default=0)
    folder = ws.predictions_dir(TRANSFERRED) / f"r{r}"
    model_id = store.add_model(f"{ws.root.name}:{TRANSFERRED}:r{r}", folder, r,
                               {"kind": "label transfer (affine, Mattes mutual information)", "from": origin})
    rows = {row.case: row for row in store.queue(ws.modality)}
    kept = {c for c, row in rows.items() if row.label == str(folder / f"{c}.nii.gz")} if keep_done else set()
    todo = [p for p in pairs if stem_of(p[0]) not in kept]
    done: dict[str, str] = {}
    for i, (target, scan, label, paired_by) in enumerate(todo):
        check_stop(should_stop, TRANSFERRED, "run it again to transfer the rest")
        case = stem_of(target)
        result = transfer_label_files(label, scan, target)
        out = write_volume(result.label, folder / f"{case}.nii.gz")
        if case not in rows:
            store.add_case(case, target, ws.modality)
        reason = (f"from {scan.name}{f' of {origin}' if origin else ''} ({paired_by}) by affine registration "
                  f"(Mattes mutual information {result.metric:.3f})")
        store.add_replacement(case, model_id, out, FilterResult(TRANSFERRED, True, reason), rows.get(case))
        done[case] = reason
        emit(progress, TRANSFERRED, f"{case}: label transferred {reason}", i + 1, len(todo), "cases")
    return done


def pair_scans(targets: Sequence[Path], sources: Sequence[Path], pair_by: str = "name", pattern: str | None = None,
               progress: Progress | None = None, should_stop: StopFlag | None = None) -> list[Paired]:
    """Each target scan with its patient's scan among ``sources``: ``pair_by`` "name"
    (:func:`match_patients` by ``pattern``) or "volume" (:func:`match_by_volume`)."""
    if pair_by not in PAIRINGS:
        raise UdaError(f"pair scans by one of {', '.join(PAIRINGS)}, not {pair_by!r}")
    if pair_by == "volume" and pattern is not None:
        raise UdaError("--patient names patients; volume matching pairs scans without names: give one of the two")
    return (match_patients(targets, sources, pattern) if pair_by == "name"
            else match_by_volume(targets, sources, progress, should_stop))


def transfer_from_folders(ws: Workspace, scans: str | Path, labels: str | Path, pattern: str | None = None,
                          progress: Progress | None = None, should_stop: StopFlag | None = None,
                          pair_by: str = "name") -> dict[str, str]:
    """:func:`transfer_into_review` of the labels in the folder ``labels`` (same file names as the
    scans in ``scans``, the other sub-domain) onto the workspace's target scans of the same patients
    (:func:`pair_scans` by ``pair_by`` and ``pattern``)."""
    sources = list_volumes(scans)
    label_of = dict(zip(sources, pair_labels(sources, labels)))
    matched = pair_scans(ws.files("target_images"), sources, pair_by, pattern, progress, should_stop)
    pairs = [(t, s, label_of[s], how) for t, s, how in matched]
    with ReviewStore.for_workspace(ws.root) as store:
        return transfer_into_review(ws, store, pairs, progress, should_stop)


def final_labels(other: str | Path, ws: Workspace) -> tuple[Workspace, dict[Path, Path]]:
    """The workspace ``other`` (not ``ws`` itself) and its target scans' final (post-processed)
    predictions, scan -> label; one line naming the workspace where it has none yet."""
    src = Workspace.open(other)
    if src.root.resolve() == ws.root.resolve():
        raise UdaError(f"{ws.root}: a workspace cannot transfer labels from itself; give the other sub-domain's")
    final = src.stage("final")
    if final is None:
        raise UdaError(f"{src.root}: no final predictions to transfer labels from; run its pipeline to the end "
                       "first")
    labels = {scan: Path(final.predictions) / f"{stem_of(scan)}.nii.gz" for scan in src.files("target_images")}
    missing = [p for p in labels.values() if not p.exists()]
    if missing:
        raise UdaError(f"{missing[0]}: a final prediction of {src.root} is missing ({len(missing)} of {len(labels)}); "
                       "run its pipeline again to write them")
    return src, labels


def transfer_from_workspace(ws: Workspace, store: ReviewStore, other: str | Path, pair_by: str = "name",
                            pattern: str | None = None, progress: Progress | None = None,
                            should_stop: StopFlag | None = None) -> dict[str, str]:
    """:func:`transfer_into_review` of the final predictions of the workspace ``other`` (the same
    patients in another sub-domain, :func:`final_labels`) onto this workspace's target scans
    (:func:`pair_scans`), leaving the cases this round transferred already (``keep_done``)."""
    src, labels = final_labels(other, ws)
    matched = pair_scans(ws.files("target_images"), list(labels), pair_by, pattern, progress, should_stop)
    pairs = [(t, s, labels[s], how) for t, s, how in matched]
    return transfer_into_review(ws, store, pairs, progress, should_stop, origin=str(src.root), keep_done=True)
