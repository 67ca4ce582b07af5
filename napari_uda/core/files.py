"""Files on disk, the same way everywhere: folders of volumes, JSON read with clear errors, atomic
writes (a temporary name next to the target, then one rename: a crash leaves the old file or the
new one, never half of one) and the UTC timestamps records carry."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from napari_uda.core.errors import UdaError

#: File suffixes written and read as single files.
FILE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


def suffix_of(path: str | Path) -> str:
    """The volume suffix of ``path`` (``.nii.gz`` counts as one), lower-case, or ``""``."""
    name = Path(path).name.lower()
    for suffix in FILE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def stem_of(path: str | Path) -> str:
    """File name without its volume suffix (``case_001.nii.gz`` -> ``case_001``)."""
    name = Path(path).name
    suffix = suffix_of(path)
    return name[: len(name) - len(suffix)] if suffix else Path(path).stem


def styled_stem(case: str, style: int) -> str:
    """The file stem of case ``case`` translated in the style of style cluster ``style`` (DAR): ``<case>_s<k>``."""
    return f"{case}_s{style}"


def looks_like_dicom(path: Path) -> bool:
    """A ``.dcm``/``.ima`` file, or any file with the DICOM preamble ("DICM" at byte 128); not DICOMDIR."""
    if path.name.upper() == "DICOMDIR" or path.name.startswith("."):
        return False
    if path.suffix.lower() in (".dcm", ".ima"):
        return True
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def utc_timestamp(timespec: str = "seconds") -> str:
    """Now in UTC, ISO 8601 (``2026-12-02T15:30:00+00:00``); ``timespec`` as :meth:`datetime.isoformat`."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


def utc_file_stamp() -> str:
    """Now in UTC for a file name: ``20261202T153000123456``."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")


@contextmanager
def atomic_path(path: str | Path, keep_suffix: str = "") -> Iterator[Path]:
    """A hidden temporary path next to ``path`` to write into; it replaces ``path`` when the block
    ends normally and is removed when it raises. ``keep_suffix`` ends the temporary name (writers
    that choose a format by extension need it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{keep_suffix}")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically; ``fsync``: on disk before the rename (manifests)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; missing or invalid JSON is an error naming the file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UdaError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UdaError(f"{path}: not valid JSON ({exc})") from None


def list_volumes(folder: str | Path) -> list[Path]:
    """Volume files in ``folder``, sorted by name; an error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UdaError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and any(p.name.lower().endswith(s) for s in FILE_SUFFIXES))
    if not files:
        raise UdaError(f"{folder}: holds no volumes ({', '.join(FILE_SUFFIXES)})")
    return files


def volume_inputs(path: str | Path) -> list[Path]:
    """What a command's ``--input`` names: a volume file, a folder holding one DICOM series (one
    volume), or a folder of volume files (each one)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    if not any(p.is_file() and p.name.lower().endswith(FILE_SUFFIXES) for p in path.iterdir()) and any(
            p.is_file() and looks_like_dicom(p) for p in path.iterdir()):
        return [path]
    return list_volumes(path)


def pair_labels(images: Sequence[Path], label_folder: str | Path) -> list[Path]:
    """The label file of each image (same name in ``label_folder``), or an error naming the first missing one."""
    label_folder = Path(label_folder)
    by_stem = {stem_of(p): p for p in list_volumes(label_folder)}
    missing = [p.name for p in images if stem_of(p) not in by_stem]
    if missing:
        raise UdaError(f"{label_folder}: no labels for {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    return [by_stem[stem_of(p)] for p in images]
