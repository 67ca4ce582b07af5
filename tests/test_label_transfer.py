"""ASIT's label transfer between two sub-domains of one patient: affine registration on a phantom pair
whose affine and contrast change are known."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_uda.core.errors import UdaError
from napari_uda.core.io import Geometry, Volume, to_sitk
from napari_uda.data.phantom import make_case
from napari_uda.pseudo.filters import mean_dice
from napari_uda.pseudo.label_transfer import transfer_label


def known_affine() -> sitk.AffineTransform:
    """Fixed -> moving mm: 6 degrees about z, 4% larger, shifted (8, -6, 5) mm, about the origin."""
    a = np.deg2rad(6.0)
    t = sitk.AffineTransform(3)
    t.SetMatrix((1.04 * np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])).ravel().tolist())
    t.SetTranslation((8.0, -6.0, 5.0))
    return t


@pytest.fixture(scope="module")
def pair():
    """(moving image, its label, fixed image, the truth on the fixed grid): the fixed scan is the moving
    one under :func:`known_affine`, with inverted contrast and every organ shifted differently."""
    image, label = make_case("t2wi", 0, seed=3, shape=(32, 80, 80))
    offsets = np.random.default_rng(0).uniform(-200, 200, 14)
    other = (image.array.max() - image.array) + offsets[label.array]
    t = known_affine()
    ref = to_sitk(image)
    warp = [sitk.GetArrayFromImage(sitk.Resample(to_sitk(v), ref, t, interp, 0))
            for v, interp in ((image.with_array(other.astype(np.float32)), sitk.sitkLinear), (label, sitk.sitkNearestNeighbor))]
    return image, label, Volume(warp[0], image.geometry), Volume(warp[1], image.geometry)


def test_transferred_label_matches_the_truth(pair):
    moving, label, fixed, truth = pair
    untransferred = mean_dice(label.array, truth.array)
    result = transfer_label(label, moving, fixed)
    assert result.label.geometry.matches(fixed.geometry) and result.label.shape == fixed.shape
    assert mean_dice(result.label.array, truth.array) >= 0.9 > untransferred + 0.2
    assert np.isfinite(result.metric) and result.metric < 0


def test_a_label_off_its_scans_grid_is_refused(pair):
    moving, label, fixed, _ = pair
    with pytest.raises(UdaError, match="does not match"):
        transfer_label(Volume(label.array[1:], Geometry()), moving, fixed)


def test_the_cli_transfers_and_names_a_bad_scan(pair, tmp_path, capsys):
    from napari_uda.cli.app import main
    from napari_uda.core.io import read_volume, write_volume

    moving, label, fixed, truth = pair
    paths = {k: write_volume(v, tmp_path / f"{k}.nii.gz") for k, v in (("moving", moving), ("label", label), ("fixed", fixed))}
    args = [f"--{k}={p}" for k, p in paths.items()]
    assert main(["transfer-label", *args, f"--out={tmp_path / 'out.nii.gz'}"]) == 0
    assert mean_dice(read_volume(tmp_path / "out.nii.gz").array, truth.array) >= 0.9
    bad = fixed.array.copy()
    bad[0, 0, 0] = np.nan
    write_volume(Volume(bad, fixed.geometry), paths["fixed"])
    assert main(["transfer-label", *args, f"--out={tmp_path / 'bad.nii.gz'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"napari-uda: error: {paths['fixed']}: contains NaN or infinite values"
    assert not (tmp_path / "bad.nii.gz").exists()
