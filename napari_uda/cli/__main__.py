"""``python -m napari_uda.cli``: the command line."""
from napari_uda.cli.app import main

raise SystemExit(main())
