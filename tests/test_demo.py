"""The main job's bundled path: the committed model folder on the sample data, no training."""
from __future__ import annotations

import json

import pytest

from napari_uda.core.workspace import Workspace
from napari_uda.data.sample_data import sample_data_dir
from napari_uda.napari.demo import BUNDLED_MODEL
from napari_uda.review.store import ReviewStore

pytestmark = pytest.mark.slow


def test_bundled_model_on_the_sample_data(bundled_run):
    folder = sample_data_dir() / "models" / BUNDLED_MODEL
    meta = json.loads((folder / "model.json").read_text())
    assert meta["format"] == "napari-uda-model" and meta["modality"] == "T2WI"
    assert sum(p.stat().st_size for p in folder.rglob("*")) < 40e6  # the bound for bundled models
    assert not [p for p in folder.rglob("*") if p.suffix in (".pth", ".pkl", ".pt")]
    workspace, table = bundled_run
    ws = Workspace.open(workspace)
    assert ws.model("organ_attention").imported_stage == meta["model_stage"]
    assert len(list((workspace / "translated/organ-attention").glob("*.nii.gz"))) == 3  # the sample CT, translated
    assert len(list((workspace / "translated/organ-attention_attention").glob("*.nii.gz"))) == 3
    with ReviewStore.for_workspace(workspace) as store:
        assert len(store.queue("T2WI")) == 2  # real candidates for review
    assert f"| bundled {meta['model_stage']} | final |" in table and "| **mean** |" in table
    # the evaluation the README quotes is what the demo computes
    report = json.loads((workspace / "reports/evaluation_final.json").read_text())
    assert report["summary"]["all"]["dsc_mean"] == pytest.approx(meta["evaluation"]["summary"]["all"]["dsc_mean"], abs=1e-6)
    # the last line printed names both metrics: an NSD table last is not read as the DSC
    final = report["summary"]["all"]
    assert table.rstrip().splitlines()[-1] == (f"final: mean DSC {final['dsc_mean']:.3f}, mean NSD {final['nsd_mean']:.3f} "
                                               "(13 organs, 2 scans)")
