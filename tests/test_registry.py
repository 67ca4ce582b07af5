"""The organ table, the modality registry and the intensity rules."""
from __future__ import annotations

import numpy as np
import pytest

from napari_uda.core.errors import UdaError
from napari_uda.core.intensity import CT_WINDOW, from_unit_range, intensity_window, to_unit_range
from napari_uda.core.modalities import MODALITIES, TARGETS, get_modality
from napari_uda.core.organs import ORGANS, PET_SCORED, napari_colormap, nnunet_labels


def test_organ_table_is_flare_numbering():
    assert [o.index for o in ORGANS] == list(range(1, 14))
    assert [o.key for o in ORGANS][:5] == ["liver", "right_kidney", "spleen", "pancreas", "aorta"]
    assert ORGANS[12].key == "left_kidney"
    tol = {o.key: o.nsd_tolerance_mm for o in ORGANS}
    assert tol == {"liver": 5, "right_kidney": 3, "spleen": 3, "pancreas": 5, "aorta": 2, "ivc": 2,
                   "right_adrenal": 2, "left_adrenal": 2, "gallbladder": 2, "esophagus": 3, "stomach": 5,
                   "duodenum": 7, "left_kidney": 3}
    assert {o.key for o in ORGANS if o.crop_to_gt_z} == {"aorta", "ivc", "esophagus"}
    assert sorted(PET_SCORED) == [1, 2, 3, 13]
    assert len({o.color for o in ORGANS}) == 13
    cmap = napari_colormap()
    assert cmap[0][3] == 0 and all(cmap[o.index][3] == 1 for o in ORGANS)
    assert nnunet_labels()["background"] == 0 and nnunet_labels()["left_kidney"] == 13


def test_modality_registry():
    assert [m.key for m in TARGETS] == ["DWI", "T2WI", "C+A", "InPhase", "OutPhase", "C+pre", "C+V", "C+Delay",
                                        "MRI", "PET-FDG", "PET-PSMA"]
    assert get_modality("t2wi").key == "T2WI"
    assert get_modality("C+V").slug == "cv"
    assert get_modality("pet").key == "PET-FDG"
    assert len({m.slug for m in MODALITIES}) == len(MODALITIES)
    with pytest.raises(UdaError, match="unknown modality 'xray'"):
        get_modality("xray")


def test_ct_window_maps_to_unit_range():
    ct = np.array([-1000, -600, 0, 600, 2000], np.float32)
    out = to_unit_range(ct, intensity_window(ct, get_modality("CT")))
    np.testing.assert_allclose(out, [-1, -1, 0, 1, 1])
    assert CT_WINDOW == (-600.0, 600.0)


def test_mri_percentile_window():
    rng = np.random.default_rng(0)
    mri = rng.uniform(0, 1000, 100_000).astype(np.float32)
    lo, hi = intensity_window(mri, get_modality("T2WI"))
    assert lo == pytest.approx(np.percentile(mri, 1)) and hi == pytest.approx(np.percentile(mri, 99))
    out = to_unit_range(mri, (lo, hi))
    assert out.min() == -1 and out.max() == 1
    assert abs(float((out == 1).mean()) - 0.01) < 0.002
    np.testing.assert_allclose(from_unit_range(out, (lo, hi)), np.clip(mri, lo, hi), rtol=1e-4, atol=1e-2)


def test_window_rejects_all_nan():
    with pytest.raises(ValueError, match="no finite"):
        intensity_window(np.full(10, np.nan), get_modality("PET"))
