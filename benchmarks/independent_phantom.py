"""A second abdominal phantom, written apart from ``napari_uda.data.phantom`` to check that the method's
recipe is not fitted to the project's own phantom (the issue's check uses a phantom written by
someone else: CT and a T2-like MRI with reordered organ contrast, 40x96x96, 8 + 8 cases).

Everything differs from the project's phantom on purpose: organs are unions of random blobs
(metaballs) thresholded after a smooth random warp instead of ellipsoids and tubes; the body is a
superellipse with a fat layer of varying thickness; placement, sizes and the organ overlap order
are its own; intensities come from its own tables (CT in HU with portal-venous enhancement, a
T2-weighted MRI where fat and fluid are bright, liver and muscle dark and vessels flow voids), with
a multiplicative bias field and Rician noise on MRI; volumes are written with SimpleITK directly.
Labels use the FLARE numbering (1 liver ... 13 left kidney). Layout as ``write_phantom_dataset``'s:
``OUT/<slug>/images/<slug>_<case>.nii.gz`` and ``OUT/<slug>/labels/...``.

    .venv/bin/python benchmarks/independent_phantom.py OUT --ct 8 --t2wi 8 [--seed 0]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

SHAPE = (40, 96, 96)  # z, y, x
# FLARE numbering
LIVER, RKID, SPLEEN, PANC, AORTA, IVC, RADR, LADR, GALL, ESO, STOM, DUOD, LKID = range(1, 14)
FAT, MUSCLE, BOWEL, BONE, MARROW, AIR, GAS = range(20, 27)

#: tissue -> (CT HU, T2-weighted signal in arbitrary units)
TISSUE = {
    AIR: (-1000, 5), GAS: (-900, 5), FAT: (-105, 820), MUSCLE: (50, 140), BOWEL: (25, 420), BONE: (700, 40),
    MARROW: (230, 380), LIVER: (105, 170), RKID: (175, 560), LKID: (175, 560), SPLEEN: (115, 470),
    PANC: (85, 300), AORTA: (210, 30), IVC: (150, 70), RADR: (60, 260), LADR: (60, 260), GALL: (8, 980),
    ESO: (45, 250), STOM: (30, 640), DUOD: (40, 520),
}

#: organ -> list of (centre x, y, z in mm from the body centre; x to the patient's left, y posterior,
#: z superior; radius mm), painted in this order (later organs win where they overlap)
BLOBS = {
    LIVER: [(-75, -5, 45, 52), (-45, -30, 62, 42), (-5, -45, 68, 30), (-80, 20, 15, 34)],
    SPLEEN: [(80, 35, 48, 34), (74, 50, 28, 26)],
    STOM: [(45, -45, 45, 32), (20, -55, 25, 22), (65, -25, 60, 22)],
    RKID: [(-62, 52, -8, 22), (-60, 50, -32, 20), (-64, 54, 15, 18)],
    LKID: [(62, 52, 2, 22), (60, 50, -22, 20), (64, 54, 24, 18)],
    GALL: [(-52, -52, 8, 16), (-50, -50, -10, 12)],
    PANC: [(-25, 8, 0, 15), (0, 15, 8, 14), (25, 22, 14, 13), (50, 28, 20, 12)],
    DUOD: [(-40, -15, 18, 13), (-52, 5, -2, 13), (-40, 22, -25, 13), (-10, 28, -32, 12)],
    RADR: [(-50, 46, 40, 10), (-46, 42, 30, 8)],  # lateral of the IVC, which is painted over it
    LADR: [(40, 44, 36, 10), (36, 40, 26, 8)],
}
#: tubes: organ -> ((x, y) at z = -130 mm, (x, y) at z = +130 mm, radius mm)
TUBES = {AORTA: ((12, 48), (8, 44), 11.0), IVC: ((-22, 42), (-26, 36), 12.0)}
ESOPHAGUS = ((4, 42, 130), (28, -20, 62), 8.0)  # from the chest down to the stomach


def _grid(rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Voxel spacing (z, y, x mm) and the warped mm coordinates of every voxel."""
    spacing = np.array([rng.uniform(5.5, 6.5), rng.uniform(3.9, 4.5), 0.0])
    spacing[2] = spacing[1]
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(SHAPE, spacing)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    warp = [ndimage.zoom(rng.normal(0, 1, (4, 5, 5)), np.array(SHAPE) / (4, 5, 5), order=3) for _ in range(3)]
    amp = rng.uniform(5, 10)
    return spacing, [z + amp * warp[0], y + amp * warp[1], x + amp * warp[2]]


