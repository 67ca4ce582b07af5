"""One canonical anatomical orientation for computation, and the way back.

Scanners store RAS, LPS, LAS and oblique volumes. Translation slices, nnU-Net training and
prediction see every volume as :func:`to_canonical` turns it (array axes permuted and flipped
so that they run as close as possible to ``CANONICAL``; nothing is interpolated, the physical
placement is unchanged), and every result goes back to its input's own axes with
:func:`from_canonical` before it is written. Without this a model sees a mirrored body
whenever orientations differ (and swaps left and right kidney).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_uda.core.io import (
    Geometry,
    Volume,
    VolumeError,
    check_same_grid,
    read_volume,
    require_finite,
    require_organ_labels,
    to_sitk,
)

log = logging.getLogger(__name__)

#: DICOM orientation code of the canonical axes: SimpleITK's identity direction (x towards the
#: patient's left, y posterior, z superior; the array (z, y, x) runs S, P, L).
CANONICAL = "LPS"


def orientation_code(geometry: Geometry) -> str:
    """The three-letter DICOM code of the axes closest to ``geometry``'s direction (x, y, z order)."""
    d_xyz = geometry.direction_matrix[::-1, ::-1]
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(v) for v in d_xyz.ravel()])


def reorient(volume: Volume, code: str) -> Volume:
    """``volume`` with its array axes permuted and flipped to run as ``code`` (same voxels, same
    physical placement). A volume already in ``code`` is returned as it is."""
    if orientation_code(volume.geometry) == code:
        return volume
    image = sitk.DICOMOrient(to_sitk(volume), code)
    array = sitk.GetArrayFromImage(image)
    if volume.array.dtype == np.bool_:
        array = array.astype(bool)
    return Volume(array, Geometry.from_sitk(image), volume.modality)


def to_canonical(volume: Volume) -> Volume:
    """``volume`` in the canonical orientation (:data:`CANONICAL`)."""
    return reorient(volume, CANONICAL)


def from_canonical(result: Volume, original: Geometry) -> Volume:
    """A result computed on the canonical copy of a volume, turned back onto ``original``'s own axes
    (and given exactly ``original``'s geometry)."""
    back = reorient(result, orientation_code(original))
    if not back.geometry.matches(original):
        raise VolumeError(f"a result on grid {back.geometry} does not lie on its input's grid {original}")
    return Volume(back.array, original, result.modality)


def channels_from_canonical(channels: np.ndarray, canonical: Geometry, original: Geometry) -> np.ndarray:
    """(C, z, y, x) per-class maps computed on a canonical grid, turned back onto ``original``'s axes."""
    return np.stack([from_canonical(Volume(c, canonical), original).array for c in channels])


def align_label(image: Volume, label: Volume, image_name: str, label_name: str) -> tuple[Volume, str | None]:
    """``label`` on ``image``'s grid. A label on the same physical grid but with permuted or flipped
    axes is reoriented onto the image, with a note saying so; any other grid is a
    :class:`VolumeError` naming both files. Returns (label, note or None)."""
    if image.shape == label.shape and image.geometry.matches(label.geometry):
        return label, None
    canon_image, canon_label = to_canonical(image), to_canonical(label)
    try:
        check_same_grid(canon_image, canon_label, image_name, label_name)
    except VolumeError:
        check_same_grid(image, label, image_name, label_name)  # the error in the files' own terms
        raise
    moved = from_canonical(Volume(canon_label.array, canon_image.geometry, label.modality), image.geometry)
    return moved, (f"{label_name}: stored as {orientation_code(label.geometry)}, its image {image_name} as "
                   f"{orientation_code(image.geometry)}; reoriented onto the image's grid")


def read_canonical(image_path: Path, label_path: Path | None = None, modality: str | None = None
                   ) -> tuple[Volume, Volume | None]:
    """An image (finite values checked) and, when given, its organ labels (aligned onto the image as
    :func:`align_label` does, the note logged; values checked), both in the canonical orientation."""
    image = read_volume(image_path, modality)
    require_finite(image, str(image_path))
    if label_path is None:
        return to_canonical(image), None
    label, note = align_label(image, read_volume(label_path), str(image_path), str(label_path))
    if note:
        log.warning(note)
    require_organ_labels(label, str(label_path))
    return to_canonical(image), to_canonical(label)
