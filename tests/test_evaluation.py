"""Evaluation of prediction folders: hand-computed DSC/NSD, matching by name, missing and extra cases."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_uda.core.errors import UdaError
from napari_uda.core.io import Geometry, Volume, write_volume
from napari_uda.core.organs import ORGAN_INDICES, PET_SCORED
from napari_uda.evaluate.evaluation import compare_markdown, evaluate_folders
from napari_uda.evaluate.metrics import surface_dice

GEOMETRY = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
LIVER = 1


def _labels(z: int) -> np.ndarray:
    a = np.zeros((10, 10, 10), np.uint8)
    a[2:2 + z, 3:7, 3:7] = LIVER  # a 4x4 liver, z slices thick
    return a


@pytest.fixture
def folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for name in ("a", "b", "c"):
        write_volume(Volume(_labels(4), GEOMETRY), gt / f"{name}.nii.gz")
    write_volume(Volume(_labels(4), GEOMETRY), pred / "a.nii.gz")  # perfect
    write_volume(Volume(_labels(2), GEOMETRY), pred / "b.nii.gz")  # half the liver
    write_volume(Volume(_labels(4), GEOMETRY), pred / "d.nii.gz")  # no ground truth
    return pred, gt


def test_hand_computed_scores_missing_and_extra(folders):
    ev = evaluate_folders(*folders)
    assert ev.missing == ["c"] and ev.extra == ["d"]
    by_case = {c["case"]: c for c in ev.cases}
    assert set(by_case) == {"a", "b", "c"} and by_case["c"]["missing"]
    assert by_case["a"]["organs"][LIVER] == {"dsc": 1.0, "nsd": 1.0}
    assert by_case["b"]["organs"][LIVER]["dsc"] == pytest.approx(2 * 32 / (64 + 32))
    assert by_case["c"]["organs"][LIVER] == {"dsc": 0.0, "nsd": 0.0}  # a missing prediction scores as empty
    assert all(by_case["b"]["organs"][o] == {"dsc": 1.0, "nsd": 1.0} for o in ORGAN_INDICES if o != LIVER)  # absent in both
    s = ev.summary()
    assert s["liver"]["dsc_mean"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert s["liver"]["dsc_median"] == pytest.approx(2 / 3)
    assert s["all"]["dsc_mean"] == pytest.approx(np.mean([1.0, (12 + 2 / 3) / 13, 12 / 13]))


def test_tolerance_override(folders):
    pred, gt = folders
    tight = evaluate_folders(pred, gt, tolerance_mm=0.5)
    b = next(c for c in tight.cases if c["case"] == "b")["organs"][LIVER]["nsd"]
    assert b == pytest.approx(surface_dice(_labels(2) == LIVER, _labels(4) == LIVER, (1.0, 1.0, 1.0), 0.5))
    assert 0 < b < 1
    loose = evaluate_folders(pred, gt, tolerance_mm=100.0)
    assert next(c for c in loose.cases if c["case"] == "b")["organs"][LIVER]["nsd"] == 1.0
    with pytest.raises(UdaError, match="tolerance"):
        evaluate_folders(pred, gt, tolerance_mm=0)


def test_pet_scores_four_organs(folders):
    assert evaluate_folders(*folders, modality_kind="pet").organs == PET_SCORED


def test_outputs_json_csv_markdown(folders, tmp_path):
    ev = evaluate_folders(*folders)
    paths = ev.write(tmp_path / "out" / "eval.json")
    assert [p.name for p in paths] == ["eval.json", "eval.csv", "eval.md"]
    data = json.loads(paths[0].read_text())
    assert data["n_cases"] == 3 and data["missing"] == ["c"] and data["extra"] == ["d"]
    assert data["cases"][1]["organs"]["liver"]["dsc"] == pytest.approx(2 / 3)
    rows = paths[1].read_text().splitlines()
    assert rows[0] == "case,organ,dsc,nsd,missing_prediction" and len(rows) == 1 + 3 * 13
    md = paths[2].read_text()
    assert "| liver | 0.556 | 0.667 |" in md and "missing predictions (scored as empty): c" in md
    table = compare_markdown({"x": ev, "y": ev})
    assert "| liver | 0.556 | 0.556 |" in table


def test_bad_inputs_name_the_file(folders, tmp_path):
    pred, gt = folders
    write_volume(Volume(np.zeros((10, 10, 9), np.uint8), GEOMETRY), pred / "a.nii.gz")
    with pytest.raises(UdaError, match="a.nii.gz"):
        evaluate_folders(pred, gt)
    write_volume(Volume(np.full((10, 10, 10), 20, np.uint8), GEOMETRY), pred / "a.nii.gz")
    with pytest.raises(UdaError, match="a.nii.gz"):
        evaluate_folders(pred, gt)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UdaError, match="no volumes"):
        evaluate_folders(empty, gt)


def test_cli_evaluate(folders, tmp_path):
    pred, gt = folders
    out = subprocess.run([sys.executable, "-m", "napari_uda.cli", "evaluate", "--pred", str(pred), "--gt", str(gt),
                          "--out", str(tmp_path / "report")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| liver |" in out.stdout and "missing predictions (scored as empty): c" in out.stderr
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.csv").exists() and (tmp_path / "report.md").exists()
