"""ASIT's multi-domain matching, label half (its eq. 6): carry a pseudo-label from a patient's scan in
the sub-domain where the segmenter is good to the same patient's scan in another sub-domain, by an
affine registration of the two scans (SimpleITK, Mattes mutual information: the sub-domains differ
in contrast, so intensities are not compared directly)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_uda.core.errors import UdaError
from napari_uda.core.io import (
    Geometry,
    Volume,
    check_same_grid,
    read_volume,
    require_finite,
    require_organ_labels,
    to_sitk,
)


@dataclass(frozen=True)
class Transfer:
    """A transferred label on the fixed scan's grid, with the registration's final metric (Mattes
    mutual information, negative: lower is better) and the affine transform (fixed -> moving mm)."""

    label: Volume
    metric: float
    transform: sitk.Transform


def register_affine(fixed: Volume, moving: Volume, iterations: int = 200, seed: int = 1) -> tuple[sitk.Transform, float]:
    """The affine transform taking ``fixed``'s physical points (mm) to ``moving``'s, started from the
    images' centres, refined at 4x, 2x and 1x shrink by regular-step gradient descent on Mattes mutual
    information (32 bins, 20% of the voxels sampled with ``seed`` >= 1). Reproducible bit for bit: it
    runs on one thread (on two, two runs differed by up to 2 mm; ``benchmarks/RESULTS.md``).
    Returns (transform, final metric)."""
    if seed < 1:  # SimpleITK takes a seed of 0 (sitkWallClock) as "from the clock": another sample every run
        raise UdaError(f"the registration's sampling seed must be 1 or more, not {seed}")
    f, m = (sitk.Cast(to_sitk(v), sitk.sitkFloat32) for v in (fixed, moving))
    start = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
                                                 gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(start, inPlace=False)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()  # the method's own setting does not reach its metric
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        transform = reg.Execute(f, m)
    except RuntimeError as e:
        raise UdaError(f"affine registration failed: {str(e).strip().splitlines()[-1]}") from None
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return transform, float(reg.GetMetricValue())


def transfer_label(label: Volume, moving: Volume, fixed: Volume, iterations: int = 200, seed: int = 1) -> Transfer:
    """``label`` (on ``moving``'s grid) carried onto ``fixed``'s grid by :func:`register_affine` of
    ``fixed`` to ``moving``, nearest-neighbour, background outside ``moving``."""
    if label.shape != moving.shape:
        raise UdaError(f"the label's shape {label.shape} does not match its scan's {moving.shape}")
    transform, metric = register_affine(fixed, moving, iterations, seed)
    out = sitk.Resample(to_sitk(label.with_array(label.array.astype(np.uint8))), to_sitk(fixed), transform,
                        sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return Transfer(Volume(sitk.GetArrayFromImage(out), Geometry.from_sitk(out)), metric, transform)


def transfer_label_files(label: str | Path, moving: str | Path, fixed: str | Path) -> Transfer:
    """:func:`transfer_label` of the files ``label`` (on ``moving``'s grid) and ``moving`` onto
    ``fixed``, each checked first (same grid, organ label values, finite intensities; errors name the file)."""
    moving_vol, label_vol, fixed_vol = read_volume(moving), read_volume(label), read_volume(fixed)
    check_same_grid(moving_vol, label_vol, str(moving), str(label))
    require_organ_labels(label_vol, str(label))
    for volume, path in ((moving_vol, moving), (fixed_vol, fixed)):
        require_finite(volume, str(path))
    return transfer_label(label_vol, moving_vol, fixed_vol)
