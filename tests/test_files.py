"""Files written the same way everywhere: atomic replacement and UTC timestamps."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from napari_uda.core.files import atomic_path, atomic_write_text, utc_file_stamp, utc_timestamp


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "manifest.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new", fsync=True)
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["manifest.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "weights.safetensors"
    target.write_text("complete old weights")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "complete old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_the_temporary_keeps_a_suffix_for_writers_that_choose_a_format_by_extension(tmp_path):
    with atomic_path(tmp_path / "case.nii.gz", keep_suffix=".nii.gz") as tmp:
        assert tmp.name == ".case.nii.gz.tmp.nii.gz" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "case.nii.gz").read_bytes() == b"x"


def test_timestamps_are_utc_now():
    stamp = datetime.fromisoformat(utc_timestamp())
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=1)
    assert len(utc_timestamp("milliseconds").split(".")[1].split("+")[0]) == 3
    file_stamp = utc_file_stamp()
    assert len(file_stamp) == 21 and file_stamp[8] == "T" and file_stamp.replace("T", "").isdigit()
