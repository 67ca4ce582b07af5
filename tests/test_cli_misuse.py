"""Bad input and misuse over every command: each case ends on one clean error line naming what is
wrong (argparse: its usage line and one error line), a non-zero exit code, no traceback, and
nothing written, changed or deleted anywhere under the test's folder."""
from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, Planted

from napari_uda import cli
from napari_uda.core.io import Volume, read_volume, write_dicom_series, write_volume
from napari_uda.core.workspace import Workspace
from napari_uda.data.phantom import write_phantom_dataset

BUNDLED = ROOT / "sample_data" / "models" / "t2wi_organ_attention"


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    """Two phantom CT with labels and two T2WI (12x32x32), read-only for every case."""
    root = tmp_path_factory.mktemp("kit")
    write_phantom_dataset(root, {"ct": 2, "t2wi": 2}, seed=5, shape=(12, 32, 32))
    return root


def _image(kit: Path) -> Volume:
    return read_volume(kit / "t2wi/images/t2wi_000.nii.gz")


def _folder_with(tmp: Path, name: str, make: Callable[[Path], None]) -> Path:
    folder = tmp / "in"
    folder.mkdir()
    make(folder / name)
    return folder


def truncated_gzip_payload(kit: Path, tmp: Path) -> tuple[list[str], str]:
    raw = write_volume(_image(kit), tmp / "v.nii", compress=False).read_bytes()[:-64]
    (tmp / "v.nii").unlink()
    (tmp / "short.nii.gz").write_bytes(gzip.compress(raw))
    return ["info", str(tmp / "short.nii.gz")], "short.nii.gz: image data is truncated"


def nan_voxels(kit: Path, tmp: Path) -> tuple[list[str], str]:
    a = _image(kit).array.astype(np.float32)
    a[3, 4, 5] = np.nan
    write_volume(_image(kit).with_array(a), tmp / "nan.nii")
    return ["info", str(tmp / "nan.nii")], "nan.nii: contains NaN or infinite values"


def zero_spacing(kit: Path, tmp: Path) -> tuple[list[str], str]:
    path = write_volume(_image(kit), tmp / "flat.nii", compress=False)
    raw = bytearray(path.read_bytes())
    raw[80:84] = np.float32(0.0).tobytes()  # pixdim[1]
    path.write_bytes(bytes(raw))
    return ["info", str(path)], "flat.nii: voxel spacing in the header"


def dicom_missing_slice(kit: Path, tmp: Path) -> tuple[list[str], str]:
    folder = write_dicom_series(_image(kit), tmp / "series")
    sorted(folder.iterdir())[5].unlink()
    return ["info", str(folder)], "series"


def translate_nan_target(kit: Path, tmp: Path) -> tuple[list[str], str]:
    a = _image(kit).array.astype(np.float32)
    a[0, 0, 0] = np.inf
    target = _folder_with(tmp, "bad_t2.nii.gz", lambda p: write_volume(_image(kit).with_array(a), p))
    return (["translate", "train", "--ct-images", str(kit / "ct/images"), "--ct-labels", str(kit / "ct/labels"),
             "--target-images", str(target), "--modality", "T2WI", "--out", str(tmp / "tr"), "--iterations", "1",
             "--device", "cpu"], "bad_t2.nii.gz: contains NaN or infinite values")


def translate_apply_no_translator(kit: Path, tmp: Path) -> tuple[list[str], str]:
    return (["translate", "apply", "--translator", str(tmp / "nowhere"), "--input", str(kit / "ct/images"),
             "--out", str(tmp / "out"), "--device", "cpu"], "nowhere")


def export_escaping_name(kit: Path, tmp: Path) -> tuple[list[str], str]:
    (tmp / "ws").mkdir()
    return (["segment", "export", "--workspace", str(tmp / "ws"), "--dataset", "5", "--name", "../../escape",
             "--images", str(kit / "ct/images"), "--labels", str(kit / "ct/labels"), "--modality", "CT"], "../../escape")