def _tissue(rng: np.random.Generator, zyx: list[np.ndarray]) -> np.ndarray:
    """The tissue map of one random patient on the warped grid."""
    z, y, x = zyx
    a, b = rng.uniform(135, 170), rng.uniform(95, 125)  # body half width, half depth
    n = rng.uniform(2.2, 3.0)  # superellipse exponent
    r = (np.abs(x / a) ** n + np.abs(y / b) ** n) ** (1 / n)
    fat = rng.uniform(0.06, 0.2) * (1 + 0.3 * np.sin(np.arctan2(y, x) * 2 + rng.uniform(0, 6)))
    t = np.full(SHAPE, AIR, np.int16)
    t[r <= 1] = FAT
    t[r <= 1 - fat] = MUSCLE
    t[r <= 1 - fat - 0.07] = BOWEL
    t[(r <= 1 - fat - 0.07) & (ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), 2.5) > 0.12)] = FAT
    spine_y = 0.65 * b
    t[((x / 20) ** 2 + ((y - spine_y) / 17) ** 2) <= 1] = MARROW
    t[(((x / 20) ** 2 + ((y - spine_y) / 17) ** 2) <= 1) & (((x / 15) ** 2 + ((y - spine_y) / 12) ** 2) > 1)] = BONE
    for side in (-1, 1):
        t[(((x - side * 38) / 24) ** 2 + ((y - spine_y - 8) / 20) ** 2) <= 1] = MUSCLE
    scale = rng.uniform(0.85, 1.15, 3) * np.array([1.0, b / 110, a / 150])
    shift = rng.normal(0, 7, 3)

    cavity = r <= 1 - fat - 0.04  # organs stay inside the muscle wall

    def inside(cx: float, cy: float, cz: float, rad: float) -> np.ndarray:
        c = np.array([cz, cy, cx]) * scale + shift + rng.normal(0, 3, 3)
        rad *= rng.uniform(0.85, 1.15)
        return ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= rad ** 2

    for organ, blobs in BLOBS.items():
        t[np.logical_or.reduce([inside(*blob) for blob in blobs]) & cavity] = organ
    for organ, (lo, hi, rad) in TUBES.items():
        f = (z + 130) / 260
        cx, cy = (lo[0] + f * (hi[0] - lo[0])) * scale[2] + shift[2], (lo[1] + f * (hi[1] - lo[1])) * scale[1] + shift[1]
        t[(((x - cx) ** 2 + (y - cy) ** 2) <= (rad * rng.uniform(0.85, 1.15)) ** 2) & cavity] = organ
    (x0, y0, z0), (x1, y1, z1), rad = ESOPHAGUS
    f = np.clip((z0 - (z - shift[0])) / (z0 - z1), 0, 1)
    cx, cy = x0 + f * (x1 - x0) + shift[2], y0 + f * (y1 - y0) + shift[1]
    t[(((x - cx) ** 2 + (y - cy) ** 2) <= rad ** 2) & (z - shift[0] >= z1 - 5) & (t != STOM) & cavity] = ESO
    stomach = t == STOM
    if stomach.any():  # the patient lies supine: gas rises to the anterior wall
        t[stomach & (y < y[stomach].min() + 9)] = GAS
    return t


def _render(rng: np.random.Generator, t: np.ndarray, spacing: np.ndarray, modality: str) -> np.ndarray:
    """The image of tissue map ``t``: CT in HU, or T2-weighted MRI (arbitrary units)."""
    column = 0 if modality == "ct" else 1
    img = np.zeros(SHAPE, np.float32)
    for tissue, values in TISSUE.items():  # each patient's tissues vary a little (enhancement, relaxation)
        value = values[column] + rng.normal(0, 6) if modality == "ct" else values[column] * rng.uniform(0.92, 1.08)
        img[t == tissue] = value
    texture = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), 1.2)
    img += texture * (14 if modality == "ct" else 0.08 * np.abs(img) + 10)
    img = ndimage.gaussian_filter(img, 0.8 / spacing * spacing[1])
    if modality == "ct":
        return (img + rng.normal(0, 10, SHAPE)).astype(np.float32)
    bias = np.exp(ndimage.zoom(rng.normal(0, 0.18, (3, 4, 4)), np.array(SHAPE) / (3, 4, 4), order=3))
    img = img * bias
    sigma = 18.0
    return np.hypot(img + rng.normal(0, sigma, SHAPE), rng.normal(0, sigma, SHAPE)).astype(np.float32)


def make_case(modality: str, seed: int, case: int) -> tuple[sitk.Image, sitk.Image]:
    """(image, labels) of one patient, as SimpleITK images on the same grid."""
    rng = np.random.default_rng([seed, case, 0 if modality == "ct" else 1])
    spacing, zyx = _grid(rng)
    t = _tissue(rng, zyx)
    img = _render(rng, t, spacing, modality)
    labels = np.where(t <= 13, t, 0).astype(np.uint8)
    out = []
    for arr in (img, labels):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing(tuple(float(s) for s in spacing[::-1]))
        im.SetOrigin((-(SHAPE[2] - 1) / 2 * spacing[2], -(SHAPE[1] - 1) / 2 * spacing[1], -400.0))
        out.append(im)
    return out[0], out[1]


def write_dataset(out: Path, cases: dict[str, int], seed: int) -> None:
    """``cases[modality]`` patients of each of "ct" and "t2wi" into ``out``."""
    manifest = {"generator": "benchmarks/independent_phantom.py", "seed": seed, "shape_zyx": list(SHAPE), "files": {}}
    for modality, n in cases.items():
        for folder in ("images", "labels"):
            (out / modality / folder).mkdir(parents=True, exist_ok=True)
        for case in range(n):
            img, lab = make_case(modality, seed, case)
            name = f"{modality}_{case:03d}.nii.gz"
            sitk.WriteImage(img, str(out / modality / "images" / name))
            sitk.WriteImage(lab, str(out / modality / "labels" / name))
        manifest["files"][modality] = n
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--ct", type=int, default=8)
    parser.add_argument("--t2wi", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_dataset(args.out, {"ct": args.ct, "t2wi": args.t2wi}, args.seed)


if __name__ == "__main__":
    main()
