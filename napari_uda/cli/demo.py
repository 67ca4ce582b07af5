"""``demo``: the main job, the method on the bundled sample data in napari."""
from __future__ import annotations

import argparse
from pathlib import Path

from napari_uda.cli.options import OUTPUT_FOLDER


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="open napari with the plugin's widgets and the sample data "
                                    "(headless: screenshots and a report)")
    p.add_argument("--out", type=OUTPUT_FOLDER, default="demo_output", help="where headless screenshots and the report go")
    p.add_argument("--headless", action="store_true", help="do not wait for the user; write screenshots and exit")
    p.add_argument("--train", action="store_true",
                   help="run the whole method from scratch instead of the bundled model (minutes to an hour)")
    p.add_argument("--budget", default="tiny", help="budget of --train (default tiny: minutes on a CPU, a poor model)")
    p.add_argument("--skip-pipeline", action="store_true", help="only open the viewer with the sample data and widgets")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from napari_uda.napari.demo import run_demo

    return run_demo(Path(args.out), headless=args.headless, budget=args.budget, pipeline=not args.skip_pipeline,
                    train=args.train, progress=args.console)
