"""Test-time mirroring over the flip group (napari_uda.segment.mirroring), against a hand-written mean
and with a predictor that is not flip-equivariant (position-dependent, float32 rounding)."""
import itertools

import numpy as np
import pytest

from napari_uda.segment.mirroring import mirrored_mean, volume_axes


def lopsided(array: np.ndarray) -> np.ndarray:
    """(2, z, y, x) from (z, y, x): depends on position (a ramp along every axis) and on the
    neighbour to the right, so a flip of the input is not a flip of the output."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in array.shape], indexing="ij")
    a = array.astype(np.float32)
    right = np.roll(a, -1, axis=2)
    first = np.tanh(0.3 * a + 0.1 * right + 0.01 * z - 0.02 * y + 0.03 * x)
    return np.stack([first, np.float32(1) - first]).astype(np.float32)


@pytest.fixture
def scan():
    return np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)


def test_the_mean_is_every_flip_predicted_and_flipped_back(scan):
    axes = (0, 2)
    expected = np.zeros((2, *scan.shape), np.float64)
    for k in range(len(axes) + 1):
        for combo in itertools.combinations(axes, k):
            flipped = np.flip(scan, combo) if combo else scan
            out = lopsided(np.ascontiguousarray(flipped))
            expected += np.flip(out, tuple(a + 1 for a in combo)) if combo else out
    np.testing.assert_allclose(mirrored_mean(lopsided, scan, axes), expected / 4, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_mirrored_scan_predicts_the_mirrored_result_bit_for_bit(scan, axis):
    axes = (0, 1, 2)
    direct = mirrored_mean(lopsided, scan, axes)
    mirrored = mirrored_mean(lopsided, np.ascontiguousarray(np.flip(scan, axis)), axes)
    np.testing.assert_array_equal(np.flip(mirrored, axis + 1), direct)
    without = np.flip(lopsided(np.ascontiguousarray(np.flip(scan, axis))), axis + 1)
    assert np.abs(without - lopsided(scan)).max() > 1e-3  # the predictor alone is not equivariant


def test_no_axes_is_one_prediction_and_an_axis_outside_the_group_is_not_equivariant(scan):
    np.testing.assert_array_equal(mirrored_mean(lopsided, scan, ()), lopsided(scan))
    only_x = mirrored_mean(lopsided, scan, (2,))
    flipped_z = mirrored_mean(lopsided, np.ascontiguousarray(np.flip(scan, 0)), (2,))
    assert np.abs(np.flip(flipped_z, 1) - only_x).max() > 1e-3


def test_volume_axes_of_nnunet_mirror_axes():
    assert volume_axes((0, 1, 2), 3) == (0, 1, 2)
    assert volume_axes((0, 1), 2) == (1, 2)  # a 2D model mirrors in-plane: the volume's y and x
    assert volume_axes(None, 3) == ()
    assert volume_axes((), 2) == ()
