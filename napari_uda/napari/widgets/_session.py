"""The workspace each viewer is working in: a path (the state itself lives on disk in the
workspace folder), and a signal for the widgets that show it.

The Workspace widget sets it; every other widget reads it and refreshes when it changes. A
widget can also be given a workspace folder directly (tests, scripts).
"""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from psygnal import Signal

from napari_uda.core.errors import UdaError
from napari_uda.core.workspace import Workspace
from napari_uda.review.store import QueueRow, ReviewStore


class WorkspaceLink:
    """The current workspace folder of one viewer."""

    changed = Signal(object)  # the new Workspace

    def __init__(self) -> None:
        self.path: Path | None = None

    def set(self, workspace: Workspace) -> None:
        self.path = workspace.root
        self.changed.emit(workspace)

    def open(self) -> Workspace:
        """The workspace, freshly read from disk (other processes may have changed it)."""
        if self.path is None:
            raise UdaError("no workspace yet: open or create one in the Workspace widget")
        return Workspace.open(self.path)

    def scored_queue(self) -> list[QueueRow]:
        """The review queue of the workspace's modality: cases that have a prediction, best score first."""
        ws = self.open()
        with ReviewStore.for_workspace(ws.root) as store:
            return [r for r in store.queue(ws.modality) if r.label is not None]


_LINKS: dict[int, WorkspaceLink] = {}


def link_for(viewer: Any) -> WorkspaceLink:
    """The workspace link of ``viewer`` (created on first use, dropped with the viewer).

    napari hands each plugin widget its own proxy of the viewer: the link belongs to the viewer
    the proxies wrap, so every widget of one window shares it.
    """
    while hasattr(viewer, "__wrapped__"):
        viewer = viewer.__wrapped__
    key = id(viewer)
    if key not in _LINKS:
        _LINKS[key] = WorkspaceLink()
        weakref.finalize(viewer, _LINKS.pop, key, None)
    return _LINKS[key]
