"""The job protocol: a stop asked for ends a job with Cancelled, and the command line says so in one line."""
from __future__ import annotations

import pytest

from napari_uda.core.errors import UdaError
from napari_uda.core.jobs import Cancelled, check_stop


def test_check_stop_raises_only_when_asked():
    check_stop(None, "nothing")
    check_stop(lambda: False, "prediction")
    with pytest.raises(Cancelled, match="^prediction cancelled$") as exc:
        check_stop(lambda: True, "prediction")
    assert isinstance(exc.value, UdaError)  # every caller that reports user errors reports it too
    with pytest.raises(Cancelled, match="^pipeline cancelled; run the same command again to continue$"):
        check_stop(lambda: True, "pipeline", "run the same command again to continue")


def test_a_cancelled_command_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    from napari_uda import cli
    from napari_uda.cli import models

    def stopped(args):
        raise Cancelled("export cancelled")

    monkeypatch.setattr(models, "cmd_export", stopped)
    assert cli.main(["models", "export", "--workspace", str(tmp_path), "--stage", "x", "--out", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["napari-uda: export cancelled"]
