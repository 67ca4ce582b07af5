"""Choosing the compute device: CUDA, Apple MPS or CPU, automatically or as the user asks."""
from __future__ import annotations

import os
from typing import Any, Callable

import torch

from napari_uda.core.errors import UdaError


def available_devices() -> list[str]:
    """Devices usable here, best first (what a device picker offers)."""
    out = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out + ["cpu"]


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` ("cuda", "cuda:1", "mps", "cpu") if it is available, else the best one; a
    requested device that is not there is an error naming what is."""
    if requested in (None, "", "auto"):
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(requested)
    except RuntimeError:
        raise UdaError(f"unknown device {requested!r}; available: {', '.join(available_devices())}") from None
    names = available_devices()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UdaError(f"CUDA was requested but no CUDA GPU is available here; available: {', '.join(names)}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UdaError(f"{requested} does not exist; available: {', '.join(names)}")
    if dev.type == "mps" and "mps" not in names:
        raise UdaError(f"MPS was requested but is not available here; available: {', '.join(names)}")
    return dev


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for ``device`` (bfloat16 on CUDA GPUs that have it, float16 on
    older ones), or None where training runs in float32."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


TORCH_THREADS = "NAPARI_UDA_TORCH_THREADS"  # an nnU-Net training process's torch threads on a CPU (else all cores)


def cpu_autocast_dtype() -> torch.dtype | None:
    """bfloat16 where this CPU computes it natively (AVX512-BF16 or AMX), else None (emulated
    bfloat16 is slower than float32); ``NAPARI_UDA_CPU_AMP=0`` turns it off. Measured on a 2-core
    Xeon with AMX (``benchmarks/RESULTS.md``): a training step of the ``small`` budget's 2d U-Net
    (batch 8, 96x96) takes 0.16 s instead of 0.26 s with channels-last. The translators' small
    crops gain nothing measurable, so they keep :func:`amp_dtype` (float32 on CPU)."""
    if os.environ.get("NAPARI_UDA_CPU_AMP", "1").lower() in ("0", "false", "no"):
        return None
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.bfloat16 if native else None


def autocast_forward(forward: Callable[..., Any], device_type: str, dtype: torch.dtype) -> Callable[..., Any]:
    """``forward`` run under autocast to ``dtype``, its tensor outputs (or lists of them, as deep
    supervision returns) cast back to float32 so that losses and softmax see full precision."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=dtype):
            out = forward(*args, **kwargs)
        if isinstance(out, (list, tuple)):
            return type(out)(o.float() for o in out)
        return out.float()

    return run
