"""``evaluate``: DSC and NSD of a folder of predictions, FLARE's rules."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_uda.cli.options import OUTPUT_PREFIX, add_target_modality, bounded


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="DSC and NSD per case and organ (FLARE rules) as JSON, CSV and Markdown")
    p.add_argument("--pred", required=True, type=Path)
    p.add_argument("--gt", required=True, type=Path)
    p.add_argument("--tolerance-mm", type=bounded(float, 1e-6, 1000.0), default=None,
                   help="one NSD tolerance for all organs (default: FLARE's per organ)")
    add_target_modality(p, required=False, default="MRI", help="PET modalities are scored on liver, kidneys and spleen only")
    p.add_argument("--out", required=True, type=OUTPUT_PREFIX, help="FILE: writes FILE.json, FILE.csv and FILE.md")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from napari_uda.core.modalities import get_modality
    from napari_uda.evaluate.evaluation import evaluate_folders

    ev = evaluate_folders(args.pred, args.gt, args.tolerance_mm, get_modality(args.modality).kind,
                          progress=args.console)
    paths = ev.write(args.out)
    print(ev.to_markdown())
    if ev.missing:
        print(f"missing predictions (scored as empty): {', '.join(ev.missing)}", file=sys.stderr)
    if ev.extra:
        print(f"predictions without ground truth (not scored): {', '.join(ev.extra)}", file=sys.stderr)
    print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return 0
