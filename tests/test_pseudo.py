"""Fold consistency, ranking, fusion, voting, filters and uncertainty."""
from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from napari_uda.data.phantom import make_case
from napari_uda.pseudo.consistency import CaseScore, fold_consistency, fold_consistency_details, rank_cases
from napari_uda.pseudo.filters import (
    SourceStats,
    filter_checkpoint_agreement,
    filter_organs_present,
    filter_relative_volume,
    mean_dice,
    relative_volumes,
)
from napari_uda.pseudo.labels import round_uncertainty, select_by_uncertainty, strict_majority_label
from napari_uda.segment.ensemble import fold_disagreement, fuse_probabilities, majority_vote, union_ensemble
from napari_uda.segment.probabilities import ProbabilityFile, save_probabilities


def naive_consistency(folds, labels):
    out = {}
    for c in labels:
        ds = []
        for a, b in itertools.combinations(folds, 2):
            inter, s = ((a == c) & (b == c)).sum(), (a == c).sum() + (b == c).sum()
            ds.append(1.0 if s == 0 else 2 * inter / s)
        out[c] = float(np.mean(ds))
    return out


@pytest.fixture(scope="module")
def folds():
    _, lab = make_case("ct", 0, seed=3, shape=(20, 48, 48))
    rng = np.random.default_rng(0)
    out = []
    for i in range(5):
        f = np.roll(lab.array, rng.integers(-1, 2, 3), axis=(0, 1, 2)).copy()
        f[rng.random(f.shape) < 0.01] = rng.integers(0, 14)
        out.append(f)
    return out


def test_consistency_hand_computed():
    a = np.array([[[1, 1, 0, 0]]], np.uint8)
    b = np.array([[[1, 0, 0, 2]]], np.uint8)
    c = np.array([[[1, 1, 0, 0]]], np.uint8)
    out = fold_consistency([a, b, c], labels=[1, 2, 3])
    # organ 1: D(a,b)=2*1/3, D(a,c)=1, D(b,c)=2/3 ; organ 2: 0, 1, 0 ; organ 3 absent: 1
    assert out[1] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert out[2] == pytest.approx(1 / 3)
    assert out[3] == 1.0
    details = fold_consistency_details([a, b, c], labels=[1, 2, 3])
    assert details.present == (1, 2)
    # organ 3, found by no fold, counts 0 in the case score (not 1, and not left out)
    assert details.case_score == pytest.approx((out[1] + out[2] + 0) / 3)
    assert details.present_score == pytest.approx((out[1] + out[2]) / 2)
    assert details.scored == {1: out[1], 2: out[2], 3: 0.0}  # what the review store and the panel show


def test_case_score_a_tiny_consistent_fragment_does_not_rank_first():
    fragment = np.zeros((1, 4, 4), np.uint8)
    fragment[0, 0, 0] = 1  # two folds agree on one liver voxel and nothing else
    whole = np.array([[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]]], np.uint8)
    shifted = whole.copy()
    shifted[0, 0, 0] = 0  # the folds disagree on one voxel of organ 1
    small = fold_consistency_details([fragment, fragment], labels=[1, 2, 3])
    big = fold_consistency_details([whole, shifted], labels=[1, 2, 3])
    assert small.case_score == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3
    assert big.case_score == pytest.approx((2 * 3 / 7 + 1 + 1) / 3)  # organ 1: 2*3/(4+3)
    assert big.case_score > small.case_score


def test_consistency_equals_naive_loop(folds):
    assert fold_consistency(folds) == pytest.approx(naive_consistency(folds, range(1, 14)), abs=1e-12)


def test_consistency_bad_input(folds):
    with pytest.raises(ValueError, match="at least 2"):
        fold_consistency(folds[:1])
    with pytest.raises(ValueError, match="fold 1: shape"):
        fold_consistency([folds[0], folds[1][:-1]])
    bad = folds[1].copy()
    bad[0, 0, 0] = 20
    with pytest.raises(ValueError, match="outside the organ table"):
        fold_consistency([folds[0], bad])
    with pytest.raises(ValueError, match="outside 0..255"):
        fold_consistency([folds[0], folds[1].astype(np.int16) - 1])


