"""``review queue|decide|export``: the pseudo-label review from a terminal."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_uda.cli.options import add_dataset, add_json, add_pairing, add_target_modality, add_workspace
from napari_uda.core.errors import UdaError


def register(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("review", help="pseudo-label review: queue, decide, export accepted cases").add_subparsers(
        dest="review_command", required=True, metavar="ACTION")
    p = rp.add_parser("queue", help="cases ranked by score, with filter outcomes and current decision")
    add_workspace(p)
    add_target_modality(p, required=False, help="only cases of this modality")
    add_json(p)
    p.set_defaults(func=cmd_queue)

    p = rp.add_parser("decide", help="accept, reject, accept an edited label, or undo the last decision")
    add_workspace(p)
    p.add_argument("--case", required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--accept", action="store_true")
    group.add_argument("--reject", action="store_true")
    group.add_argument("--undo", action="store_true")
    p.add_argument("--label", type=Path, default=None, help="the reviewer's edited label (with --accept)")
    p.add_argument("--note", default="")
    p.add_argument("--reviewer", required=True)
    add_json(p)
    p.set_defaults(func=cmd_decide)

    p = rp.add_parser("export", help="accepted cases (edited labels where edited) + translated CT as an nnU-Net dataset")
    add_workspace(p)
    add_dataset(p)
    p.add_argument("--name", required=True)
    add_target_modality(p, help="channel name of the dataset, e.g. T2WI")
    p.add_argument("--translated-ct", type=Path, default=None)
    p.add_argument("--ct-labels", type=Path, default=None)
    p.set_defaults(func=cmd_export)

    p = rp.add_parser("transfer", help="ASIT's label transfer: pseudo-labels of the same patients' scans in another "
                                       "sub-domain, registered onto the target scans, into the queue as transferred")
    add_workspace(p)
    p.add_argument("--scans", required=True, type=Path, help="the other sub-domain's scans (e.g. T1 phases)")
    p.add_argument("--labels", required=True, type=Path, help="their labels or pseudo-labels (same file names)")
    add_pairing(p)
    add_json(p)
    p.set_defaults(func=cmd_transfer)


def cmd_queue(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from napari_uda.review.store import ReviewStore

    with ReviewStore.for_workspace(args.workspace) as store:
        rows = store.queue(args.modality)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    for r in rows:
        score = f"{r.case_score:.3f}" if r.case_score is not None else "  -  "
        state = r.state + ("*" if r.state != "not reviewed" and not r.decided_on_latest else "")
        print(f"{r.case:<24} {r.modality:<9} score {score}  {state:<13} {'; '.join(r.failed) or 'filters passed'}")
    if any(r.state != "not reviewed" and not r.decided_on_latest for r in rows):
        print("* decided on an earlier round's prediction")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from napari_uda.core.io import read_volume
    from napari_uda.review.store import ReviewStore

    action = "edited" if args.label else ("accept" if args.accept else "reject" if args.reject else "undo")
    if args.label and not args.accept:
        raise UdaError("--label is the edited label of an accepted case: use it with --accept")
    edited = read_volume(args.label) if args.label else None
    with ReviewStore.for_workspace(args.workspace) as store:
        d = store.decide(args.case, action, args.reviewer, args.note, edited_label=edited, label_name=str(args.label))
        state, _ = store.state(args.case)
    if args.json:
        print(json.dumps({"id": d.id, "case": d.case_id, "action": d.action, "reviewer": d.reviewer, "at": d.at,
                          "label_hash": d.label_hash, "label_path": d.label_path, "state": state}))
    else:
        print(f"{d.case_id}: {d.action} by {d.reviewer} at {d.at}; now {state}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from napari_uda.core.files import list_volumes, pair_labels
    from napari_uda.review.store import ReviewStore
    from napari_uda.segment.segmenter import export_dataset

    with ReviewStore.for_workspace(args.workspace) as store:
        accepted = store.accepted()
        case_images, case_labels = store.training_pairs(accepted)
    images, labels = [], []
    if args.translated_ct and not args.ct_labels:
        raise UdaError("--translated-ct needs --ct-labels (the CT labels, same file names)")
    if args.translated_ct:
        ct = list_volumes(args.translated_ct)
        images, labels = list(ct), pair_labels(ct, args.ct_labels)
    images += case_images
    labels += case_labels
    if not images:
        raise UdaError("nothing to export: no accepted cases and no --translated-ct")
    target = export_dataset(args.workspace, args.dataset, args.name, images, labels, args.modality)
    print(f"exported {len(accepted)} accepted case(s) and {len(images) - len(accepted)} translated CT case(s) to {target}")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from napari_uda.core.workspace import Workspace
    from napari_uda.pipeline.transfer import transfer_from_folders

    done = transfer_from_folders(Workspace.open(args.workspace), args.scans, args.labels, args.patient, args.console,
                                 pair_by=args.pair_by)
    if args.json:
        print(json.dumps(done, indent=2))
        return 0
    for case, reason in done.items():
        print(f"{case}: transferred {reason}")
    print(f"{len(done)} transferred label(s) await review: `napari-uda review queue --workspace {args.workspace}`")
    return 0
