"""Small helpers shared by the dock widgets."""
from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_error

from ..errors import UdaError


def notify_error(exc: BaseException) -> None:
    """Show an error as a napari notification: the message alone for user errors, type and message otherwise."""
    if isinstance(exc, UdaError):
        show_error(str(exc))
    else:
        show_error(f"{type(exc).__name__}: {exc}")


def add_layer_data(viewer: Any, layer_data: list[tuple]) -> list[Any]:
    """Add napari layer data tuples to ``viewer`` and return the new layers."""
    added = []
    for data, kwargs, kind in layer_data:
        added.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return added
