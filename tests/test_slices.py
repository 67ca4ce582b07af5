"""Slices for translation: one pixel size for both domains, aspect ratio kept, crops not stretches."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_uda.core.io import Geometry, Volume, write_volume
from napari_uda.core.modalities import get_modality
from napari_uda.translate.slices import SliceBank, load_slice_bank, working_size
from napari_uda.translate.translator import _generate


def test_working_size_keeps_each_axis_extent():
    assert working_size((100, 50), (1.0, 2.0), 1.0) == (100, 100)
    assert working_size((100, 50), (1.0, 2.0), 2.0) == (50, 50)
    assert working_size((64, 48), (1.5, 1.5), 1.5) == (64, 48)  # native pixel size: untouched, not squared


def test_bank_resamples_to_one_pixel_size_without_stretching(tmp_path):
    image = np.linspace(-1000, 1000, 4 * 30 * 60, dtype=np.float32).reshape(4, 30, 60)
    label = np.zeros((4, 30, 60), np.uint8)
    label[:, 10:20, 20:40] = 1
    geo = Geometry((5.0, 2.0, 2.0))
    img_path = write_volume(Volume(image, geo), tmp_path / "ct.nii.gz")
    lab_path = write_volume(Volume(label, geo), tmp_path / "lab.nii.gz")
    bank = load_slice_bank([img_path], get_modality("CT"), 4.0, [lab_path])
    assert bank.spacing_mm == 4.0 and bank.images[0].shape == (4, 1, 15, 30) and bank.labels[0].shape == (4, 15, 30)
    assert int(bank.labels[0][0].sum()) == 5 * 10  # the organ is 20 x 40 mm in both
    native = load_slice_bank([img_path], get_modality("CT"), None, [lab_path])
    assert native.spacing_mm == 2.0 and native.images[0].shape == (4, 1, 30, 60)


def test_crops_pad_small_slices_and_keep_labels_on_their_pixels():
    yy, xx = torch.meshgrid(torch.arange(6), torch.arange(10), indexing="ij")
    image = (yy * 10 + xx).float()[None, None].repeat(3, 1, 1, 1)  # the value says where a pixel was
    bank = SliceBank([image], [(yy * 10 + xx)[None].repeat(3, 1, 1)], [(0.0, 1.0)], 1.0)
    x, y = bank.sample(20, 8, torch.Generator().manual_seed(0))
    assert x.shape == (20, 1, 8, 8) and y.shape == (20, 8, 8)
    inside = x[:, 0] >= 0
    assert torch.equal(x[:, 0][inside].long(), y[inside])  # labels travel with their pixels
    assert torch.all(x[:, 0][~inside] == -1) and torch.all(y[~inside] == 0)  # padding: -1 image, background
    assert torch.all(x[:, 0, 6:] == -1)  # 6 rows high: rows 6, 7 are padding in every crop


def test_generator_runs_on_any_slice_size_without_stretching():
    x = torch.randn(2, 1, 37, 50)
    torch.testing.assert_close(_generate(nn.Identity(), x), x)
    conv = nn.Sequential(nn.Conv2d(1, 1, 3, 2, 1), nn.Upsample(scale_factor=2))
    assert _generate(conv, torch.randn(1, 1, 37, 50), multiple=2).shape == (1, 1, 37, 50)
