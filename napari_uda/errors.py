"""Exceptions with messages meant for users (CLI one-liners, napari notifications)."""
from __future__ import annotations


class UdaError(Exception):
    """An error caused by input or state the user can fix; its message says what and where."""


class VolumeError(UdaError, ValueError):
    """A file could not be read as a volume, or its content or geometry is unusable."""
