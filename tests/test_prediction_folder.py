"""The prediction-folder layout: where fused, per-fold and pseudo-labels of a case are."""
from __future__ import annotations

from napari_uda.segment.prediction_folder import PredictionFolder


def test_paths_of_a_case(tmp_path):
    out = PredictionFolder(tmp_path / "organ_attention")
    assert out.fused("t2wi_000") == tmp_path / "organ_attention" / "t2wi_000.nii.gz"
    assert out.fold_label(3, "t2wi_000") == tmp_path / "organ_attention" / "fold_3" / "t2wi_000.nii.gz"
    assert out.fold_probabilities(3, "t2wi_000") == tmp_path / "organ_attention" / "fold_3" / "t2wi_000.npz"
    assert out.pseudo_label("t2wi_000") == tmp_path / "organ_attention" / "pseudo" / "t2wi_000.nii.gz"
    assert out.records == tmp_path / "organ_attention" / "predictions.json"


def test_the_folder_of_a_fused_label_or_a_pseudo_label(tmp_path):
    out = PredictionFolder(tmp_path / "s")
    assert PredictionFolder.of_label(out.fused("c")) == out
    assert PredictionFolder.of_label(out.pseudo_label("c")) == out


def test_fold_labels_in_fold_order_and_only_numbered_folds(tmp_path):
    out = PredictionFolder(tmp_path)
    for fold in ("10", "2", "all", "0"):
        (tmp_path / f"fold_{fold}").mkdir()
        (tmp_path / f"fold_{fold}" / "c.nii.gz").write_bytes(b"")
    (tmp_path / "fold_1").mkdir()  # a fold without this case
    assert list(out.fold_labels("c")) == [0, 2, 10]
    assert out.fold_labels("c")[10] == tmp_path / "fold_10" / "c.nii.gz"
    assert out.fold_labels("other") == {}
