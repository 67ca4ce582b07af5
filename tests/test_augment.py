"""The strong intensity augmentation of the source-only baseline, against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_uda.nnunet_trainers.augment import IntensityRemapTransform, remap_intensities


def test_identity_curve_keeps_the_image():
    x = torch.tensor([-2.0, 0.0, 1.0, 5.0])
    torch.testing.assert_close(remap_intensities(x, torch.tensor([0.0, 1.0])), x)


def test_falling_curve_inverts_around_the_mean():
    x = torch.tensor([-2.0, 0.0, 1.0, 5.0])  # mean 1
    torch.testing.assert_close(remap_intensities(x, torch.tensor([1.0, 0.0])), 2 * x.mean() - x)


def test_non_monotone_curve_by_hand():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    # scaled to [0, 1] x 2 intervals: u = 0, 0.5, 1, 2 -> curve through (0,0), (1,1), (2,0): y = 0, 0.5, 1, 0
    y = np.array([0.0, 0.5, 1.0, 0.0])
    xs = x.numpy()
    expected = (y - y.mean()) / y.std(ddof=1) * xs.std(ddof=1) + xs.mean()  # torch's std is the sample std
    np.testing.assert_allclose(remap_intensities(x, torch.tensor([0.0, 1.0, 0.0])).numpy(), expected, rtol=1e-6)
    # brightest and darkest voxels now share an intensity: contrast order is not kept
    out = remap_intensities(x, torch.tensor([0.0, 1.0, 0.0]))
    assert out[0] == pytest.approx(float(out[3]))


def test_constant_image_and_flat_curve():
    x = torch.full((3, 3), 7.0)
    torch.testing.assert_close(remap_intensities(x, torch.rand(6)), x)
    y = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(remap_intensities(y, torch.tensor([0.5, 0.5])), torch.full((3,), 2.0))


def test_transform_changes_images_only_and_keeps_their_statistics():
    torch.manual_seed(0)
    t = IntensityRemapTransform(p=1.0, p_invert=0.0)
    img = torch.randn(2, 8, 16, 16) * 3 + 1
    seg = torch.randint(0, 14, (1, 8, 16, 16))
    out = t(image=img.clone(), segmentation=seg.clone())
    assert torch.equal(out["segmentation"], seg)
    assert not torch.allclose(out["image"], img)
    for c in range(2):
        assert float(out["image"][c].mean()) == pytest.approx(float(img[c].mean()), abs=1e-4)
        assert float(out["image"][c].std()) == pytest.approx(float(img[c].std()), rel=1e-4)
    untouched = IntensityRemapTransform(p=0.0, p_invert=0.0)(image=img.clone())["image"]
    assert torch.equal(untouched, img)
