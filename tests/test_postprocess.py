"""Post-processing rules: largest components, hole filling, organ-specific minimum volumes."""
from __future__ import annotations

import numpy as np
import pytest

from napari_uda.segment.postprocess import OrganRule, default_rules, postprocess


def test_largest_component_and_holes():
    a = np.zeros((10, 10, 10), np.uint8)
    a[1:6, 1:6, 1:6] = 1
    a[3, 3, 3] = 0            # a hole
    a[8, 8, 8] = 1            # a stray voxel
    a[3, 3, 4] = 4            # another organ inside: not overwritten by filling
    out = postprocess(a, (1, 1, 1), {1: OrganRule()})
    assert out[8, 8, 8] == 0 and out[3, 3, 3] == 1 and out[3, 3, 4] == 4
    assert a[8, 8, 8] == 1    # input untouched


def test_paired_components_and_min_volume():
    a = np.zeros((10, 20, 20), np.uint8)
    a[1:5, 1:5, 1:5] = 3      # 64 voxels
    a[1:4, 10:13, 10:13] = 3  # 27 voxels
    a[7, 17, 17] = 3          # 1 voxel
    out = postprocess(a, (1, 1, 1), {3: OrganRule(keep_components=2, min_volume_mm3=10)})
    assert (out == 3).sum() == 64 + 27
    out = postprocess(a, (1, 1, 1), {3: OrganRule(keep_components=2, min_volume_mm3=30)})
    assert (out == 3).sum() == 64


def test_default_rules_are_data():
    rules = default_rules()
    assert rules[9].min_volume_mm3 == 1000.0 and rules[3].keep_components == 2
    a = np.zeros((10, 10, 10), np.uint8)
    a[2:4, 2:4, 2:4] = 9      # 8 voxels of 1 mm^3: under the gallbladder minimum
    assert (postprocess(a, (1, 1, 1)) == 9).sum() == 0
    assert (postprocess(a, (5, 5, 5)) == 9).sum() == 8


def test_bad_input():
    with pytest.raises(ValueError, match="spacing"):
        postprocess(np.zeros((2, 2, 2), np.uint8), (0, 1, 1))
    with pytest.raises(ValueError, match="3D"):
        postprocess(np.zeros((2, 2), np.uint8), (1, 1, 1))
