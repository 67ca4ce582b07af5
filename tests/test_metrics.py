"""Dice, NSD and FLARE scoring against hand-computed values and DeepMind's surface-distance."""
from __future__ import annotations

import numpy as np
import pytest
import surface_distance as sd
from scipy import ndimage

from napari_uda.data.phantom import make_case
from napari_uda.evaluate.metrics import dice, flare_scores, nsd, organ_volumes_ml, surface_dice


def reference_nsd(pred: np.ndarray, gt: np.ndarray, spacing, tol: float) -> float:
    """surface-distance 0.1 fails on empty masks under NumPy 2, so those cases are settled first."""
    if not gt.any() and not pred.any():
        return 1.0
    if not gt.any() or not pred.any():
        return 0.0
    dists = sd.compute_surface_distances(gt.astype(bool), pred.astype(bool), spacing)
    return sd.compute_surface_dice_at_tolerance(dists, tol)


def test_dice_hand_computed():
    gt = np.zeros((2, 2, 4), np.uint8)
    pred = np.zeros_like(gt)
    gt[0, 0, :4] = 1          # 4 voxels of organ 1
    pred[0, 0, :2] = 1        # 2 of them predicted
    pred[1, 1, 0] = 2         # organ 2 predicted only
    out = dice(pred, gt, labels=[1, 2, 3])
    assert out[1] == pytest.approx(2 * 2 / (4 + 2))
    assert out[2] == 0.0      # one empty
    assert out[3] == 1.0      # both empty


def test_dice_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="integers"):
        dice(np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), np.uint8))


def test_nsd_hand_computed_cube():
    """A 4-voxel cube against itself shifted by one voxel along z with spacing 2 mm in z."""
    gt = np.zeros((8, 8, 8), bool)
    gt[2:6, 2:6, 2:6] = True
    pred = np.roll(gt, 1, axis=0)
    sp = (2.0, 1.0, 1.0)
    assert surface_dice(pred, gt, sp, 2.0) == pytest.approx(1.0)   # every surfel within 2 mm
    assert surface_dice(gt, gt, sp, 0.0) == pytest.approx(1.0)
    below = surface_dice(pred, gt, sp, 1.9)                       # the two z-faces are 2 mm apart
    assert 0 < below < 1
    assert below == pytest.approx(reference_nsd(pred, gt, sp, 1.9), abs=1e-6)


def test_nsd_empty_conventions():
    empty = np.zeros((4, 4, 4), np.uint8)
    one = empty.copy()
    one[1:3, 1:3, 1:3] = 1
    assert nsd(empty, empty, (1, 1, 1), 1.0, labels=[1]) == {1: 1.0}
    assert nsd(one, empty, (1, 1, 1), 1.0, labels=[1]) == {1: 0.0}
    assert nsd(empty, one, (1, 1, 1), 1.0, labels=[1]) == {1: 0.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nsd_equals_surface_distance_on_phantom(seed):
    _, lab = make_case("ct", seed, seed=4, shape=(24, 64, 64))
    gt = lab.array
    rng = np.random.default_rng(seed)
    pred = np.roll(gt, rng.integers(-2, 3, 3), axis=(0, 1, 2)).copy()
    pred[ndimage.binary_dilation(gt == 1, iterations=1) & (gt == 0)] = 1
    pred[rng.random(gt.shape) < 0.001] = 9
    spacing = (float(rng.uniform(2, 6)), 0.8, float(rng.uniform(0.6, 1.2)))  # anisotropic, even in-plane
    for tol in (1.0, 2.0, 5.0):
        mine = nsd(pred, gt, spacing, tol)
        for c in range(1, 14):
            assert mine[c] == pytest.approx(reference_nsd(pred == c, gt == c, spacing, tol), abs=1e-6), (c, tol)


def test_nsd_per_organ_tolerance_default_is_flare():
    _, lab = make_case("ct", 0, seed=2, shape=(16, 48, 48))
    pred = np.roll(lab.array, 1, axis=2)
    out = nsd(pred, lab.array, lab.spacing)  # FLARE tolerances
    assert out[12] == pytest.approx(reference_nsd(pred == 12, lab.array == 12, lab.spacing, 7.0), abs=1e-6)
    assert out[5] == pytest.approx(reference_nsd(pred == 5, lab.array == 5, lab.spacing, 2.0), abs=1e-6)


def test_nsd_rejects_bad_spacing():
    a = np.zeros((3, 3, 3), np.uint8)
    with pytest.raises(ValueError, match="spacing"):
        nsd(a, a, (1.0, 0.0, 1.0), 1.0)


def test_flare_rules():
    gt = np.zeros((10, 12, 12), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:6, 3:7, 3:7] = 5            # aorta, z 2..5
    pred[0:8, 3:7, 3:7] = 5          # extends beyond the GT z-range: cropped away before scoring
    gt[2:5, 8:10, 8:10] = 1          # liver: tiny overlap, DSC < 0.2 gives NSD 0
    pred[2:5, 8:9, 8:9] = 1
    pred[6:9, 0:3, 0:3] = 1
    scores = flare_scores(pred, gt, (1.0, 1.0, 1.0), labels=[5, 1, 2])
    assert scores[5] == {"dsc": 1.0, "nsd": 1.0}
    assert scores[1]["dsc"] < 0.2 and scores[1]["nsd"] == 0.0
    assert scores[2] == {"dsc": 1.0, "nsd": 1.0}     # absent in both
    assert set(flare_scores(pred, gt, (1, 1, 1), modality_kind="pet")) == {1, 2, 3, 13}


def test_flare_z_crop_leaves_out_the_top_gt_slice():
    gt = np.zeros((10, 12, 12), np.uint8)
    gt[2:6, 3:7, 3:7] = 5            # aorta on z 2..5, 16 voxels a slice
    pred = np.zeros_like(gt)
    pred[2:5, 3:7, 3:7] = 5          # misses z 5, the top GT slice: the official crop 2:5 does not see it
    assert flare_scores(pred, gt, (1.0, 1.0, 1.0), labels=[5])[5]["dsc"] == 1.0
    pred[5, 3:7, 3:7] = 5
    pred[2, 3:7, 3:7] = 0            # misses z 2 instead: 32 of 48 voxels inside the crop
    assert flare_scores(pred, gt, (1.0, 1.0, 1.0), labels=[5])[5]["dsc"] == pytest.approx(2 * 32 / (32 + 48))
    one = np.zeros_like(gt)
    one[4, 3:7, 3:7] = 10            # a one-slice oesophagus: empty after the crop in both, as FLARE scores it
    assert flare_scores(np.zeros_like(gt), one, (1.0, 1.0, 1.0), labels=[10])[10] == {"dsc": 1.0, "nsd": 1.0}


def test_organ_volumes():
    a = np.zeros((2, 2, 2), np.uint8)
    a[0] = 1
    assert organ_volumes_ml(a, (10, 10, 10), organs=[1, 2]) == {1: 4.0, 2: 0.0}
