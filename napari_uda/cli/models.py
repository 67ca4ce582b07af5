"""``models export``: hand a stage's models to others as safetensors + JSON, never a pickle."""
from __future__ import annotations

import argparse

from napari_uda.cli.options import OUTPUT_FOLDER, add_workspace


def register(sub: argparse._SubParsersAction) -> None:
    mp = sub.add_parser("models", help="hand models to others: safetensors + JSON, never a pickle").add_subparsers(
        dest="models_command", required=True, metavar="ACTION")
    p = mp.add_parser("export", help="write a stage's nnU-Net folds and translator as a model folder")
    add_workspace(p)
    p.add_argument("--stage", required=True, help="a trained stage (e.g. organ_attention, self_training_r1, final)")
    p.add_argument("--out", required=True, type=OUTPUT_FOLDER, help="the model folder to write (must not exist)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from napari_uda.core.workspace import Workspace
    from napari_uda.pipeline.export import export_stage

    out = export_stage(Workspace.open(args.workspace), args.stage, args.out)
    print(f"exported stage {args.stage} to {out}")
    return 0