def test_ranking_top_k_per_modality():
    scores = [CaseScore("a", "T2WI", 0.8), CaseScore("b", "T2WI", 0.9), CaseScore("c", "T2WI", 0.9),
              CaseScore("d", "PET-FDG", 0.5)]
    ranked = rank_cases(scores, top_k=2)
    assert [s.case for s in ranked["T2WI"]] == ["b", "c"]
    assert [s.case for s in ranked["PET-FDG"]] == ["d"]


def _probs_from_labels(labels, rng, n_classes=14):
    p = rng.random((n_classes, *labels.shape)).astype(np.float32) * 0.5
    np.put_along_axis(p, labels[None].astype(np.int64), 3.0, axis=0)
    return p / p.sum(axis=0, keepdims=True)


def test_fusion_equals_in_memory_mean(tmp_path, folds):
    rng = np.random.default_rng(1)
    probs = [_probs_from_labels(f, rng) for f in folds[:3]]
    paths = [save_probabilities(tmp_path / f"fold{i}.npz", p, slab=3) for i, p in enumerate(probs)]
    stored = [ProbabilityFile(p).read_all() for p in paths]  # float16 on disk
    expected = np.argmax(np.mean(stored, axis=0), axis=0)
    np.testing.assert_array_equal(fuse_probabilities(paths), expected)
    np.testing.assert_allclose(stored[0].sum(axis=0), 1.0, atol=5e-3)


def test_fusion_reads_nnunet_npz(tmp_path, folds):
    rng = np.random.default_rng(2)
    p = _probs_from_labels(folds[0], rng)
    np.savez_compressed(tmp_path / "nnunet.npz", probabilities=p)
    out = fuse_probabilities([tmp_path / "nnunet.npz", save_probabilities(tmp_path / "mine.npz", p)])
    np.testing.assert_array_equal(out, folds[0])


