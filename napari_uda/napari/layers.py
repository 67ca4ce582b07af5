"""Volumes <-> napari layer data tuples (plain data; no napari import)."""
from __future__ import annotations

from typing import Any

import numpy as np

from napari_uda.core.io import Geometry, Volume
from napari_uda.core.organs import MAX_LABEL, is_organ_label_array, napari_colormap, organ_name

LayerDataTuple = tuple[Any, dict[str, Any], str]


def _transform_kwargs(geometry: Geometry) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"scale": tuple(geometry.spacing), "translate": tuple(geometry.origin)}
    if not geometry.is_axis_aligned:
        kwargs["rotate"] = geometry.direction_matrix
    return kwargs


def label_features() -> dict[str, list]:
    """Per-label features table (napari shows the organ name under the cursor)."""
    idx = list(range(MAX_LABEL + 1))
    return {"index": idx, "organ": [organ_name(i) for i in idx]}


def volume_to_layer_data(volume: Volume, name: str, as_labels: bool | None = None, source: str | None = None) -> LayerDataTuple:
    """A napari layer data tuple for ``volume``: Labels with organ colours, or Image with a sensible window."""
    labels = is_organ_label_array(volume.array) if as_labels is None else as_labels
    meta = {"geometry": volume.geometry.to_dict(), "modality": volume.modality}
    if source:
        meta["source"] = source
    kwargs: dict[str, Any] = {"name": name, "metadata": meta, **_transform_kwargs(volume.geometry)}
    if labels:
        kwargs.update(colormap=napari_colormap(), features=label_features(), opacity=0.5)
        return volume.array.astype(np.uint8, copy=False), kwargs, "labels"
    a = volume.array
    if volume.modality == "CT":
        kwargs["contrast_limits"] = (-400.0, 400.0)
    else:
        finite = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a
        lo, hi = np.percentile(finite, (0.5, 99.5)) if finite.size else (0.0, 1.0)
        kwargs["contrast_limits"] = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
    kwargs["colormap"] = "gray"
    return a, kwargs, "image"


def geometry_from_layer_meta(meta: dict[str, Any]) -> Geometry:
    """The geometry a layer came with (metadata), or one built from its scale and translate."""
    stored = (meta.get("metadata") or {}).get("geometry")
    if stored:
        return Geometry.from_dict(stored)
    ndim = 3
    scale = tuple(float(v) for v in (meta.get("scale") or (1.0,) * ndim))[-3:]
    translate = tuple(float(v) for v in (meta.get("translate") or (0.0,) * ndim))[-3:]
    rotate = meta.get("rotate")
    if rotate is not None and np.asarray(rotate).shape == (3, 3):
        return Geometry(scale, translate, tuple(tuple(float(v) for v in row) for row in np.asarray(rotate)))  # type: ignore[arg-type]
    return Geometry(scale, translate)  # type: ignore[arg-type]
