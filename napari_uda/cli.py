"""The ``napari-uda`` command line: every widget action has a sub-command here."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import UdaError


def _cmd_info(args: argparse.Namespace) -> int:
    from .io import format_info, read_volume, volume_info

    for path in args.files:
        info = volume_info(read_volume(path))
        print(json.dumps({"file": str(path), **info}, indent=2) if args.json else format_info(path, info))
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from .phantom import write_phantom_dataset

    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    manifest = write_phantom_dataset(
        args.out, {m: args.cases for m in modalities}, seed=args.seed, shape=tuple(args.shape),
        progress=lambda i, n, name: print(f"[{i}/{n}] {name}", file=sys.stderr),
    )
    print(f"wrote {sum(len(v) for v in manifest['files'].values())} cases to {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), headless=args.headless)


def build_parser() -> argparse.ArgumentParser:
    from .phantom import DEFAULT_SHAPE, PHANTOM_MODALITIES

    parser = argparse.ArgumentParser(
        prog="napari-uda",
        description="Unsupervised domain adaptation of abdominal organ segmentation from CT to MRI and PET.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="print shape, spacing, origin, direction, dtype and intensity percentiles")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="volume file or DICOM folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("phantom", help="write synthetic abdominal patients (images and organ labels)")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--cases", type=int, default=2, help="patients per modality (default 2)")
    p.add_argument("--modalities", default="ct,t2wi",
                   help="comma-separated, from: " + ",".join(m.slug for m in PHANTOM_MODALITIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("Z", "Y", "X"))
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("demo", help="open napari with the plugin's widgets and the sample data "
                                    "(headless: screenshots and a report)")
    p.add_argument("--out", default="demo_output", help="where headless screenshots and the report go")
    p.add_argument("--headless", action="store_true", help="do not wait for the user; write screenshots and exit")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 1, never a traceback."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UdaError as exc:
        print(f"napari-uda: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("napari-uda: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
