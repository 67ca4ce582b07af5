"""Choosing the compute device: CUDA, Apple MPS or CPU, automatically or as the user asks."""
from __future__ import annotations

import torch

from .errors import UdaError


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
