"""The strong intensity augmentation of the segmenters, against hand-computed values and scipy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_uda.segment.nnunet_trainers.augment import (
    IntensityRemapTransform,
    OrganContrastTransform,
    gaussian_smooth,
    remap_intensities,
    shift_organ_contrast,
)


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


def test_gaussian_smooth_matches_scipy():
    from scipy import ndimage
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 12, 9)).astype(np.float32)
    for sigma in (0.7, 1.5):
        expected = ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=3.0)
        np.testing.assert_allclose(gaussian_smooth(torch.from_numpy(x), sigma).numpy(), expected, atol=1e-5)
    torch.testing.assert_close(gaussian_smooth(torch.from_numpy(x), 0.0), torch.from_numpy(x))


def test_organ_contrast_moves_each_organ_mean_and_keeps_its_texture():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0],
                      [10.0, 12.0, 5.0, 5.0]])
    seg = torch.tensor([[0, 0, 1, 1],
                        [2, 2, 3, -1]])
    out = shift_organ_contrast(x, seg, {1: -4.0, 2: 0.0})
    # organ 1: mean 2.5 -> -4, values 2, 3 -> -4.5, -3.5; organ 2: mean 11 -> 0: 10, 12 -> -1, 1
    expected = torch.tensor([[0.0, 1.0, -4.5, -3.5],
                             [-1.0, 1.0, 5.0, 5.0]])
    torch.testing.assert_close(out, expected)
    assert torch.equal(x[0, :2], out[0, :2])  # background, an organ without a target and padding (-1) untouched


def test_organ_contrast_offsets_are_smoothed_like_partial_volume():
    x = torch.zeros(1, 9)
    seg = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0, 0]])
    out = shift_organ_contrast(x, seg, {1: 3.0}, sigma=1.0)
    from scipy import ndimage
    expected = ndimage.gaussian_filter(np.array([[0, 0, 0, 3, 3, 3, 0, 0, 0]], np.float32), 1.0, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert 0 < float(out[0, 2]) < 3 and float(out[0, 4]) < 3  # the edge is blurred, not a step


def test_organ_contrast_transform_reorders_organs_within_the_image_range():
    torch.manual_seed(0)
    seg = torch.zeros(1, 32, 32, dtype=torch.long)
    seg[0, 4:12, 4:12], seg[0, 20:28, 20:28] = 1, 2
    img = torch.randn(1, 32, 32) * 0.1
    img[0][seg[0] == 1] += 2.0  # organ 1 bright, organ 2 like the background
    orders = set()
    for _ in range(40):
        out = OrganContrastTransform(p=1.0, sigma=0.0)(image=img.clone(), segmentation=seg.clone())
        assert torch.equal(out["segmentation"], seg)
        m1, m2 = (float(out["image"][0][seg[0] == l].mean()) for l in (1, 2))
        lo, hi = (float(v) for v in torch.quantile(img.reshape(-1), torch.tensor([0.01, 0.99])))
        assert lo - 1e-4 <= m1 <= hi + 1e-4 and lo - 1e-4 <= m2 <= hi + 1e-4
        orders.add(m1 > m2)
    assert orders == {True, False}  # the organs' contrast order is shuffled
    assert torch.equal(OrganContrastTransform(p=0.0)(image=img.clone(), segmentation=seg.clone())["image"], img)
