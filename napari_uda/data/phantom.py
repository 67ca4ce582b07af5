"""A synthetic multi-modality abdominal phantom: sample data and test data.

Each call makes one synthetic "patient": a body outline (skin, subcutaneous fat, muscle
wall, ribs, spine with discs, paraspinal muscles), bowel and mesenteric fat, and the 13
FLARE organs placed anatomically, each with random size, position and orientation, the
whole anatomy bent by a smooth random deformation. The patient is rendered as CT (HU),
one of the eight MRI sequences of the design, or PET (FDG or PSMA, in SUV).

Patient coordinates, in mm, follow the array axes: x increases to the patient's left,
y to posterior, z to superior (LPS with an identity direction). Everything is
deterministic given the seed, modality and case number; CT and each target modality
draw different patients, so the data are unpaired like the real problem. :func:`make_same_patient`
scans one patient again in another sequence (ASIT's multi-domain matching needs such pairs).

Folder layout written by :func:`write_phantom_dataset`::

    OUT/manifest.json                      seed, shape, cases, modalities, file list
    OUT/<slug>/images/<slug>_<NNN>.nii.gz  image (CT int16 HU, MRI int16 a.u., PET float32 SUV)
    OUT/<slug>/labels/<slug>_<NNN>.nii.gz  organ labels (uint8, FLARE numbering);
                                           for targets these are for evaluation only
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from napari_uda.core.errors import UdaError
from napari_uda.core.io import Geometry, Volume, write_volume
from napari_uda.core.jobs import Progress, emit
from napari_uda.core.modalities import MODALITIES, Modality, get_modality
from napari_uda.core.organs import ORGAN_BY_KEY

DEFAULT_SHAPE: tuple[int, int, int] = (48, 128, 128)

# --- tissue classes -------------------------------------------------------------------
AIR, SKIN, FAT, MUSCLE, BONE, MARROW, DISC, BOWEL, GAS, CANAL, SUBCUT = range(11)  # SUBCUT: fat outside the muscle wall
ORGAN_OFFSET = 20  # tissue id of organ k is ORGAN_OFFSET + k
N_TISSUES = ORGAN_OFFSET + 14


def _organ(key: str) -> int:
    return ORGAN_OFFSET + ORGAN_BY_KEY[key].index


# Per-modality intensity of each tissue. CT in HU (portal-venous contrast); MRI in
# relative units (0-1, scaled later); PET in SUV. Organ keys name FLARE organs.
_BASE_TISSUES = ("air", "skin", "fat", "muscle", "bone", "marrow", "disc", "bowel", "gas", "canal")
_ORGAN_KEYS = (
    "liver", "right_kidney", "spleen", "pancreas", "aorta", "ivc", "right_adrenal",
    "left_adrenal", "gallbladder", "esophagus", "stomach", "duodenum", "left_kidney",
)
# columns:      air   skin  fat   musc  bone  marrow disc bowel gas  canal | liver rkid spl  panc aorta ivc radr ladr gb   eso  stom duod lkid
_TABLE: dict[str, tuple[float, ...]] = {
    "ct":       (-1000, 40, -100, 55, 700, 250, 90, 35, -850, 15,   110, 170, 120, 95, 160, 140, 60, 60, 10, 45, 35, 45, 170),
    "t2wi":     (0.0, .35, .85, .18, .02, .45, .55, .40, .0, .95,   .22, .55, .58, .35, .04, .05, .32, .32, .98, .30, .70, .50, .55),
    "dwi":      (0.0, .10, .06, .12, .02, .25, .10, .30, .0, .20,   .28, .62, .85, .45, .02, .03, .30, .30, .18, .35, .25, .40, .62),
    "ca":       (0.0, .20, .12, .30, .03, .25, .15, .30, .0, .05,   .42, .88, .70, .78, .98, .30, .50, .50, .08, .35, .30, .45, .88),
    "inphase":  (0.0, .45, .90, .35, .05, .70, .35, .40, .0, .15,   .55, .42, .45, .60, .05, .06, .40, .40, .20, .35, .35, .40, .42),
    "outphase": (0.0, .45, .90, .35, .05, .70, .35, .40, .0, .15,   .55, .42, .45, .60, .05, .06, .40, .40, .20, .35, .35, .40, .42),
    "cpre":     (0.0, .20, .10, .30, .03, .25, .15, .30, .0, .05,   .50, .38, .35, .62, .10, .10, .40, .40, .10, .30, .28, .35, .38),
    "cv":       (0.0, .22, .12, .35, .03, .30, .18, .35, .0, .05,   .72, .80, .70, .65, .82, .80, .50, .50, .08, .40, .35, .50, .80),
    "cdelay":   (0.0, .22, .12, .38, .03, .30, .20, .35, .0, .05,   .66, .76, .60, .52, .62, .62, .45, .45, .10, .38, .35, .45, .76),
    "pet_fdg":  (0.0, 0.6, 0.3, 0.8, 0.5, 1.5, 0.8, 1.6, 0.0, 0.8,  2.4, 4.0, 2.0, 1.3, 1.8, 1.7, 1.2, 1.2, 0.6, 1.5, 1.7, 1.6, 4.0),
    "pet_psma": (0.0, 0.2, 0.1, 0.5, 0.3, 0.6, 0.3, 2.0, 0.0, 0.3,  5.0, 28., 7.0, 1.2, 1.2, 1.1, 1.0, 1.0, 0.4, 0.8, 1.5, 4.5, 28.),
}
# Fat fraction per tissue (for in-phase / opposed-phase MRI, where fat and water add or cancel).
_FAT_FRACTION = {"fat": 0.92, "marrow": 0.5, "skin": 0.1, "liver": 0.06, "bowel": 0.1}
_T1_FAT_SIGNAL = 0.9


def _tissue_lut(column: str) -> np.ndarray:
    lut = np.zeros(N_TISSUES, np.float32)
    values = _TABLE[column]
    for i, name in enumerate(_BASE_TISSUES):
        lut[i] = values[i]
    for j, key in enumerate(_ORGAN_KEYS):
        lut[_organ(key)] = values[len(_BASE_TISSUES) + j]
    lut[SUBCUT] = lut[FAT]
    return lut


def _fat_fraction_lut() -> np.ndarray:
    lut = np.zeros(N_TISSUES, np.float32)
    for name, ff in _FAT_FRACTION.items():
        idx = _BASE_TISSUES.index(name) if name in _BASE_TISSUES else _organ(name)
        lut[idx] = ff
    lut[SUBCUT] = lut[FAT]
    return lut


#: Modalities the phantom can render (generic "MRI" is a mixture, not a sequence).
PHANTOM_MODALITIES: tuple[Modality, ...] = tuple(m for m in MODALITIES if m.slug in _TABLE)


@dataclass(frozen=True)
class Patient:
    """Random anatomy parameters of one synthetic patient (mm)."""

    half_width: float
    half_depth: float
    skin: float
    fat: float
    muscle: float
    fov_xy: float
    fov_z: float
    origin_z: float
    shift: tuple[float, float, float]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...]) -> np.ndarray:
    """Smooth random field of roughly unit amplitude: cubic upsampling of coarse Gaussian noise."""
    c = rng.standard_normal(coarse).astype(np.float32)
    zoom = [s / k for s, k in zip(shape, coarse)]
    out = ndimage.zoom(c, zoom, order=3, mode="nearest", grid_mode=True)
    pad = [(0, max(0, s - o)) for s, o in zip(shape, out.shape)]
    out = np.pad(out, pad, mode="edge")
    return out[tuple(slice(0, s) for s in shape)]


class _Canvas:
    """The deformed patient coordinates on the voxel grid and the tissue map being painted."""

    def __init__(self, shape: tuple[int, int, int], spacing: np.ndarray, offset: np.ndarray, disp: list[np.ndarray]):
        self.shape = shape
        self.spacing = spacing
        self.offset = offset  # patient coordinate (z, y, x) of voxel (0, 0, 0) before deformation
        self.disp = disp
        self.tissue = np.zeros(shape, np.uint8)
        self.max_disp = float(max(np.abs(d).max() for d in disp))

    def coords(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[tuple[slice, ...], list[np.ndarray]] | None:
        """Voxel box covering patient box [lo, hi] (z, y, x mm) and deformed coordinates in it."""
        margin = self.max_disp + self.spacing
        lo = np.floor((lo_mm - margin - self.offset) / self.spacing).astype(int)
        hi = np.ceil((hi_mm + margin - self.offset) / self.spacing).astype(int) + 1
        lo = np.clip(lo, 0, self.shape)
        hi = np.clip(hi, 0, self.shape)
        if np.any(hi <= lo):
            return None
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        axes = [self.offset[k] + self.spacing[k] * np.arange(box[k].start, box[k].stop, dtype=np.float32) for k in range(3)]
        z, y, x = np.meshgrid(*axes, indexing="ij", copy=False)
        return box, [z + self.disp[0][box], y + self.disp[1][box], x + self.disp[2][box]]

    def paint(self, mask_fn: Callable[[list[np.ndarray]], np.ndarray], lo: np.ndarray, hi: np.ndarray, value: int,
              only: np.ndarray | None = None) -> None:
        got = self.coords(lo, hi)
        if got is None:
            return
        box, zyx = got
        mask = mask_fn(zyx)
        if only is not None:
            mask &= np.isin(self.tissue[box], only)
        self.tissue[box][mask] = value


def _rot_z(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)


def _ellipsoid(center: np.ndarray, axes: np.ndarray, angle: float = 0.0) -> tuple[Callable, np.ndarray, np.ndarray]:
    """Ellipsoid (axes in x, y, z mm) centred at ``center`` (z, y, x), rotated by ``angle`` about z."""
    rot = _rot_z(angle)
    r = float(max(axes))

    def fn(zyx: list[np.ndarray]) -> np.ndarray:
        dz, dy, dx = zyx[0] - center[0], zyx[1] - center[1], zyx[2] - center[2]
        u = rot[0, 0] * dx + rot[1, 0] * dy
        v = rot[0, 1] * dx + rot[1, 1] * dy
        return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 + (dz / axes[2]) ** 2 <= 1.0

    return fn, center - r, center + r


def _tube(points: np.ndarray, radii: np.ndarray) -> tuple[Callable, np.ndarray, np.ndarray]:
    """Tube along the polyline ``points`` (n, 3: z, y, x mm), radius interpolated along it."""
    fine_t = np.linspace(0, len(points) - 1, 8 * (len(points) - 1) + 1)
    idx = np.arange(len(points))
    pts = np.stack([np.interp(fine_t, idx, points[:, k]) for k in range(3)], axis=1).astype(np.float32)
    rad = np.interp(fine_t, idx, radii).astype(np.float32)

    def fn(zyx: list[np.ndarray]) -> np.ndarray:
        inside = np.zeros(zyx[0].shape, bool)
        for a, b, ra, rb in zip(pts[:-1], pts[1:], rad[:-1], rad[1:]):
            d = b - a
            L2 = float(d @ d) or 1e-6
            t = ((zyx[0] - a[0]) * d[0] + (zyx[1] - a[1]) * d[1] + (zyx[2] - a[2]) * d[2]) / L2
            t = np.clip(t, 0.0, 1.0)
            dist2 = (zyx[0] - a[0] - t * d[0]) ** 2 + (zyx[1] - a[1] - t * d[1]) ** 2 + (zyx[2] - a[2] - t * d[2]) ** 2
            inside |= dist2 <= (ra + t * (rb - ra)) ** 2
        return inside

    r = float(rad.max())
    return fn, pts.min(axis=0) - r, pts.max(axis=0) + r


def _ellipse(ax: float, by: float, cy: float = 0.0, cx: float = 0.0) -> Callable:
    """The inside of an axial ellipse of half-axes ``ax`` (x) and ``by`` (y) mm, centred at (cy, cx)."""
    return lambda zyx: ((zyx[2] - cx) / ax) ** 2 + ((zyx[1] - cy) / by) ** 2 <= 1.0


def _paint_body_wall(cv: _Canvas, rng: np.random.Generator, p: Patient, shape: tuple[int, int, int],
                     full: Callable) -> None:
    """Skin, subcutaneous fat, muscle and the bowel-filled cavity, from outside in; ribs in the
    muscle wall; mesenteric fat and gas among the bowel."""
    a, b = p.half_width, p.half_depth
    cv.paint(_ellipse(a, b), *full((b + 10, a + 10)), SKIN)
    t = p.skin
    cv.paint(_ellipse(a - t, b - t), *full((b, a)), SUBCUT)  # organs are never painted into it: they stay inside the wall
    t += p.fat
    cv.paint(_ellipse(a - t, b - t), *full((b, a)), MUSCLE)
    t += p.muscle
    cv.paint(_ellipse(a - t, b - t), *full((b, a)), BOWEL)
    # ribs: bone arcs inside the muscle wall, every ~26 mm along z, upper abdomen only
    rib_phase = float(rng.uniform(0, 26))

    def ribs(zyx: list[np.ndarray]) -> np.ndarray:
        r = np.sqrt((zyx[2] / (a - p.skin - p.fat - p.muscle / 2)) ** 2 + (zyx[1] / (b - p.skin - p.fat - p.muscle / 2)) ** 2)
        in_wall = np.abs(r - 1.0) < 5.0 / min(a, b)
        band = np.mod(zyx[0] - rib_phase, 26.0) < 9.0
        lateral = np.abs(zyx[2]) > 0.35 * a
        return in_wall & band & lateral & (zyx[0] > -20)

    cv.paint(ribs, *full((b, a)), BONE, only=np.array([MUSCLE, SUBCUT]))
    got = cv.coords(*full((b, a)))
    assert got is not None
    box, _ = got
    n1 = _smooth_noise(rng, shape, (6, 10, 10))[box]
    n2 = _smooth_noise(rng, shape, (8, 14, 14))[box]
    region = cv.tissue[box]
    region[(region == BOWEL) & (n1 < -0.25)] = FAT
    region[(region == BOWEL) & (n2 > 1.6)] = GAS


def _paint_spine(cv: _Canvas, rng: np.random.Generator, a: float, b: float, full: Callable) -> None:
    """Vertebrae with marrow, cortex and discs, the spinal canal and the paraspinal muscles."""
    ys = 0.62 * b
    cv.paint(_ellipse(42, 30, ys + 30, -38), *full((b, a)), MUSCLE)
    cv.paint(_ellipse(42, 30, ys + 30, 38), *full((b, a)), MUSCLE)
    cv.paint(_ellipse(18, 16, ys), *full((b, a)), MARROW)
    cv.paint(lambda zyx: (zyx[2] / 18) ** 2 + ((zyx[1] - ys) / 16) ** 2 > 0.72, *full((b, a)), BONE, only=np.array([MARROW]))
    disc_phase = float(rng.uniform(0, 32))
    cv.paint(lambda zyx: np.mod(zyx[0] - disc_phase, 32.0) < 6.0, *full((b, a)), DISC, only=np.array([MARROW, BONE]))
    cv.paint(_ellipse(14, 13, ys + 27), *full((b, a)), BONE)
    cv.paint(_ellipse(7.5, 7, ys + 27), *full((b, a)), CANAL)


@dataclass
class _Jitter:
    """Random placement of organs: mean positions as fractions of the body's half-width ``a`` (x)
    and half-depth ``b`` (y), z in mm, with a random shift, scale and rotation per organ."""

    rng: np.random.Generator
    a: float
    b: float

    def center(self, cx: float, cy: float, cz: float, s: float = 5.0) -> np.ndarray:
        return np.array([cz, cy * self.b, cx * self.a], np.float32) + self.rng.normal(0, s, 3).astype(np.float32)

    def axes(self, ax: tuple[float, float, float], lo: float = 0.85, hi: float = 1.15) -> np.ndarray:
        return np.array(ax, np.float32) * float(self.rng.uniform(lo, hi)) * self.rng.uniform(0.93, 1.07, 3).astype(np.float32)

    def angle(self, mean: float, sd: float = 8.0) -> float:
        return float(self.rng.normal(mean, sd))

    def polyline(self, pts: list[tuple[float, float, float]], s: float = 4.0) -> np.ndarray:
        arr = np.array([[pz, py * self.b, px * self.a] for px, py, pz in pts], np.float32)
        return arr + self.rng.normal(0, s, 3).astype(np.float32) + self.rng.normal(0, s / 2, arr.shape).astype(np.float32)


def _paint_organs(cv: _Canvas, j: _Jitter) -> None:
    """The 13 organs, kidneys in perirenal fat, hollow organs and tubes only into the cavity."""
    rng = j.rng
    kid_scale = float(rng.uniform(0.88, 1.12))
    # perirenal fat first, so kidneys sit in fat
    rk_c, lk_c = j.center(-0.36, 0.40, -25), j.center(0.36, 0.40, -12)
    rk_ax = np.array([27, 30, 50], np.float32) * kid_scale
    lk_ax = np.array([27, 30, 52], np.float32) * kid_scale
    rk_ang, lk_ang = j.angle(-25), j.angle(25)
    cv.paint(*_ellipsoid(rk_c, rk_ax + 9, rk_ang), FAT, only=np.array([BOWEL, FAT, GAS]))
    cv.paint(*_ellipsoid(lk_c, lk_ax + 9, lk_ang), FAT, only=np.array([BOWEL, FAT, GAS]))

    liver_scale = float(rng.uniform(0.85, 1.15))
    liver_right = _ellipsoid(j.center(-0.42, -0.02, 48), np.array([72, 82, 66], np.float32) * liver_scale, j.angle(0, 6))
    liver_left = _ellipsoid(j.center(-0.02, -0.45, 62), np.array([58, 36, 36], np.float32) * liver_scale, j.angle(-15))
    cavity = np.array([BOWEL, FAT, GAS])
    cv.paint(*liver_right, _organ("liver"), only=cavity)
    cv.paint(*liver_left, _organ("liver"), only=cavity)
    cv.paint(*_ellipsoid(j.center(0.62, 0.32, 52), j.axes((24, 50, 44)), j.angle(35)), _organ("spleen"), only=cavity)
    cv.paint(*_ellipsoid(rk_c, rk_ax, rk_ang), _organ("right_kidney"))
    cv.paint(*_ellipsoid(lk_c, lk_ax, lk_ang), _organ("left_kidney"))
    organ_space = np.concatenate([cavity, [ORGAN_OFFSET + k for k in range(1, 14)]])
    cv.paint(*_ellipsoid(j.center(0.36, -0.22, 52), j.axes((44, 36, 46)), j.angle(-30)), _organ("stomach"), only=cavity)
    cv.paint(*_tube(j.polyline([(0.34, -0.32, 32), (0.12, -0.40, 20), (-0.10, -0.34, 14)]), np.array([20, 17, 14.0])),
             _organ("stomach"), only=cavity)
    cv.paint(*_tube(j.polyline([(-0.10, -0.33, 13), (-0.30, -0.10, 6), (-0.32, 0.04, -22), (-0.18, 0.12, -44),
                                (0.06, 0.12, -46)]), np.full(5, float(rng.uniform(10, 13)))), _organ("duodenum"), only=organ_space)
    cv.paint(*_tube(j.polyline([(-0.20, 0.02, -16), (-0.02, 0.06, -2), (0.22, 0.14, 10), (0.48, 0.22, 26)]),
                    np.array([17, 13, 12, 10.0]) * float(rng.uniform(0.85, 1.15))), _organ("pancreas"), only=organ_space)
    cv.paint(*_ellipsoid(j.center(-0.32, -0.45, 12, 4), j.axes((15, 16, 32), 0.75, 1.2), j.angle(20, 15)),
             _organ("gallbladder"), only=organ_space)
    cv.paint(*_ellipsoid(j.center(-0.24, 0.34, 36, 3), j.axes((8, 16, 19)), j.angle(-40)), _organ("right_adrenal"),
             only=organ_space)
    cv.paint(*_ellipsoid(j.center(0.24, 0.34, 33, 3), j.axes((8, 16, 19)), j.angle(40)), _organ("left_adrenal"),
             only=organ_space)
    ivc = j.polyline([(-0.14, 0.32, -130), (-0.16, 0.30, -40), (-0.18, 0.24, 40), (-0.14, 0.16, 130)], 3)
    cv.paint(*_tube(ivc, np.full(4, float(rng.uniform(10, 13)))), _organ("ivc"))
    aorta = j.polyline([(0.10, 0.40, -130), (0.07, 0.38, -40), (0.05, 0.36, 40), (0.04, 0.34, 130)], 3)
    cv.paint(*_tube(aorta, np.full(4, float(rng.uniform(9.5, 12.5)))), _organ("aorta"))
    eso = j.polyline([(0.02, 0.28, 135), (0.06, 0.22, 100), (0.16, 0.05, 82), (0.28, -0.10, 72)], 3)
    cv.paint(*_tube(eso, np.array([8, 8, 8.5, 9.0]) * float(rng.uniform(0.9, 1.15))), _organ("esophagus"), only=organ_space)


def _draw_patient(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[Patient, Geometry, np.ndarray]:
    """Random anatomy on the voxel grid: returns the patient, the grid geometry and the tissue map."""
    p = Patient(
        half_width=float(rng.uniform(145, 180)),
        half_depth=float(rng.uniform(105, 130)),
        skin=float(rng.uniform(2.0, 3.5)),
        fat=float(rng.uniform(8, 30)),
        muscle=float(rng.uniform(7, 14)),
        fov_xy=float(rng.uniform(380, 440)),
        fov_z=float(rng.uniform(230, 270)),
        origin_z=float(rng.uniform(-330, -270)),
        shift=tuple(float(v) for v in rng.normal(0, [6, 6, 6])),  # type: ignore[arg-type]
    )
    nz, ny, nx = shape
    spacing = np.array([p.fov_z / nz, p.fov_xy / ny, p.fov_xy / nx], np.float64)
    # patient coordinate of voxel 0: the FOV is centred on the body centre, then shifted
    offset = -(np.array(shape) - 1) / 2 * spacing + np.array(p.shift)
    amp = float(rng.uniform(4, 9))
    disp = [amp * _smooth_noise(rng, shape, (3, 4, 4)) for _ in range(3)]
    cv = _Canvas(shape, spacing.astype(np.float32), offset.astype(np.float32), disp)

    def full(r: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:  # a box over the whole z range, y/x +-r
        return np.array([-p.fov_z, -r[0], -r[1]]), np.array([p.fov_z, r[0], r[1]])

    _paint_body_wall(cv, rng, p, shape, full)
    _paint_spine(cv, rng, p.half_width, p.half_depth, full)
    _paint_organs(cv, _Jitter(rng, p.half_width, p.half_depth))
    origin = np.array([p.origin_z, -p.fov_xy / 2 + p.shift[1], -p.fov_xy / 2 + p.shift[2]])
    geometry = Geometry(tuple(float(v) for v in spacing), tuple(float(v) for v in origin))  # type: ignore[arg-type]
    return p, geometry, cv.tissue


def _labels_from_tissue(tissue: np.ndarray) -> np.ndarray:
    labels = tissue.astype(np.int16) - ORGAN_OFFSET
    labels[labels < 0] = 0
    return labels.astype(np.uint8)


def _render(tissue: np.ndarray, modality: Modality, spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Turn a tissue map into an image of ``modality`` with its noise, blur and artefacts."""
    shape = tissue.shape
    slug = modality.slug
    lut = _tissue_lut(slug) * rng.uniform(0.92, 1.08, N_TISSUES).astype(np.float32)
    texture = 1.0 + 0.04 * _smooth_noise(rng, shape, (10, 24, 24)) + 0.03 * _smooth_noise(rng, shape, (20, 48, 48))
    if modality.kind == "ct":
        lut[AIR] = -1000.0
        img = lut[tissue]
        soft = (tissue != AIR) & (tissue != GAS)
        img[soft] += 18.0 * (texture[soft] - 1.0) / 0.05
        img = ndimage.gaussian_filter(img, sigma=0.6 / np.array([2.0, 1.0, 1.0]))
        img += rng.normal(0, rng.uniform(10, 20), shape).astype(np.float32)
        return np.clip(np.round(img), -1024, 3071).astype(np.int16)
    if modality.kind == "mri":
        if slug in ("inphase", "outphase"):
            ff = _fat_fraction_lut()[tissue]
            water = ndimage.gaussian_filter(lut[tissue] * (1 - ff), 0.7)
            fat = ndimage.gaussian_filter(_T1_FAT_SIGNAL * ff, 0.7)
            img = water + fat if slug == "inphase" else np.abs(water - fat)
        else:
            img = ndimage.gaussian_filter(lut[tissue], 1.2 if slug == "dwi" else 0.7)
        img *= texture
        bias = np.exp(0.25 * _smooth_noise(rng, shape, (2, 3, 3)))
        img *= bias
        sigma = (0.045 if slug == "dwi" else 0.022) * float(img.max())
        n1, n2 = rng.normal(0, sigma, (2, *shape)).astype(np.float32)
        img = np.sqrt((img + n1) ** 2 + n2**2)  # Rician magnitude noise
        gain = float(rng.uniform(600, 1100)) / max(float(np.percentile(img, 99.5)), 1e-6)
        return np.clip(np.round(img * gain), 0, 32767).astype(np.int16)
    # PET: uptake, scanner blur (FWHM ~ 7 mm), Poisson counting noise
    img = lut[tissue] * (1.0 + 2.0 * (texture - 1.0))
    sigma_mm = 7.0 / 2.355
    img = ndimage.gaussian_filter(img, sigma_mm / np.asarray(spacing))
    counts_per_suv = float(rng.uniform(6, 12))
    img = rng.poisson(np.clip(img, 0, None) * counts_per_suv).astype(np.float32) / counts_per_suv
    img = ndimage.gaussian_filter(img, 0.5)
    return img.astype(np.float32)


