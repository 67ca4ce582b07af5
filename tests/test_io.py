"""Geometry-true I/O: round trips in every format and clear errors for bad input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from napari_uda.core.errors import VolumeError
from napari_uda.core.files import FILE_SUFFIXES, stem_of, suffix_of
from napari_uda.core.io import (
    Geometry,
    Volume,
    check_same_grid,
    read_volume,
    volume_info,
    write_dicom_series,
    write_volume,
)

OBLIQUE = Rotation.from_euler("xyz", [12, -20, 33], degrees=True).as_matrix()


@pytest.fixture
def oblique_volume() -> Volume:
    rng = np.random.default_rng(0)
    array = (rng.normal(0, 400, (6, 9, 11))).astype(np.int16)
    return Volume(array, Geometry((4.5, 0.77, 0.93), (-120.25, 33.5, 7.125), tuple(map(tuple, OBLIQUE))))


def assert_same_geometry(a: Geometry, b: Geometry, tol: float = 1e-4) -> None:
    assert np.abs(np.subtract(a.spacing, b.spacing)).max() < tol
    assert np.abs(np.subtract(a.origin, b.origin)).max() < tol
    assert np.abs(a.direction_matrix - b.direction_matrix).max() < tol


@pytest.mark.parametrize("suffix", FILE_SUFFIXES)
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_round_trip_every_format(tmp_path, oblique_volume, suffix, dtype):
    vol = oblique_volume.with_array(oblique_volume.array.astype(dtype) if dtype != np.uint8 else
                                    (oblique_volume.array % 14).astype(np.uint8))
    back = read_volume(write_volume(vol, tmp_path / f"v{suffix}"))
    assert back.array.dtype == vol.array.dtype
    np.testing.assert_array_equal(back.array, vol.array)
    assert_same_geometry(back.geometry, vol.geometry)


def test_round_trip_dicom_series(tmp_path, oblique_volume):
    folder = write_dicom_series(oblique_volume, tmp_path / "series")
    back = read_volume(folder)
    np.testing.assert_array_equal(back.array, oblique_volume.array)
    assert_same_geometry(back.geometry, oblique_volume.geometry)


def test_axis_order_matches_simpleitk(tmp_path):
    """Spacing and origin are reported in array (z, y, x) order: the reverse of SimpleITK's."""
    img = sitk.Image(5, 6, 7, sitk.sitkInt16)  # x=5, y=6, z=7
    img.SetSpacing((0.5, 0.75, 3.0))
    img.SetOrigin((10.0, 20.0, 30.0))
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    vol = read_volume(tmp_path / "a.nii.gz")
    assert vol.shape == (7, 6, 5)
    assert vol.spacing == pytest.approx((3.0, 0.75, 0.5))
    assert vol.origin == pytest.approx((30.0, 20.0, 10.0))


def test_suffix_helpers():
    assert suffix_of("a/b/case_001.nii.gz") == ".nii.gz"
    assert stem_of("a/b/case_001.nii.gz") == "case_001"
    assert suffix_of("x.MHA") == ".mha"
    assert suffix_of("x.png") == ""


def test_missing_file(tmp_path):
    with pytest.raises(VolumeError, match="no such file"):
        read_volume(tmp_path / "nothing.nii.gz")


def test_corrupt_file_named(tmp_path):
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"this is not an image at all")
    with pytest.raises(VolumeError, match=r"corrupt.nii.gz: (cannot be read|compressed data is truncated or corrupt)"):
        read_volume(bad)


