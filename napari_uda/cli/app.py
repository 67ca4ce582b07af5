"""The parser (every command group registers its commands) and the entry point's safety net."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from napari_uda.cli import data, demo, evaluate, models, review, segment, transfer, translate, workflow
from napari_uda.cli.console import Console
from napari_uda.core.errors import UdaError
from napari_uda.core.jobs import Cancelled

GROUPS = (data, translate, segment, models, review, transfer, workflow, evaluate, demo)  # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-uda",
        description="Unsupervised domain adaptation of abdominal organ segmentation from CT to MRI and PET.",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="no progress output (results and errors still print)")
    output.add_argument("--log-json", action="store_true",
                        help="progress as one JSON object per line on stderr (for machines and the widgets)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 1, never a traceback."""
    from napari_uda.core.child import terminate_children_on_sigterm

    args = build_parser().parse_args(argv)
    args.console = Console(quiet=args.quiet, log_json=args.log_json)
    terminate_children_on_sigterm()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except Cancelled as exc:  # asked for (SIGTERM, Ctrl-C in a job that polls): what it saved is kept
        print(f"napari-uda: {exc}", file=sys.stderr)
        return 130
    except UdaError as exc:
        print(f"napari-uda: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("napari-uda: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen input: one line here, the traceback in a log
        log = _write_traceback(getattr(args, "workspace", None))
        print(f"napari-uda: error: unexpected {type(exc).__name__}: {exc} (traceback in {log})", file=sys.stderr)
        return 1


def _write_traceback(workspace: Path | None) -> Path:
    """Append the current exception's traceback to ``W/logs/errors.log`` (or the temp folder's
    ``napari-uda-errors.log`` outside a workspace); returns that path."""
    import tempfile
    import traceback

    from napari_uda.core.files import utc_timestamp

    logs = Path(workspace) / "logs" if workspace is not None and Path(workspace).is_dir() else None
    path = logs / "errors.log" if logs is not None else Path(tempfile.gettempdir()) / "napari-uda-errors.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"--- {utc_timestamp()} napari-uda {' '.join(sys.argv[1:])}\n")
        f.write(traceback.format_exc())
    return path
