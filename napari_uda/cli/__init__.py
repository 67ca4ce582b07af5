"""The ``napari-uda`` command line: every widget action has a sub-command here, on the same library
functions; ``python -m napari_uda.cli`` runs it.

May import: core, evaluate, segment, translate, pseudo, review, data, pipeline, cluster, napari.
"""

from napari_uda.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
