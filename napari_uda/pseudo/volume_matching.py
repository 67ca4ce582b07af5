"""ASIT's multi-domain matching, volume half: which scan of another sub-domain shows the same patient
as each target scan when their names do not say. Two sequences of one patient differ in contrast, so
scans are compared in Sobel space (ASIT's): the gradient magnitude of each scan relative to its
median in the body, on one isotropic grid centred on the body's centre of mass. The similarity of two
scans is the Pearson correlation of these maps; scans are paired one to one by the Hungarian method
on it (:func:`match_volumes`), which is blind to a scan being more or less alike to every other.
ASIT's own matching equation (its eq. 5) was not available to this project: this rule is our choice,
and its accuracy is measured in ``benchmarks/bench_mdm.py``."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from napari_uda.core.errors import UdaError
from napari_uda.core.io import Volume, to_sitk

SIGNATURE_MM = 6.0  # the common grid's spacing
SIGNATURE_EXTENT_MM = (240.0, 360.0, 420.0)  # its z, y, x extent about the body's centre of mass
BODY_FRACTION = 0.05  # the body: above this fraction of the 1st-99th percentile range (air is dark in MRI, CT, PET)


@dataclass(frozen=True)
class Match:
    """Target ``target`` and source ``source`` (indices) taken as one patient, with their similarity
    (correlation of Sobel signatures, in [-1, 1]) and that of the target's next most similar source
    (nan where there is no other)."""

    target: int
    source: int
    similarity: float
    runner_up: float


def _body(smooth: sitk.Image) -> tuple[sitk.Image, np.ndarray]:
    """The body mask of a smoothed scan (above ``BODY_FRACTION`` of its robust range, holes filled)
    and its centre of mass, physical (x, y, z) mm."""
    lo, hi = np.percentile(sitk.GetArrayViewFromImage(smooth), [1, 99])
    if hi <= lo:
        raise UdaError("the scan has no body to match (its intensities are constant)")
    body = sitk.BinaryFillhole(sitk.Cast(smooth > float(lo + BODY_FRACTION * (hi - lo)), sitk.sitkUInt8))
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(body)
    return body, np.array(stats.GetCentroid(1))


def sobel_signature(volume: Volume) -> np.ndarray:
    """The scan in Sobel space on the common grid (shape ``SIGNATURE_EXTENT_MM / SIGNATURE_MM``, z y
    x): log(1 + gradient magnitude / its median in the body) inside the body, 0 outside; the scan is
    smoothed to the grid's scale first and the grid centred on its body's centre of mass."""
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(to_sitk(volume), sitk.sitkFloat32), SIGNATURE_MM / 2)
    body, centre = _body(smooth)
    size_zyx = np.round(np.array(SIGNATURE_EXTENT_MM) / SIGNATURE_MM).astype(int)
    ref = sitk.Image([int(s) for s in size_zyx[::-1]], sitk.sitkFloat32)
    ref.SetSpacing([SIGNATURE_MM] * 3)
    ref.SetOrigin((centre - np.array(SIGNATURE_EXTENT_MM[::-1]) / 2).tolist())
    values = sitk.GetArrayFromImage(sitk.Resample(smooth, ref, sitk.Transform(), sitk.sitkLinear, 0.0))
    inside = sitk.GetArrayFromImage(sitk.Resample(body, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    magnitude = np.sqrt(sum(ndimage.sobel(values, axis=a) ** 2 for a in range(3)))
    scale = float(np.median(magnitude[inside])) if inside.any() else 1.0
    return np.where(inside, np.log1p(magnitude / max(scale, 1e-12)), 0.0)


def similarity_matrix(targets: Sequence[np.ndarray], sources: Sequence[np.ndarray]) -> np.ndarray:
    """(n_targets, n_sources) Pearson correlation of the signatures."""
    def standard(s: np.ndarray) -> np.ndarray:
        flat = s.ravel() - s.mean()
        return flat / max(float(np.linalg.norm(flat)), 1e-12)

    return np.stack([standard(t) for t in targets]) @ np.stack([standard(s) for s in sources]).T


def match_volumes(targets: Sequence[np.ndarray], sources: Sequence[np.ndarray]) -> list[Match]:
    """One-to-one pairs of the signatures ``targets`` and ``sources`` (:func:`sobel_signature`) of the
    highest total similarity (Hungarian method on :func:`similarity_matrix`; min(n_targets, n_sources)
    pairs: every scan of the smaller side is paired, so each side should hold the same patients)."""
    if not targets or not sources:
        return []
    sim = similarity_matrix(targets, sources)
    matches = []
    for t, s in zip(*linear_sum_assignment(-sim)):
        others = np.delete(sim[t], s)
        matches.append(Match(int(t), int(s), float(sim[t, s]), float(others.max()) if len(others) else float("nan")))
    return matches