def _patient_rng(seed: int, modality: Modality, case: int, *stream: int) -> np.random.Generator:
    """The random stream of patient ``case`` of ``modality``; ``stream`` picks further independent ones."""
    m_index = [m.slug for m in MODALITIES].index(modality.slug)
    return np.random.default_rng(np.random.SeedSequence([int(seed), m_index, int(case), *stream]))


def _renderable(modality: str, shape: tuple[int, ...]) -> tuple[Modality, tuple[int, int, int]]:
    """``modality`` as the phantom renders it and ``shape`` as a grid; an error for either it cannot make."""
    mod = get_modality(modality)
    if mod.slug not in _TABLE:
        known = ", ".join(m.slug for m in PHANTOM_MODALITIES)
        raise UdaError(f"the phantom cannot render {mod.key!r}; it renders: {known}")
    if len(shape) != 3 or min(shape) < 8:
        raise UdaError(f"phantom shape must be three sizes of at least 8 voxels (z, y, x), got {shape}")
    return mod, (int(shape[0]), int(shape[1]), int(shape[2]))


def make_case(modality: str, case: int = 0, seed: int = 0, shape: tuple[int, int, int] = DEFAULT_SHAPE) -> tuple[Volume, Volume]:
    """One synthetic patient rendered as ``modality``: (image, organ labels), deterministic in its arguments."""
    mod, grid = _renderable(modality, shape)
    rng = _patient_rng(seed, mod, case)
    _, geometry, tissue = _draw_patient(rng, grid)
    image = _render(tissue, mod, np.asarray(geometry.spacing), rng)
    labels = _labels_from_tissue(tissue)
    return Volume(image, geometry, mod.key), Volume(labels, geometry, mod.key)