def export_fractional_labels(kit: Path, tmp: Path) -> tuple[list[str], str]:
    labels = tmp / "labels"
    for p in sorted((kit / "ct/labels").iterdir()):
        lab = read_volume(p)
        write_volume(lab.with_array(lab.array.astype(np.float32) + 0.5), labels / p.name)
    (tmp / "ws").mkdir()
    return (["segment", "export", "--workspace", str(tmp / "ws"), "--dataset", "5", "--name", "x",
             "--images", str(kit / "ct/images"), "--labels", str(labels), "--modality", "CT"], "ct_000.nii.gz")


def export_over_a_foreign_dataset(kit: Path, tmp: Path) -> tuple[list[str], str]:
    theirs = tmp / "ws" / "nnunet" / "raw" / "Dataset005_x"
    theirs.mkdir(parents=True)
    (theirs / "dataset.json").write_text('{"name": "someone else\'s nnU-Net dataset"}')
    return (["segment", "export", "--workspace", str(tmp / "ws"), "--dataset", "5", "--name", "x",
             "--images", str(kit / "ct/images"), "--labels", str(kit / "ct/labels"), "--modality", "CT"],
            "Dataset005_x: exists and was not written by napari-uda")


def train_before_plan(kit: Path, tmp: Path) -> tuple[list[str], str]:
    assert cli.main(["segment", "export", "--workspace", str(tmp / "ws"), "--dataset", "5", "--name", "x",
                     "--images", str(kit / "ct/images"), "--labels", str(kit / "ct/labels"), "--modality", "CT"]) == 0
    return (["segment", "train", "--workspace", str(tmp / "ws"), "--dataset", "5", "--budget", "tiny",
             "--device", "cpu"], "segment plan")


def predict_missing_fold(kit: Path, tmp: Path) -> tuple[list[str], str]:
    return (["segment", "predict", "--model", str(BUNDLED), "--input", str(kit / "t2wi/images"), "--out",
             str(tmp / "pred"), "--folds", "5", "--device", "cpu"], "fold_5")


def predict_damaged_sidecar(kit: Path, tmp: Path) -> tuple[list[str], str]:
    model = tmp / "model"
    shutil.copytree(BUNDLED / "segmenter", model / "segmenter", ignore=shutil.ignore_patterns("*.safetensors"))
    (model / "model.json").write_text('{"format": "napari-uda-model", "kind": ')
    return (["segment", "predict", "--model", str(model), "--input", str(kit / "t2wi/images"), "--out",
             str(tmp / "pred"), "--device", "cpu"], "model.json")


def predict_pickled_fold(kit: Path, tmp: Path) -> tuple[list[str], str]:
    import pickle

    model = tmp / "model"
    shutil.copytree(BUNDLED, model, ignore=shutil.ignore_patterns("*.safetensors"))
    for fold in (model / "segmenter").glob("fold_*"):
        (fold / "checkpoint_final.pth").write_bytes(pickle.dumps(Planted(tmp / "executed")))
    return (["segment", "predict", "--model", str(model), "--input", str(kit / "t2wi/images"), "--out",
             str(tmp / "pred"), "--device", "cpu"], "checkpoint_final.pth")


def review_outside_a_workspace(kit: Path, tmp: Path) -> tuple[list[str], str]:
    (tmp / "plain").mkdir()
    return ["review", "queue", "--workspace", str(tmp / "plain")], "workspace.json"


def _workspace(kit: Path, tmp: Path) -> Workspace:
    return Workspace.create(tmp / "ws", kit / "ct/images", kit / "ct/labels", kit / "t2wi/images", "T2WI")


def review_empty_database(kit: Path, tmp: Path) -> tuple[list[str], str]:
    ws = _workspace(kit, tmp)
    (ws.root / "review.sqlite").write_bytes(b"")
    return ["review", "queue", "--workspace", str(ws.root)], "review.sqlite"


