"""Run metering: wall time everywhere; GPU memory peak and area under the curve on CUDA."""
from __future__ import annotations

import time

import pytest

from napari_uda.core.efficiency import RunMeter, area_under_curve


def test_area_under_curve_hand_computed():
    # 0..1 s at 100 MB, then a ramp to 300 MB over 2 s: 100 + 2 * 200 = 500 MB*s
    assert area_under_curve([(0.0, 100.0), (1.0, 100.0), (3.0, 300.0)]) == pytest.approx(500.0)
    assert area_under_curve([(0.0, 5.0)]) == 0.0


def test_cpu_meter_measures_time_only(monkeypatch):
    clock = iter([10.0, 12.5])  # entering and leaving, in seconds
    monkeypatch.setattr("napari_uda.core.efficiency.time.perf_counter", lambda: next(clock))
    with RunMeter("cpu") as meter:
        pass
    assert meter.result["seconds"] == 2.5
    assert meter.result["gpu_peak_mb"] is None and meter.result["gpu_auc_mb_s"] is None


def test_cuda_meter_when_available():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here; checked on the lent GPU machine (benchmarks/RESULTS.md)")
    with RunMeter("cuda:0") as meter:
        x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda:0")
        time.sleep(0.2)
        del x
    assert meter.result["gpu_peak_mb"] >= 256
    assert meter.result["gpu_auc_mb_s"] > 256 * 0.15
