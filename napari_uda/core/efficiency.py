"""Running time and GPU memory of a run, as FLARE reports them (peak and area under the memory-time curve).

Used by every inference path::

    with RunMeter(device) as meter:
        predict(...)
    meter.result  # {"seconds": ..., "gpu_peak_mb": ..., "gpu_auc_mb_s": ...}
"""
from __future__ import annotations

import threading
import time
from typing import Any


class RunMeter:
    """Wall time; on CUDA also GPU memory sampled every ``interval`` s in a background thread.

    Memory is what PyTorch's caching allocator holds on the device (``memory_reserved``),
    the closest per-process figure to what ``nvidia-smi`` shows; the peak also includes
    ``max_memory_reserved`` so short spikes between samples are not missed.
    """

    def __init__(self, device: Any = "cpu", interval: float = 0.05) -> None:
        self.device = str(device)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.result: dict[str, float | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cuda = self.device.startswith("cuda")

    def _memory_mb(self) -> float:
        import torch

        return torch.cuda.memory_reserved(self.device) / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._memory_mb()))
            self._stop.wait(self.interval)

    def __enter__(self) -> RunMeter:
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._t0 = time.perf_counter()
        if self._cuda:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        gpu_peak = gpu_auc = None
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        if self._cuda:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.samples.append((t1, self._memory_mb()))
            gpu_peak = max(max(m for _, m in self.samples), torch.cuda.max_memory_reserved(self.device) / 2**20)
            gpu_auc = area_under_curve(self.samples)
        self.result = {"seconds": t1 - self._t0, "gpu_peak_mb": gpu_peak, "gpu_auc_mb_s": gpu_auc}


def area_under_curve(samples: list[tuple[float, float]]) -> float:
    """Trapezoidal area under (time s, memory MB) samples, in MB*s."""
    area = 0.0
    for (t0, m0), (t1, m1) in zip(samples, samples[1:]):
        area += (t1 - t0) * (m0 + m1) / 2
    return area
