"""Shared fixtures: small phantom cases, an artefact folder for screenshots, the bundled model run
on the sample data (what the demo does)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("nnUNet_n_proc_DA", "0")
ROOT = Path(__file__).resolve().parent.parent
SMALL = (24, 48, 48)


@pytest.fixture(scope="session")
def artifact_dir() -> Path:
    """Screenshots and reports from the tests land here (git-ignored) so people can look at them."""
    path = ROOT / "test_artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def bundled_run(tmp_path_factory) -> tuple[Path, str]:
    """(workspace, evaluation table) of the bundled model on the sample data, run serially once
    for the tests that read it (the demo's, the cluster's)."""
    from napari_uda.napari.demo import run_sample_bundled

    return run_sample_bundled(tmp_path_factory.mktemp("bundled"))


@pytest.fixture(scope="session")
def small_ct():
    """A small CT phantom case: (image, labels)."""
    from napari_uda.data.phantom import make_case

    return make_case("ct", 0, seed=1, shape=SMALL)


class Planted:
    """Unpickling this creates the file ``marker``: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