def _moved(tissue: np.ndarray, spacing: np.ndarray, rng: np.random.Generator, max_deg: float, max_mm: float) -> np.ndarray:
    """``tissue`` after a random rigid motion about the grid centre: a rotation about z of up to
    ``max_deg`` degrees and a shift of up to ``max_mm`` mm per axis (nearest neighbour; the edge
    continues past the grid)."""
    a = np.deg2rad(rng.uniform(-max_deg, max_deg))
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    shift_mm = rng.uniform(-max_mm, max_mm, 3)
    matrix = np.diag(1 / spacing) @ rot @ np.diag(spacing)  # output voxel -> input voxel, rotation in mm
    centre = (np.array(tissue.shape) - 1) / 2
    offset = centre - matrix @ centre + shift_mm / spacing
    return ndimage.affine_transform(tissue, matrix, offset, order=0, mode="nearest")


def make_same_patient(modality: str, of: str, case: int = 0, seed: int = 0, shape: tuple[int, int, int] = DEFAULT_SHAPE,
                      max_deg: float = 5.0, max_mm: float = 8.0) -> tuple[Volume, Volume]:
    """The patient of ``make_case(of, case, seed, shape)`` scanned again as ``modality`` (another
    sub-domain of the same patient, as ASIT's T1 phases and T2): the same anatomy and grid, moved
    between the two acquisitions (:func:`_moved`), with its own noise. (image, organ labels)."""
    first, grid = _renderable(of, shape)
    mod, _ = _renderable(modality, shape)
    _, geometry, tissue = _draw_patient(_patient_rng(seed, first, case), grid)
    rng = _patient_rng(seed, mod, case, 1)
    spacing = np.asarray(geometry.spacing)
    tissue = _moved(tissue, spacing, rng, max_deg, max_mm)
    image = _render(tissue, mod, spacing, rng)
    return Volume(image, geometry, mod.key), Volume(_labels_from_tissue(tissue), geometry, mod.key)