@pytest.mark.parametrize("suffix", FILE_SUFFIXES)
def test_truncated_file_named(tmp_path, oblique_volume, suffix):
    """SimpleITK zero-fills some truncated files silently; we must not."""
    if suffix == ".mhd":
        pytest.skip("the .mhd header stays intact; its .raw/.zraw companion is what would be truncated")
    path = write_volume(oblique_volume.with_array(oblique_volume.array.astype(np.float32)), tmp_path / f"t{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeError, match=f"t{suffix}"):
        read_volume(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_payload_cut_short_inside_an_intact_stream(tmp_path, oblique_volume, suffix):
    """A gzip stream that is itself complete but holds fewer voxels than the header promises."""
    import gzip

    path = write_volume(oblique_volume, tmp_path / "v.nii", compress=False)
    raw = path.read_bytes()[:-40]
    target = tmp_path / f"short{suffix}"
    target.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    with pytest.raises(VolumeError, match=rf"short{suffix}: image data is truncated \({len(raw)} bytes"):
        read_volume(target)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nifti_non_finite_voxels_are_named(tmp_path, oblique_volume, suffix, bad):
    """ITK reads NaN and infinite NIfTI voxels as 0; the reader must not let them pass as 0."""
    a = oblique_volume.array.astype(np.float32)
    a[2, 3, 4] = bad
    path = write_volume(oblique_volume.with_array(a), tmp_path / f"v{suffix}")
    with pytest.raises(VolumeError, match=rf"v{suffix}: contains NaN or infinite values"):
        read_volume(path)
    a[2, 3, 4] = 7.0
    assert read_volume(write_volume(oblique_volume.with_array(a), tmp_path / f"ok{suffix}")).array[2, 3, 4] == 7.0


@pytest.mark.parametrize("voxel_mm", [(0.0, 1.0, 1.0), (1.0, -2.0, 1.0), (1.0, 1.0, float("nan"))])
def test_nifti_spacing_must_be_positive(tmp_path, oblique_volume, voxel_mm):
    """ITK reads a zero or negative voxel size as 1 mm."""
    path = write_volume(oblique_volume, tmp_path / "v.nii", compress=False)
    raw = bytearray(path.read_bytes())
    raw[80:92] = np.array(voxel_mm, "<f4").tobytes()  # pixdim[1:4] of the NIfTI-1 header
    path.write_bytes(bytes(raw))
    with pytest.raises(VolumeError, match="v.nii: voxel spacing in the header is .* it must be > 0"):
        read_volume(path)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "image.png"
    p.write_bytes(b"\x89PNG")
    with pytest.raises(VolumeError, match="unsupported file type"):
        read_volume(p)


def test_2d_and_4d_rejected(tmp_path):
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkFloat32), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(VolumeError, match=r"flat.nii.gz: is 2D.*3D volume is needed"):
        read_volume(tmp_path / "flat.nii.gz")
    sitk.WriteImage(sitk.Image([4, 4, 4, 3], sitk.sitkFloat32), str(tmp_path / "series.nii.gz"))
    with pytest.raises(VolumeError, match=r"series.nii.gz: is 4D"):
        read_volume(tmp_path / "series.nii.gz")


def test_dicom_series_with_a_missing_duplicate_or_broken_slice(tmp_path, oblique_volume):
    """ITK takes the z spacing from the first two slices and skips what it cannot read: a missing
    slice would stretch the volume silently."""
    import shutil

    folder = write_dicom_series(oblique_volume, tmp_path / "series")
    assert read_volume(folder).shape == oblique_volume.shape
    missing = shutil.copytree(folder, tmp_path / "missing")
    (missing / "slice_0003.dcm").unlink()
    with pytest.raises(VolumeError, match="missing: uneven DICOM slice spacing: 9.00 mm .* 4.50 mm elsewhere"):
        read_volume(missing)
    broken = shutil.copytree(folder, tmp_path / "broken")
    (broken / "slice_0002.dcm").write_bytes((broken / "slice_0002.dcm").read_bytes()[:300])
    with pytest.raises(VolumeError, match="broken: slice_0002.dcm is not part of the DICOM series"):
        read_volume(broken)


def test_an_input_folder_holding_a_dicom_series_is_one_volume(tmp_path, oblique_volume):
    from napari_uda.core.files import volume_inputs

    folder = write_dicom_series(oblique_volume, tmp_path / "series")
    assert volume_inputs(folder) == [folder]
    write_volume(oblique_volume, tmp_path / "vols" / "a.nii.gz")
    assert volume_inputs(tmp_path / "vols") == [tmp_path / "vols" / "a.nii.gz"]


def test_empty_folder_is_not_dicom(tmp_path):
    with pytest.raises(VolumeError, match="no DICOM series"):
        read_volume(tmp_path)


def test_label_geometry_mismatch(oblique_volume):
    label = Volume(np.zeros(oblique_volume.shape, np.uint8),
                   Geometry((4.5, 0.77, 0.95), oblique_volume.origin, oblique_volume.geometry.direction))
    with pytest.raises(VolumeError, match="lab.nii.gz: geometry does not match image img.nii.gz"):
        check_same_grid(oblique_volume, label, "img.nii.gz", "lab.nii.gz")
    wrong_shape = Volume(np.zeros((6, 9, 10), np.uint8), oblique_volume.geometry)
    with pytest.raises(VolumeError, match="shape"):
        check_same_grid(oblique_volume, wrong_shape, "img.nii.gz", "lab.nii.gz")
    check_same_grid(oblique_volume, oblique_volume.with_array(np.zeros(oblique_volume.shape, np.uint8)), "a", "b")


def test_bad_geometry_values():
    with pytest.raises(VolumeError, match="spacing"):
        Geometry((1.0, 0.0, 1.0))
    with pytest.raises(VolumeError, match="3D"):
        Volume(np.zeros((3, 3)))


def test_info_reports_nan(oblique_volume):
    a = oblique_volume.array.astype(np.float32)
    a[0, 0, 0] = np.nan
    info = volume_info(oblique_volume.with_array(a))
    assert info["non_finite_voxels"] == 1
    assert info["shape_zyx"] == [6, 9, 11]
    assert np.isfinite(info["percentiles"]["p50"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_uda.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_info(tmp_path, oblique_volume):
    path = write_volume(oblique_volume, tmp_path / "x.mha")
    res = _cli("info", str(path))
    assert res.returncode == 0, res.stderr
    for word in ("shape:", "(6, 9, 11)", "spacing:", "4.5", "origin:", "direction:", "int16", "p99="):
        assert word in res.stdout


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"garbage")
    for args in (["info", str(bad)], ["info", str(tmp_path / "missing.nii")], ["phantom", str(tmp_path), "--modalities", "xray"]):
        res = _cli(*args)
        assert res.returncode == 1
        assert "Traceback" not in res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("napari-uda: error:"), res.stderr


def test_cli_help_lists_commands():
    res = _cli("--help")
    assert res.returncode == 0
    for cmd in ("info", "phantom", "demo"):
        assert cmd in res.stdout


HELP_WITHOUT_TORCH = """
import argparse, contextlib, io, sys
from napari_uda import cli

def commands(parser, path=()):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, path + (name,))

for path in commands(cli.build_parser()):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        cli.main([*path, "--help"])
heavy = sorted({"torch", "numba", "nnunetv2"} & set(sys.modules))
print(len(list(commands(cli.build_parser()))), heavy)
"""


def test_every_help_answers_without_torch_or_numba():
    """`--help` of every command imports neither torch nor numba (seconds on a busy machine)."""
    res = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    count, heavy = res.stdout.split(" ", 1)
    assert res.returncode == 0 and int(count) > 20, res.stderr
    assert heavy.strip() == "[]"


def test_an_unforeseen_error_is_one_line_with_the_traceback_in_a_log(tmp_path, monkeypatch, capsys):
    """The safety net under every command: no traceback on screen, the traceback in the workspace log."""
    from napari_uda import cli
    from napari_uda.cli import models

    def broken(args):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(models, "cmd_export", broken)
    (tmp_path / "ws").mkdir()
    assert cli.main(["models", "export", "--workspace", str(tmp_path / "ws"), "--stage", "x", "--out", "o"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    log = tmp_path / "ws" / "logs" / "errors.log"
    assert err == [f"napari-uda: error: unexpected RuntimeError: something nobody foresaw (traceback in {log})"]
    assert "Traceback" in log.read_text() and "something nobody foresaw" in log.read_text()
