"""``info`` and ``phantom``: look at a volume, make synthetic patients."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_uda.cli.options import COUNT, OUTPUT_FOLDER, add_json, bounded


def register(sub: argparse._SubParsersAction) -> None:
    from napari_uda.data.phantom import DEFAULT_SHAPE, PHANTOM_MODALITIES

    p = sub.add_parser("info", help="print shape, spacing, origin, direction, dtype and intensity percentiles")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="volume file or DICOM folder")
    add_json(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("phantom", help="write synthetic abdominal patients (images and organ labels)")
    p.add_argument("out", type=OUTPUT_FOLDER, metavar="OUT")
    p.add_argument("--cases", type=COUNT, default=2, help="patients per modality (default 2)")
    p.add_argument("--modalities", default="ct,t2wi",
                   help="comma-separated, from: " + ",".join(m.slug for m in PHANTOM_MODALITIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=bounded(int, 8, 2048), nargs=3, default=list(DEFAULT_SHAPE), metavar=("Z", "Y", "X"))
    p.set_defaults(func=cmd_phantom)


def cmd_info(args: argparse.Namespace) -> int:
    from napari_uda.core.io import format_info, read_volume, volume_info

    for path in args.files:
        info = volume_info(read_volume(path))
        print(json.dumps({"file": str(path), **info}, indent=2) if args.json else format_info(path, info))
    return 0


def cmd_phantom(args: argparse.Namespace) -> int:
    from napari_uda.data.phantom import write_phantom_dataset

    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    manifest = write_phantom_dataset(
        args.out, {m: args.cases for m in modalities}, seed=args.seed, shape=tuple(args.shape),
        progress=args.console,
    )
    print(f"wrote {sum(len(v) for v in manifest['files'].values())} cases to {args.out}")
    return 0