def case_name(modality: Modality, case: int) -> str:
    return f"{modality.slug}_{case:03d}"


def write_phantom_dataset(
    out: str | Path,
    cases: dict[str, int],
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    progress: Progress | None = None,
) -> dict:
    """Write ``cases[modality]`` patients of each modality into ``out`` (layout in the module docstring)."""
    out = Path(out)
    plan = [(get_modality(m), n) for m, n in cases.items()]
    total = sum(n for _, n in plan)
    manifest: dict = {"generator": "napari_uda.data.phantom", "seed": seed, "shape_zyx": list(shape),
                      "cases": {m.slug: n for m, n in plan}, "files": {}}
    done = 0
    for mod, n in plan:
        entries = []
        for case in range(n):
            image, labels = make_case(mod.slug, case, seed, shape)
            name = case_name(mod, case)
            img_path = write_volume(image, out / mod.slug / "images" / f"{name}.nii.gz")
            lab_path = write_volume(labels, out / mod.slug / "labels" / f"{name}.nii.gz")
            entries.append({"case": name, "image": img_path.relative_to(out).as_posix(),
                            "labels": lab_path.relative_to(out).as_posix(),
                            "labels_use": "training" if mod.kind == "ct" else "evaluation only"})
            done += 1
            emit(progress, "phantom", name, done, total, "cases")
        manifest["files"][mod.slug] = entries
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
