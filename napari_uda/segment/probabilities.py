"""Per-fold class probabilities on disk, stored so they can be read a z-slab at a time.

A probability file is a ``.npz`` (a zip of ``.npy`` members, read with
``allow_pickle=False``) holding ``meta`` (JSON: shape (C, Z, Y, X), slab size, dtype,
geometry) and one compressed member per slab of ``slab`` z-slices, ``p_<z0>``. Readers
touch only the slabs they need, so fusing N folds never holds a whole fold in memory.
nnU-Net's own ``.npz`` (one ``probabilities`` member) is read as a single slab.
"""
from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from napari_uda.core.files import atomic_path
from napari_uda.core.io import Geometry

DEFAULT_SLAB = 8


def save_probabilities(path: str | Path, probs: np.ndarray, geometry: Geometry | None = None,
                       slab: int = DEFAULT_SLAB, dtype: type = np.float16) -> Path:
    """Write ``probs`` (C, Z, Y, X) as compressed slabs; written to a temporary name, then renamed."""
    path = Path(path)
    probs = np.asarray(probs)
    if probs.ndim != 4:
        raise ValueError(f"{path}: probabilities must be (classes, z, y, x), got shape {probs.shape}")
    meta = {"shape": list(probs.shape), "slab": int(slab), "dtype": np.dtype(dtype).name,
            "geometry": geometry.to_dict() if geometry else None}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("meta.npy", "w") as f:
            np.lib.format.write_array(f, np.frombuffer(json.dumps(meta).encode(), np.uint8))
        for z0 in range(0, probs.shape[1], slab):
            with zf.open(f"p_{z0:05d}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(probs[:, z0:z0 + slab].astype(dtype)))
    return path


class ProbabilityFile:
    """Read access to one probability file, slab by slab."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._npz = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{self.path}: not a readable probability file ({exc})") from None
        names = set(self._npz.files)
        if "meta" in names:
            meta = json.loads(bytes(self._npz["meta"]).decode())
            self.shape = tuple(meta["shape"])
            self.slab = int(meta["slab"])
            self.geometry = Geometry.from_dict(meta["geometry"]) if meta.get("geometry") else None
        elif "probabilities" in names:  # nnU-Net's layout: one array
            arr = self._npz["probabilities"]
            self.shape, self.slab, self.geometry = arr.shape, arr.shape[1], None
        else:
            raise ValueError(f"{self.path}: holds neither slabs nor a 'probabilities' array")
        if len(self.shape) != 4:
            raise ValueError(f"{self.path}: probabilities must be (classes, z, y, x), got shape {self.shape}")

    @property
    def n_classes(self) -> int:
        return int(self.shape[0])

    def slabs(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (z0, probabilities of slices z0..z0+slab) as float32, validated."""
        for z0 in range(0, self.shape[1], self.slab):
            yield z0, self.read(z0)

    def read(self, z0: int) -> np.ndarray:
        key = "probabilities" if "meta" not in self._npz.files else f"p_{z0:05d}"
        try:
            arr = self._npz[key].astype(np.float32)
        except (KeyError, OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{self.path}: slab at z={z0} is missing or corrupt ({exc})") from None
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{self.path}: probabilities contain NaN or infinite values (slab at z={z0})")
        if arr.size and arr.min() < 0:
            raise ValueError(f"{self.path}: probabilities contain negative values (slab at z={z0})")
        return arr

    def read_all(self) -> np.ndarray:
        """The whole array (C, Z, Y, X) as float32: for small volumes and tests."""
        return np.concatenate([a for _, a in self.slabs()], axis=1)

    def close(self) -> None:
        self._npz.close()

    def __enter__(self) -> ProbabilityFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