def manifest_missing_keys(kit: Path, tmp: Path) -> tuple[list[str], str]:
    ws = _workspace(kit, tmp)
    (ws.root / "workspace.json").write_text('{"version": 1}')
    return ["workspace", "--workspace", str(ws.root)], "workspace.json"


def evaluate_mismatched_grid(kit: Path, tmp: Path) -> tuple[list[str], str]:
    lab = read_volume(kit / "t2wi/labels/t2wi_000.nii.gz")
    cut = Volume(np.ascontiguousarray(lab.array[:, :16]), lab.geometry)
    pred = _folder_with(tmp, "t2wi_000.nii.gz", lambda p: write_volume(cut, p))
    gt = tmp / "gt"
    gt.mkdir()
    shutil.copy(kit / "t2wi/labels/t2wi_000.nii.gz", gt)
    return ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp / "report")], "t2wi_000.nii.gz"


def missing_file(kit: Path, tmp: Path) -> tuple[list[str], str]:
    return ["info", str(tmp / "missing.nii.gz")], "missing.nii.gz"


def unknown_phantom_modality(kit: Path, tmp: Path) -> tuple[list[str], str]:
    return ["phantom", str(tmp / "ph"), "--modalities", "xray"], "xray"


ONE_LINE = [truncated_gzip_payload, nan_voxels, zero_spacing, dicom_missing_slice, translate_nan_target,
            translate_apply_no_translator, export_escaping_name, export_fractional_labels, export_over_a_foreign_dataset,
            train_before_plan,
            predict_missing_fold, predict_damaged_sidecar, predict_pickled_fold, review_outside_a_workspace,
            review_empty_database, manifest_missing_keys, evaluate_mismatched_grid, missing_file,
            unknown_phantom_modality]

# argparse refuses these before any work: (command, the bad option and value); ``a_file`` is a file
OUT_OF_RANGE = [("segment export", ["--spacing-factor", "1000"]), ("segment export", ["--spacing-factor", "0"]),
                ("pipeline", ["--rounds", "-1"]), ("translate train", ["--batch", "0"]),
                ("translate train", ["--ngf", "0"]), ("segment predict", ["--folds", "-1"]),
                ("evaluate", ["--tolerance-mm", "nan"]), ("segment predict", ["--out", "a_file"]),
                ("translate train", ["--out", "a_file/below"]), ("evaluate", ["--out", "."])]
REQUIRED = {"segment export": ["--workspace", "w", "--dataset", "1", "--name", "x", "--images", "i", "--labels", "l",
                               "--modality", "CT"],
            "pipeline": ["--source-images", "s", "--source-labels", "l", "--target-images", "t", "--modality", "T2WI",
                         "--workspace", "w"],
            "translate train": ["--ct-images", "c", "--target-images", "t", "--modality", "T2WI", "--out", "o"],
            "segment predict": ["--model", "m", "--input", "i", "--out", "o"],
            "evaluate": ["--pred", "p", "--gt", "g", "--out", "o"]}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", ONE_LINE, ids=lambda f: f.__name__)
def test_one_clean_line_and_nothing_touched(case, kit, tmp_path, capsys):
    argv, named = case(kit, tmp_path)
    before, kit_before = _snapshot(tmp_path), _snapshot(kit)
    capsys.readouterr()
    assert cli.main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-uda: error: "), lines
    assert named in lines[0] and "unexpected" not in lines[0] and "Traceback" not in lines[0]
    assert _snapshot(tmp_path) == before, "the failed command wrote, changed or deleted files"
    assert _snapshot(kit) == kit_before
    assert not (tmp_path / "executed").exists()


@pytest.mark.parametrize("command, bad", OUT_OF_RANGE, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_out_of_range_options_are_refused_before_any_work(command, bad, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("an output path that is a file")
    with pytest.raises(SystemExit) as exit_:
        cli.main(command.split() + REQUIRED[command] + bad)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert bad[0] in lines[-1] and "error:" in lines[-1] and "Traceback" not in "".join(lines)
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]
