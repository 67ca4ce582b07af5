"""The abdominal phantom: deterministic, anatomically placed, every organ present, plausible volumes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from napari_uda.core.errors import UdaError
from napari_uda.core.io import read_volume
from napari_uda.core.organs import ORGAN_BY_KEY, ORGANS
from napari_uda.data.phantom import DEFAULT_SHAPE, PHANTOM_MODALITIES, make_case, make_same_patient
from napari_uda.evaluate.metrics import organ_volumes_ml

# Plausible adult organ volumes (mL), generous bounds around textbook values.
VOLUME_RANGE_ML = {
    "liver": (800, 3000), "right_kidney": (80, 320), "left_kidney": (80, 320), "spleen": (80, 500),
    "pancreas": (30, 200), "aorta": (30, 200), "ivc": (30, 250), "right_adrenal": (2, 30),
    "left_adrenal": (2, 30), "gallbladder": (5, 120), "esophagus": (5, 60), "stomach": (100, 700),
    "duodenum": (20, 160),
}


@pytest.fixture(scope="module")
def cases():
    return {m.slug: make_case(m.slug, 0, seed=7) for m in PHANTOM_MODALITIES}


def test_deterministic_by_seed():
    a_img, a_lab = make_case("t2wi", 3, seed=11, shape=(16, 40, 40))
    b_img, b_lab = make_case("t2wi", 3, seed=11, shape=(16, 40, 40))
    np.testing.assert_array_equal(a_img.array, b_img.array)
    np.testing.assert_array_equal(a_lab.array, b_lab.array)
    assert a_img.geometry == b_img.geometry
    c_img, c_lab = make_case("t2wi", 4, seed=11, shape=(16, 40, 40))
    assert not np.array_equal(a_lab.array, c_lab.array)
    d_img, _ = make_case("t2wi", 3, seed=12, shape=(16, 40, 40))
    assert not np.array_equal(a_img.array, d_img.array)


def test_modalities_draw_different_patients(cases):
    """Unpaired like the real problem: case 0 of CT and of T2WI are different people."""
    assert not np.array_equal(cases["ct"][1].array, cases["t2wi"][1].array)


@pytest.mark.parametrize("slug", [m.slug for m in PHANTOM_MODALITIES])
def test_every_organ_present_with_plausible_volume(cases, slug):
    _, labels = cases[slug]
    vols = organ_volumes_ml(labels.array, labels.spacing)
    for organ in ORGANS:
        lo, hi = VOLUME_RANGE_ML[organ.key]
        assert lo <= vols[organ.index] <= hi, f"{slug} {organ.key}: {vols[organ.index]:.1f} mL"


def test_anatomical_placement(cases):
    _, labels = cases["ct"]
    com = {o.key: np.array(ndimage.center_of_mass(labels.array == o.index)) * labels.spacing for o in ORGANS}
    z, y, x = 0, 1, 2
    assert com["liver"][x] < com["spleen"][x]                # liver on the patient's right (low x)
    assert com["right_kidney"][x] < com["left_kidney"][x]
    assert com["right_kidney"][y] > com["liver"][y]           # kidneys posterior
    assert com["right_adrenal"][z] > com["right_kidney"][z]   # adrenals above the kidneys
    assert com["left_adrenal"][z] > com["left_kidney"][z]
    assert com["aorta"][x] > com["ivc"][x]                    # aorta left of the IVC
    assert com["esophagus"][z] > com["stomach"][z]
    assert com["gallbladder"][y] < com["right_kidney"][y]     # gallbladder anterior


def test_geometry_like_real_scans(cases):
    for slug, (image, labels) in cases.items():
        assert image.shape == DEFAULT_SHAPE
        sz, sy, sx = image.spacing
        assert sz > 1.3 * sy and sy == pytest.approx(sx)      # anisotropic, thick slices
        assert all(abs(o) > 1 for o in image.origin)          # non-zero origin
        assert labels.geometry == image.geometry
        assert labels.array.dtype == np.uint8


def test_intensities_plausible(cases):
    ct, ct_lab = cases["ct"]
    liver_hu = np.median(ct.array[ct_lab.array == ORGAN_BY_KEY["liver"].index])
    assert 80 < liver_hu < 140
    assert np.median(ct.array[0:5, 0:5, 0:5]) < -900          # air outside the body
    t2, t2_lab = cases["t2wi"]
    gb = np.median(t2.array[t2_lab.array == ORGAN_BY_KEY["gallbladder"].index])
    liver = np.median(t2.array[t2_lab.array == ORGAN_BY_KEY["liver"].index])
    aorta = np.median(t2.array[t2_lab.array == ORGAN_BY_KEY["aorta"].index])
    assert gb > 2 * liver > 2 * aorta                         # bright bile, dark liver, flow void
    pet, pet_lab = cases["pet_fdg"]
    assert pet.array.dtype == np.float32 and pet.array.min() >= 0
    kid = np.median(pet.array[pet_lab.array == ORGAN_BY_KEY["left_kidney"].index])
    muscle_like = np.median(pet.array[pet_lab.array == ORGAN_BY_KEY["pancreas"].index])
    assert kid > muscle_like


def test_a_patient_scanned_again_has_the_same_anatomy_moved_and_another_contrast():
    shape = (16, 48, 48)
    image, labels = make_case("t2wi", 2, seed=9, shape=shape)
    still_image, still = make_same_patient("inphase", "t2wi", 2, seed=9, shape=shape, max_deg=0.0, max_mm=0.0)
    np.testing.assert_array_equal(still.array, labels.array)  # no motion: the very same anatomy
    assert still.geometry == labels.geometry and still_image.modality == "InPhase"
    organs = labels.array > 0
    assert abs(np.corrcoef(image.array[organs], still_image.array[organs])[0, 1]) < 0.8  # another contrast
    moved_image, moved = make_same_patient("inphase", "t2wi", 2, seed=9, shape=shape)
    np.testing.assert_array_equal(make_same_patient("inphase", "t2wi", 2, seed=9, shape=shape)[0].array, moved_image.array)
    assert 0.5 < (moved.array == labels.array)[labels.array > 0].mean() < 1.0  # moved, not another patient
    before, after = (organ_volumes_ml(v.array, v.geometry.spacing) for v in (labels, moved))
    assert all(abs(after[k] - before[k]) <= 0.25 * before[k] + 2.0 for k in before)  # ml: the organs only moved


def test_rejects_what_it_cannot_render():
    with pytest.raises(UdaError, match="cannot render 'MRI'"):
        make_case("mri")
    with pytest.raises(UdaError, match="shape"):
        make_case("ct", shape=(4, 40, 40))


def test_cli_writes_documented_layout(tmp_path):
    res = subprocess.run([sys.executable, "-m", "napari_uda.cli", "phantom", str(tmp_path), "--cases", "2",
                          "--modalities", "ct,pet_fdg", "--seed", "5", "--shape", "12", "32", "32"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["cases"] == {"ct": 2, "pet_fdg": 2} and manifest["seed"] == 5
    for slug in ("ct", "pet_fdg"):
        for case in range(2):
            image = read_volume(tmp_path / slug / "images" / f"{slug}_{case:03d}.nii.gz")
            labels = read_volume(tmp_path / slug / "labels" / f"{slug}_{case:03d}.nii.gz")
            assert image.shape == labels.shape == (12, 32, 32)
    same, _ = make_case("ct", 1, seed=5, shape=(12, 32, 32))
    np.testing.assert_array_equal(read_volume(tmp_path / "ct" / "images" / "ct_001.nii.gz").array, same.array)


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_organs_stay_inside_the_muscle_wall(seed):
    """No organ is painted into the subcutaneous fat, and none touches it: the muscle wall lies between
    them, as in a real abdomen (organs painted into the body wall's fat cannot be learned)."""
    from napari_uda.data.phantom import ORGAN_OFFSET, SUBCUT, _draw_patient

    _, _, tissue = _draw_patient(np.random.default_rng(seed), DEFAULT_SHAPE)
    organs = tissue >= ORGAN_OFFSET
    assert (tissue == SUBCUT).sum() > 0.01 * tissue.size  # the body wall's fat is there (3-7% of the volume)
    assert not (ndimage.binary_dilation(organs) & (tissue == SUBCUT)).any()