def test_fusion_streams_with_bounded_memory(tmp_path):
    """Peak extra memory stays far below one fold's array (slab-wise reading)."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 14, (64, 64, 64)).astype(np.uint8)
    paths = [save_probabilities(tmp_path / f"f{i}.npz", _probs_from_labels(labels, rng), slab=4) for i in range(4)]
    one_fold = 14 * 64**3 * 2  # float16 bytes
    tracemalloc.start()
    fuse_probabilities(paths)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.6 * one_fold, peak


def test_fusion_bad_input(tmp_path, folds):
    rng = np.random.default_rng(4)
    p = _probs_from_labels(folds[0], rng)
    good = save_probabilities(tmp_path / "good.npz", p)
    nan = p.copy()
    nan[3, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="nan.npz: probabilities contain NaN"):
        fuse_probabilities([good, save_probabilities(tmp_path / "nan.npz", nan)])
    with pytest.raises(ValueError, match="neg.npz: probabilities contain negative"):
        fuse_probabilities([good, save_probabilities(tmp_path / "neg.npz", p - 0.9)])
    with pytest.raises(ValueError, match="small.npz: probability shape"):
        fuse_probabilities([good, save_probabilities(tmp_path / "small.npz", p[:, :-1])])
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.npz: not a readable"):
        fuse_probabilities([good, tmp_path / "junk.npz"])


def test_majority_and_union():
    a = np.array([[[1, 1, 0, 2, 3]]], np.uint8)
    b = np.array([[[1, 2, 0, 0, 0]]], np.uint8)
    c = np.array([[[2, 2, 4, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(majority_vote([a, b, c]), [[[1, 2, 0, 0, 0]]])
    np.testing.assert_array_equal(union_ensemble([a, b, c]), [[[1, 2, 4, 2, 3]]])
    # strict majority (> N/2): voxel 0 has 1,1,2 -> 1; voxel 1 has 1,2,2 -> 2; voxel 3 has 2,0,0 -> 0;
    # voxel 2 has 0,0,4 -> 0; voxel 4 has 3,0,0 -> 0
    np.testing.assert_array_equal(strict_majority_label([a, b, c]), [[[1, 2, 0, 0, 0]]])
    # voxel 0 holds 1, 2, 4 once each: no strict majority -> background (majority_vote takes the lowest label);
    # voxels 1, 3, 4 hold a label twice of three -> that label
    d = np.array([[[4, 1, 0, 2, 3]]], np.uint8)
    np.testing.assert_array_equal(strict_majority_label([a, c, d]), [[[0, 1, 0, 2, 3]]])
    np.testing.assert_array_equal(majority_vote([a, c, d]), [[[1, 1, 0, 2, 3]]])
    # two folds: exactly the voxels both agree on; four: a 2-2 split is background
    np.testing.assert_array_equal(strict_majority_label([a, b]), [[[1, 0, 0, 0, 0]]])
    np.testing.assert_array_equal(strict_majority_label([a, a, b, b]), [[[1, 0, 0, 0, 0]]])
    assert strict_majority_label([a, b]).dtype == np.uint8
    # by hand: a voxel is in disagreement unless all maps hold the same label
    np.testing.assert_array_equal(fold_disagreement([a, b, c]), [[[True, True, True, True, True]]])
    np.testing.assert_array_equal(fold_disagreement([a, a, b]), [[[False, True, False, True, True]]])


def test_filters_with_reasons():
    _, lab = make_case("ct", 0, seed=5, shape=(20, 48, 48))
    assert filter_organs_present(lab.array).passed
    no_gb = lab.array.copy()
    no_gb[no_gb == 9] = 0
    res = filter_organs_present(no_gb)
    assert not res.passed and "gallbladder" in res.reason
    cases = [make_case("ct", i, seed=5, shape=(20, 48, 48))[1].array for i in range(4)]
    stats = SourceStats.from_labels(cases)
    assert filter_relative_volume(cases[0], stats, k=3).passed
    huge_liver = cases[0].copy()
    huge_liver[(huge_liver == 0) & (np.arange(48)[None, None, :] < 24)] = 1
    res = filter_relative_volume(huge_liver, stats, k=3)
    assert not res.passed and "liver" in res.reason
    rel = relative_volumes(cases[0])
    assert 0 < rel[1] < 1
    # PET checks its 4 scored organs only: a missing pancreas does not fail it, a huge liver does
    no_pancreas = cases[0].copy()
    no_pancreas[no_pancreas == 4] = 0
    assert not filter_relative_volume(no_pancreas, stats, k=3).passed
    assert filter_relative_volume(no_pancreas, stats, k=3, organs=[1, 2, 3, 13]).passed
    res = filter_relative_volume(huge_liver, stats, k=3, organs=[1, 2, 3, 13])
    assert not res.passed and "pancreas" not in res.reason


def test_source_stats_round_trip(tmp_path):
    cases = [make_case("ct", i, seed=6, shape=(16, 32, 32))[1].array for i in range(3)]
    stats = SourceStats.from_labels(cases)
    stats.save(tmp_path / "s.json")
    assert SourceStats.load(tmp_path / "s.json") == stats
    with pytest.raises(ValueError, match="at least 2"):
        SourceStats.from_labels(cases[:1])


def test_checkpoint_agreement():
    out = filter_checkpoint_agreement({"a": 0.95, "b": 0.85, "c": 0.93, "d": 0.91}, threshold=0.9, top_k=2)
    assert out["a"].passed and out["c"].passed
    assert not out["b"].passed and "< 0.9" in out["b"].reason
    assert not out["d"].passed and "outside top 2" in out["d"].reason
    x = np.array([[[1, 1, 2, 0]]], np.uint8)
    assert mean_dice(x, x) == 1.0


def test_round_uncertainty_hand_computed():
    y0 = np.array([[[1, 1, 0, 0]]], np.uint8)
    y1 = np.array([[[1, 2, 0, 0]]], np.uint8)   # 1 change, 2 fg -> 0.5
    y2 = np.array([[[1, 2, 3, 0]]], np.uint8)   # 1 change, 3 fg -> 1/3
    assert round_uncertainty([y0, y1, y2]) == pytest.approx((0.5 + 1 / 3) / 2)
    assert round_uncertainty([y0, y0]) == 0.0
    assert round_uncertainty([y0, np.zeros_like(y0)]) == float("inf")  # the later round lost all foreground
    assert select_by_uncertainty({"a": 0.1, "b": 0.5, "c": 0.05}, 0.2) == ["c", "a"]
    with pytest.raises(ValueError, match="at least 2"):
        round_uncertainty([y0])
