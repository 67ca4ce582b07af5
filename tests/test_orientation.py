"""Canonical orientation: copies of one scan stored with other axes give the same canonical
array, and results go back onto each input's own axes. The copies are made by hand with numpy."""
from __future__ import annotations

import numpy as np
import pytest

from napari_uda.core.io import Geometry, Volume, VolumeError
from napari_uda.core.orientation import align_label, from_canonical, orientation_code, to_canonical
from napari_uda.data.phantom import make_case


def ras_copy(vol: Volume) -> Volume:
    """The same scan stored RAS: x and y run the other way (array axes 2 and 1 flipped), the origin
    moves to the voxel that is now first, direction (x, y, z) diag(-1, -1, 1)."""
    nz, ny, nx = vol.shape
    sz, sy, sx = vol.spacing
    oz, oy, ox = vol.origin
    geometry = Geometry(vol.spacing, (oz, oy + (ny - 1) * sy, ox + (nx - 1) * sx),
                        ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)))
    return Volume(vol.array[:, ::-1, ::-1].copy(), geometry, vol.modality)


def transposed_copy(vol: Volume) -> Volume:
    """The same scan with array axes y and x swapped (direction columns swapped to match)."""
    sz, sy, sx = vol.spacing
    geometry = Geometry((sz, sx, sy), vol.origin, ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)))
    return Volume(vol.array.transpose(0, 2, 1).copy(), geometry, vol.modality)


@pytest.fixture(scope="module")
def scan():
    return make_case("t2wi", 0, seed=3, shape=(12, 24, 20))


def test_codes():
    assert orientation_code(Geometry()) == "LPS"
    assert orientation_code(ras_copy(Volume(np.zeros((2, 3, 4)))).geometry) == "RAS"


@pytest.mark.parametrize("copy", [ras_copy, transposed_copy])
def test_copies_have_the_same_canonical_array(scan, copy):
    image, label = scan
    for vol in (image, label):
        other = copy(vol)
        assert not np.array_equal(other.array, vol.array) or other.shape != vol.shape
        a, b = to_canonical(vol), to_canonical(other)
        np.testing.assert_array_equal(a.array, b.array)
        assert a.geometry.matches(b.geometry)


@pytest.mark.parametrize("copy", [ras_copy, transposed_copy])
def test_results_go_back_onto_the_input_axes(scan, copy):
    _, label = scan
    other = copy(label)
    canon = to_canonical(other)
    result = canon.with_array(canon.array * 2)  # any per-voxel result computed on the canonical grid
    back = from_canonical(result, other.geometry)
    np.testing.assert_array_equal(back.array, other.array * 2)
    assert back.geometry == other.geometry


def test_oblique_volume_round_trips():
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    geometry = Geometry((2.0, 1.5, 1.0), (5.0, -3.0, 7.0), ((1.0, 0.0, 0.0), (0.0, c, -s), (0.0, s, c)))
    vol = Volume(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), geometry)
    back = from_canonical(to_canonical(vol), vol.geometry)
    np.testing.assert_array_equal(back.array, vol.array)


def test_label_with_flipped_axes_is_reoriented_onto_its_image(scan):
    image, label = scan
    moved, note = align_label(image, ras_copy(label), "img.nii.gz", "lab.nii.gz")
    np.testing.assert_array_equal(moved.array, label.array)
    assert moved.geometry == image.geometry and "lab.nii.gz" in note and "RAS" in note
    same, none = align_label(image, label, "img.nii.gz", "lab.nii.gz")
    assert same is label and none is None


def test_label_on_another_grid_is_an_error(scan):
    image, label = scan
    shifted = Volume(label.array, Geometry(label.spacing, (label.origin[0] + 10, *label.origin[1:]), label.geometry.direction))
    with pytest.raises(VolumeError, match="lab.nii.gz"):
        align_label(image, shifted, "img.nii.gz", "lab.nii.gz")
    with pytest.raises(VolumeError, match="lab.nii.gz"):
        align_label(image, Volume(label.array[:, :-1], label.geometry), "img.nii.gz", "lab.nii.gz")
