"""Geometry-true reading and writing of 3D medical volumes through SimpleITK.

Conventions: arrays are (z, y, x); ``spacing`` and ``origin`` are given in the same
array-axis order, in mm; ``direction`` is the 3x3 matrix whose column k is the
physical direction of array axis k, also in (z, y, x) order. SimpleITK uses
(x, y, z); the conversion happens only in this module.
"""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from napari_uda.core.errors import VolumeError
from napari_uda.core.files import FILE_SUFFIXES, atomic_path, looks_like_dicom, suffix_of

GEOMETRY_ATOL = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a (z, y, x) voxel grid: spacing and origin in mm, direction cosines."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __post_init__(self) -> None:
        spacing = np.asarray(self.spacing, dtype=float)
        if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise VolumeError(f"spacing must be three positive numbers, got {self.spacing}")
        if np.asarray(self.origin, dtype=float).shape != (3,):
            raise VolumeError(f"origin must be three numbers, got {self.origin}")
        if np.asarray(self.direction, dtype=float).shape != (3, 3):
            raise VolumeError("direction must be a 3x3 matrix")

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float)

    @property
    def is_axis_aligned(self) -> bool:
        return bool(np.allclose(self.direction_matrix, np.eye(3), atol=1e-6))

    def matches(self, other: Geometry, atol: float = GEOMETRY_ATOL) -> bool:
        """True when spacing, origin and direction agree within ``atol``."""
        return (
            np.allclose(self.spacing, other.spacing, atol=atol, rtol=0)
            and np.allclose(self.origin, other.origin, atol=max(atol, 1e-3), rtol=0)
            and np.allclose(self.direction_matrix, other.direction_matrix, atol=atol, rtol=0)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "spacing": [float(v) for v in self.spacing],
            "origin": [float(v) for v in self.origin],
            "direction": [[float(v) for v in row] for row in self.direction],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        return cls(
            spacing=tuple(float(v) for v in d["spacing"]),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in d["origin"]),  # type: ignore[arg-type]
            direction=tuple(tuple(float(v) for v in row) for row in d["direction"]),
        )

    # --- SimpleITK, which orders everything (x, y, z) ---------------------------------
    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        d_xyz = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        d_zyx = d_xyz[::-1, ::-1]
        return cls(
            spacing=tuple(float(v) for v in image.GetSpacing()[::-1]),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in image.GetOrigin()[::-1]),  # type: ignore[arg-type]
            direction=tuple(tuple(float(v) for v in row) for row in d_zyx),
        )

    def apply_to_sitk(self, image: sitk.Image) -> None:
        image.SetSpacing([float(v) for v in self.spacing[::-1]])
        image.SetOrigin([float(v) for v in self.origin[::-1]])
        image.SetDirection([float(v) for v in self.direction_matrix[::-1, ::-1].ravel()])


@dataclass
class Volume:
    """A 3D array (z, y, x) with its physical geometry and, when known, its modality key."""

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    modality: str | None = None

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise VolumeError(f"a volume must be 3D (z, y, x), got an array of shape {self.array.shape}")

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    @property
    def origin(self) -> tuple[float, float, float]:
        return self.geometry.origin

    @property
    def direction(self) -> np.ndarray:
        return self.geometry.direction_matrix

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array.shape  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, modality: str | None = None) -> Volume:
        """A new volume on the same grid holding ``array`` (shape must match)."""
        if array.shape != self.array.shape:
            raise VolumeError(f"array of shape {array.shape} does not fit a grid of shape {self.array.shape}")
        return Volume(array, self.geometry, modality if modality is not None else self.modality)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages end with the useful sentence; keep it short.
    useful = [ln for ln in lines if not ln.startswith(("/", "itk::", "Description:")) or "Description" in ln]
    text = (useful or lines or [type(exc).__name__])[-1]
    return text.replace("Description:", "").replace("sitk::ERROR:", "").strip()


#: NIfTI datatype codes of floating-point voxels -> numpy type (complex types are refused by ITK anyway).
_NIFTI_FLOATS = {16: "f4", 64: "f8", 1536: "f16"}


