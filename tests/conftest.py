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


#: A translator small enough to train in seconds on CPU (TranslatorConfig keyword arguments)
TINY_TRANSLATOR = dict(size=32, ngf=8, ndf=8, n_blocks=2, s_base=8, preview_every=0)


def translator_phantom(root: Path, seed: int, n_ct: int = 3) -> dict[str, list[Path]]:
    """A small CT + T2WI phantom (16 x 40 x 40) in ``root`` for translator tests: the paths of the CT
    (``ct``), their labels (``labels``) and the T2WI scans (``t2``, 3 of them)."""
    from napari_uda.core.files import list_volumes
    from napari_uda.data.phantom import write_phantom_dataset

    write_phantom_dataset(root, {"ct": n_ct, "t2wi": 3}, seed=seed, shape=(16, 40, 40))
    return {"ct": list_volumes(root / "ct/images"), "labels": list_volumes(root / "ct/labels"),
            "t2": list_volumes(root / "t2wi/images")}
