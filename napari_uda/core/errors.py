"""Exceptions with messages meant for users (CLI one-liners, napari notifications)."""
from __future__ import annotations


class UdaError(Exception):
    """An error caused by input or state the user can fix; its message says what and where."""


class VolumeError(UdaError, ValueError):
    """A file could not be read as a volume, or its content or geometry is unusable."""


def safe_name(value: str, what: str) -> str:
    """``value`` if it can be used as one file or folder name (letters, digits, ``. _ -``, not
    starting with a dot), else a :class:`UdaError` naming ``what``: names from users never become paths
    unchecked."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,99}", value or ""):
        raise UdaError(f"{what} {value!r} is not a plain name: use letters, digits, '.', '_' and '-' "
                       "(no '/', no leading '.', at most 100 characters)")
    return value
