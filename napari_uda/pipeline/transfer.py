"""ASIT's multi-domain matching in a workspace: pseudo-labels of the same patients' scans in another
sub-domain (one where the segmenter is good, such as the T1 phases) carried onto the workspace's
target scans by affine registration (:mod:`napari_uda.pseudo.label_transfer`); each transferred
label becomes its case's latest pseudo-label in the review queue, marked ``transferred`` with the
scan it came from, so that a person decides on it as on any other."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from napari_uda.core.errors import UdaError
from napari_uda.core.files import list_volumes, pair_labels, stem_of
from napari_uda.core.io import write_volume
from napari_uda.core.jobs import Progress, StopFlag, check_stop, emit
from napari_uda.core.workspace import Workspace
from napari_uda.pseudo.filters import FilterResult
from napari_uda.pseudo.label_transfer import transfer_label_files
from napari_uda.review.store import ReviewStore

TRANSFERRED = "transferred"  # the filter outcome, the model's name suffix and W/predictions/transferred/


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


def match_patients(targets: Sequence[Path], scans: Sequence[Path], pattern: str | None = None) -> list[tuple[Path, Path]]:
    """(target scan, other sub-domain scan) of every target whose patient (:func:`patient_key`) has
    exactly one scan among ``scans``; an error if two scans claim one patient or none matches."""
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
    pairs = [(t, by_patient[k]) for t in targets if (k := patient_key(t, pattern)) is not None and k in by_patient]
    if not pairs:
        raise UdaError(f"none of the {len(scans)} scans belongs to a patient of the workspace's {len(targets)} target "
                       "scans (patients are case names" + (f" matched by {pattern!r})" if pattern else ")"))
    return pairs


def transfer_into_review(ws: Workspace, store: ReviewStore, pairs: Sequence[tuple[Path, Path, Path]],
                         progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict[str, str]:
    """For each (target scan, other sub-domain scan, its label): the label carried onto the target
    scan, written to ``W/predictions/transferred/r<R>/<case>.nii.gz`` and recorded as the case's
    latest pseudo-label (model ``<workspace>:transferred:r<R>`` of the latest round R, 0 before any)
    with the scores and filters of its previous one plus a ``transferred`` outcome naming the source
    scan and the registration's metric. Cases done are kept when the run is stopped. Returns case ->
    the outcome's reason."""
    r = max((x.round for x in ws.rounds()), default=0)
    folder = ws.predictions_dir(TRANSFERRED) / f"r{r}"
    model_id = store.add_model(f"{ws.root.name}:{TRANSFERRED}:r{r}", folder, r,
                               {"kind": "label transfer (affine, Mattes mutual information)"})
    rows = {row.case: row for row in store.queue(ws.modality)}
    done: dict[str, str] = {}
    for i, (target, scan, label) in enumerate(pairs):
        check_stop(should_stop, TRANSFERRED, "run it again to transfer the rest")
        case = stem_of(target)
        result = transfer_label_files(label, scan, target)
        out = write_volume(result.label, folder / f"{case}.nii.gz")
        if case not in rows:
            store.add_case(case, target, ws.modality)
        reason = f"from {scan.name} by affine registration (Mattes mutual information {result.metric:.3f})"
        store.add_replacement(case, model_id, out, FilterResult(TRANSFERRED, True, reason), rows.get(case))
        done[case] = reason
        emit(progress, TRANSFERRED, f"{case}: label transferred {reason}", i + 1, len(pairs), "cases")
    return done


def transfer_from_folders(ws: Workspace, scans: str | Path, labels: str | Path, pattern: str | None = None,
                          progress: Progress | None = None, should_stop: StopFlag | None = None) -> dict[str, str]:
    """:func:`transfer_into_review` of the labels in the folder ``labels`` (same file names as the
    scans in ``scans``, the other sub-domain) onto the workspace's target scans of the same patients
    (:func:`match_patients` by ``pattern``)."""
    sources = list_volumes(scans)
    label_of = dict(zip(sources, pair_labels(sources, labels)))
    pairs = [(t, s, label_of[s]) for t, s in match_patients(ws.files("target_images"), sources, pattern)]
    with ReviewStore.for_workspace(ws.root) as store:
        return transfer_into_review(ws, store, pairs, progress, should_stop)
