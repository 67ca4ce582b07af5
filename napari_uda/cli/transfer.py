"""``transfer-label``: ASIT's label transfer from one sub-domain's scan of a patient to another's."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer-label", help="carry a label map to the same patient's scan in another sub-domain "
                                              "(affine registration, mutual information)")
    p.add_argument("--label", required=True, type=Path, help="the label map, on MOVING's grid")
    p.add_argument("--moving", required=True, type=Path, help="the scan the label belongs to")
    p.add_argument("--fixed", required=True, type=Path, help="the same patient's scan in the other sub-domain")
    p.add_argument("--out", required=True, type=Path, help="the transferred label map (on FIXED's grid)")
    p.set_defaults(func=cmd_transfer)


def cmd_transfer(args: argparse.Namespace) -> int:
    from napari_uda.core.io import write_volume
    from napari_uda.pseudo.label_transfer import transfer_label_files

    result = transfer_label_files(args.label, args.moving, args.fixed)
    write_volume(result.label, args.out)
    print(f"wrote {args.out} (Mattes mutual information {result.metric:.3f})", file=sys.stderr)
    return 0
