"""Regions across grids: the box of the organs, crop and paste, checked against SimpleITK."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from napari_uda.core.io import Geometry, Volume, resample
from napari_uda.core.roi import crop, foreground_box, index_to_physical, paste, physical_to_index

ROT = Rotation.from_euler("xyz", [5, 10, 15], degrees=True).as_matrix()


def volume() -> Volume:
    v = Volume(np.zeros((20, 40, 30), np.uint8), Geometry((3.0, 1.0, 1.2), (10.0, -20.0, 5.0), tuple(map(tuple, ROT))))
    v.array[5:9, 10:20, 12:18] = 3
    return v


def test_index_physical_round_trip_matches_simpleitk():
    v = volume()
    img = sitk.GetImageFromArray(v.array)
    v.geometry.apply_to_sitk(img)
    idx = np.array([[3, 7, 9], [0, 0, 0], [19, 39, 29]])
    phys = index_to_physical(v.geometry, idx)
    for i, p in zip(idx, phys):
        np.testing.assert_allclose(p, img.TransformIndexToPhysicalPoint([int(k) for k in i[::-1]])[::-1], atol=1e-9)
    np.testing.assert_allclose(physical_to_index(v.geometry, phys), idx, atol=1e-9)


def test_foreground_box_same_grid_and_margin():
    v = volume()
    assert foreground_box(v, v, 0.0) == (slice(5, 9), slice(10, 20), slice(12, 18))
    # 3 mm: one slice in z (3 mm), three rows in y (1 mm), 2.5 columns in x (1.2 mm) rounded outwards
    assert foreground_box(v, v, 3.0) == (slice(4, 10), slice(7, 23), slice(9, 21))
    assert foreground_box(v.with_array(np.zeros_like(v.array)), v, 5.0) is None


def test_box_from_a_coarse_grid_covers_the_fine_one():
    v = volume()
    low = resample(v, (6.0, 2.0, 2.4), labels=True)
    assert low.shape == (10, 20, 15)
    box = foreground_box(low, v, 0.0)
    fine = foreground_box(v, v, 0.0)
    assert all(b.start <= f.start and f.stop <= b.stop for b, f in zip(box, fine))
    assert all((b.stop - b.start) <= (f.stop - f.start) + 2 * k for b, f, k in zip(box, fine, (2, 2, 2)))


def test_crop_keeps_physical_placement_and_paste_restores():
    v = volume()
    box = foreground_box(v, v, 3.0)
    part = crop(v, box)
    np.testing.assert_allclose(part.origin, index_to_physical(v.geometry, np.array([[b.start for b in box]]))[0])
    assert part.spacing == v.spacing and part.geometry.direction == v.geometry.direction
    np.testing.assert_array_equal(paste(part.array, box, v.shape), v.array)
    probs = np.ones((2, *part.shape), np.float32)
    full = paste(probs, box, (2, *v.shape), fill=0)
    assert full.shape == (2, 20, 40, 30) and full[:, box[0], box[1], box[2]].all() and full.sum() == probs.sum()