def _nifti_header(head: bytes) -> tuple[str, int, int, int, np.ndarray] | None:
    """(byte order, vox_offset, datatype, bitpix, voxel sizes x y z) of a NIfTI-1/2 header, or None."""
    if len(head) < 348:
        return None
    for order in ("<", ">"):
        size = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
        if size == 348:  # NIfTI-1
            datatype, bitpix = (int(v) for v in np.frombuffer(head[70:74], dtype=f"{order}i2"))
            return (order, int(np.frombuffer(head[108:112], dtype=f"{order}f4")[0]), datatype, bitpix,
                    np.frombuffer(head[80:92], dtype=f"{order}f4"))
        if size == 540 and len(head) >= 540:  # NIfTI-2
            datatype, bitpix = (int(v) for v in np.frombuffer(head[12:16], dtype=f"{order}i2"))
            return (order, int(np.frombuffer(head[168:176], dtype=f"{order}i8")[0]), datatype, bitpix,
                    np.frombuffer(head[112:136], dtype=f"{order}f8"))
    return None


def _check_nifti_payload(path: Path, n_voxels: int) -> None:
    """ITK zero-fills a NIfTI payload cut short (plain or inside an intact gzip stream), reads NaN
    and infinite voxels as 0 and a zero or negative voxel size as 1 mm. Check the header's voxel
    sizes and stream the raw payload once: its length against the header, floating-point voxels
    for finiteness."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(540)
            header = _nifti_header(head)
            if header is None:
                return
            order, offset, datatype, bitpix, voxel_mm = header
            if not (np.isfinite(voxel_mm).all() and (voxel_mm > 0).all()):  # ITK would read them as 1 mm
                raise VolumeError(f"{path}: voxel spacing in the header is {voxel_mm.tolist()} mm; it must be > 0")
            item = max(bitpix, 8) // 8
            need, kind = offset + n_voxels * item, _NIFTI_FLOATS.get(datatype)
            got = len(head)
            if got < offset:  # skip the extensions between the header and the voxels
                got += len(f.read(offset - got))
            pending, finite = head[offset:], True
            while True:
                if kind is not None:
                    usable = len(pending) - len(pending) % item
                    finite = finite and bool(np.isfinite(np.frombuffer(pending[:usable], f"{order}{kind}")).all())
                    pending = pending[usable:]
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                got, pending = got + len(chunk), pending + chunk
    except (EOFError, OSError, zlib.error) as exc:
        raise VolumeError(f"{path}: compressed data is truncated or corrupt ({exc})") from None
    if got < need:
        raise VolumeError(f"{path}: image data is truncated ({got} bytes, the header promises {need})")
    if not finite:
        raise VolumeError(f"{path}: contains NaN or infinite values")


def _check_dicom_slices(folder: Path, files: Sequence[str]) -> None:
    """ITK stacks a DICOM series by slice position and takes the z spacing from the first pair: a
    missing slice would silently stretch the volume, a duplicate or unreadable file would go
    unnoticed. Check every file's header: positions along the slice normal evenly spaced, unique,
    and every DICOM file in the folder part of the series."""
    reader = sitk.ImageFileReader()
    positions = []
    for name in files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise VolumeError(f"{name}: unreadable DICOM slice ({_first_line(exc)})") from None
        if not reader.HasMetaDataKey("0020|0032") or not reader.HasMetaDataKey("0020|0037"):
            return  # no patient geometry to check against: ITK's own rules apply
        cosines = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
        normal = np.cross(cosines[:3], cosines[3:])
        positions.append(float(np.dot(normal, [float(v) for v in reader.GetMetaData("0020|0032").split("\\")])))
    listed = {Path(f).resolve() for f in files}
    others = sorted(p.name for p in folder.iterdir() if p.is_file() and p.resolve() not in listed and looks_like_dicom(p))
    if others and len(files) > 1:
        raise VolumeError(f"{folder}: {others[0]} is not part of the DICOM series (unreadable or from another series)")
    if len(positions) < 3:
        return
    z = np.sort(np.array(positions))
    gaps = np.diff(z)
    step = float(np.median(gaps))
    if step <= 1e-6 or gaps.min() <= 1e-6:
        raise VolumeError(f"{folder}: two DICOM slices share the position {float(z[np.argmin(gaps)]):.2f} mm")
    bad = np.flatnonzero(np.abs(gaps - step) > 0.1 * step)
    if bad.size:
        k = int(bad[0])
        raise VolumeError(f"{folder}: uneven DICOM slice spacing: {gaps[k]:.2f} mm between the slices at "
                          f"{z[k]:.2f} and {z[k + 1]:.2f} mm, {step:.2f} mm elsewhere (a missing slice?)")


def _read_sitk(path: Path) -> sitk.Image:
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise VolumeError(f"{path}: folder holds no DICOM series")
        if len(series) > 1:
            raise VolumeError(f"{path}: folder holds {len(series)} DICOM series; put one series per folder")
        files = reader.GetGDCMSeriesFileNames(str(path), series[0])
        _check_dicom_slices(path, files)
        reader.SetFileNames(files)
        try:
            return reader.Execute()
        except RuntimeError as exc:
            raise VolumeError(f"{path}: cannot read the DICOM series: {_first_line(exc)}") from None
    if not path.exists():
        raise VolumeError(f"{path}: no such file")
    if not suffix_of(path):
        raise VolumeError(
            f"{path}: unsupported file type; expected one of {', '.join(FILE_SUFFIXES)} or a DICOM folder"
        )
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeError(f"{path}: cannot be read as an image (corrupt or truncated?): {_first_line(exc)}") from None


def read_volume(path: str | Path, modality: str | None = None) -> Volume:
    """Read a 3D volume (NIfTI, MetaImage, NRRD or a folder with one DICOM series).

    Raises :class:`VolumeError` naming the file when it cannot be read or is not 3D.
    """
    path = Path(path)
    image = _read_sitk(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar volume is needed")
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
        dim = 3
    if dim != 3:
        raise VolumeError(f"{path}: is {dim}D (size {image.GetSize()}); a 3D volume is needed")
    if min(image.GetSize()) < 2:
        raise VolumeError(f"{path}: has size {image.GetSize()} (x, y, z); a 3D volume with at least 2 voxels per axis is needed")
    array = sitk.GetArrayFromImage(image)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_payload(path, array.size)
    return Volume(array, Geometry.from_sitk(image), modality)


def to_sitk(volume: Volume) -> sitk.Image:
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    volume.geometry.apply_to_sitk(image)
    return image


def resample(volume: Volume, spacing: tuple[float, float, float], labels: bool = False) -> Volume:
    """``volume`` on a grid of ``spacing`` (z, y, x mm) covering the same extent, with the same origin and
    direction: linear interpolation for images, nearest neighbour for labels."""
    src = to_sitk(volume)
    new_xyz = [float(v) for v in spacing[::-1]]
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(src.GetSize(), src.GetSpacing(), new_xyz)]
    ref = sitk.Image(size, src.GetPixelID())
    ref.SetSpacing(new_xyz)
    ref.SetOrigin(src.GetOrigin())
    ref.SetDirection(src.GetDirection())
    out = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkNearestNeighbor if labels else sitk.sitkLinear, 0)
    return Volume(sitk.GetArrayFromImage(out), Geometry.from_sitk(out), volume.modality)


def write_volume(volume: Volume, path: str | Path, compress: bool = True) -> Path:
    """Write ``volume`` with its geometry; the format follows the suffix of ``path``.

    The file is written next to its destination and renamed into place, so a
    crash never leaves a half-written file under the final name.
    """
    path = Path(path)
    suffix = suffix_of(path)
    if not suffix:
        raise VolumeError(f"{path}: unsupported output type; use one of {', '.join(FILE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    image = to_sitk(volume)
    if suffix == ".mhd":  # header + raw pair: write directly, the pair cannot be renamed atomically
        sitk.WriteImage(image, str(path), compress)
        return path
    try:
        with atomic_path(path, keep_suffix=suffix) as tmp:  # SimpleITK picks the format by extension
            sitk.WriteImage(image, str(tmp), compress)
    except RuntimeError as exc:
        raise VolumeError(f"{path}: cannot be written: {_first_line(exc)}") from None
    return path


def write_dicom_series(volume: Volume, folder: str | Path, series_description: str = "napari-uda") -> Path:
    """Write an integer volume as one DICOM series (one file per z slice) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not np.issubdtype(volume.array.dtype, np.integer):
        raise VolumeError("DICOM export needs an integer volume (e.g. CT in HU as int16)")
    image = to_sitk(Volume(volume.array.astype(np.int16), volume.geometry))
    direction = image.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125." + str(abs(hash((folder.as_posix(), series_description))) % 10**12)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "OT",
            "0020|000e": series_uid,
            "0008|103e": series_description,
            "0020|0037": "\\".join(f"{v:.10f}" for v in (*direction[0:7:3], *direction[1:8:3])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0013": str(k + 1),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(sl)
    return folder


def require_finite(volume: Volume, name: str) -> None:
    """Raise :class:`VolumeError` naming ``name`` if the volume holds NaN or infinite values."""
    if np.issubdtype(volume.array.dtype, np.floating) and not np.all(np.isfinite(volume.array)):
        raise VolumeError(f"{name}: contains NaN or infinite values")


def read_scan(path: str | Path) -> Volume:
    """A scan read from ``path``, checked to hold finite values (errors name the file)."""
    volume = read_volume(path)
    require_finite(volume, str(path))
    return volume


def require_organ_labels(volume: Volume, name: str) -> None:
    """Raise :class:`VolumeError` naming ``name`` unless the volume holds integer organ labels 0..13."""
    from napari_uda.core.organs import MAX_LABEL, is_organ_label_array

    if not is_organ_label_array(volume.array):
        a = volume.array
        if not np.issubdtype(a.dtype, np.integer):
            raise VolumeError(f"{name}: labels are stored as {a.dtype}; organ labels must be integers 0..{MAX_LABEL}")
        raise VolumeError(f"{name}: label values outside the organ table 0..{MAX_LABEL} "
                          f"(dtype {a.dtype}, min {a.min()}, max {a.max()})")


def check_same_grid(image: Volume, label: Volume, image_name: str, label_name: str) -> None:
    """Raise :class:`VolumeError` unless ``label`` lies on exactly the grid of ``image``."""
    if image.shape != label.shape:
        raise VolumeError(f"{label_name}: shape {label.shape} does not match image {image_name} of shape {image.shape}")
    if not image.geometry.matches(label.geometry):
        raise VolumeError(
            f"{label_name}: geometry does not match image {image_name} "
            f"(spacing {label.spacing} vs {image.spacing}, origin {label.origin} vs {image.origin})"
        )


def volume_info(volume: Volume) -> dict[str, Any]:
    """Shape, geometry, dtype and intensity statistics of a volume (JSON-friendly)."""
    a = volume.array
    finite = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a.ravel()
    pct = (0.5, 1, 5, 25, 50, 75, 95, 99, 99.5)
    values = np.percentile(finite, pct) if finite.size else [float("nan")] * len(pct)
    return {
        "shape_zyx": list(a.shape),
        "dtype": str(a.dtype),
        **volume.geometry.to_dict(),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "non_finite_voxels": int(a.size - finite.size),
        "percentiles": {f"p{p:g}": float(v) for p, v in zip(pct, values)},
    }


def format_info(path: str | Path, info: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`volume_info`."""
    fmt = lambda seq: "(" + ", ".join(f"{v:.6g}" for v in seq) + ")"  # noqa: E731
    lines = [
        f"file:       {path}",
        f"shape:      {tuple(info['shape_zyx'])} (z, y, x)",
        f"dtype:      {info['dtype']}",
        f"spacing:    {fmt(info['spacing'])} mm (z, y, x)",
        f"origin:     {fmt(info['origin'])} mm (z, y, x)",
        "direction:  " + "  ".join(fmt(row) for row in info["direction"]) + " (rows z, y, x)",
        f"range:      {info['min']:.6g} .. {info['max']:.6g}" if info["min"] is not None else "range:      (no finite values)",
        "percentiles: " + ", ".join(f"{k}={v:.6g}" for k, v in info["percentiles"].items()),
    ]
    if info["non_finite_voxels"]:
        lines.append(f"warning:    {info['non_finite_voxels']} voxels are NaN or infinite")
    return "\n".join(lines)
