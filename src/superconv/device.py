"""Choosing the device and the numeric precision at run time."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from superconv.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto": cuda, then mps, then cpu. A named device must be available.

    The result names its index (``cuda`` becomes ``cuda:0`` on the current GPU), as the device of a tensor
    placed there does: ``torch.device("cuda") != torch.device("cuda:0")``.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return canonical_device(torch.device("cuda"))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return canonical_device(torch.device("mps"))
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"Unknown device {device!r}: expected auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device {device!r} was asked for but CUDA is not available here: use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"Device {device!r} was asked for but this machine has {torch.cuda.device_count()} GPU(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}: pick one of those (or cuda)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"Device {device!r} was asked for but MPS is not available here: use --device cpu or auto")
    return canonical_device(dev)


def canonical_device(device: str | torch.device) -> torch.device:
    """``device`` with its index filled in the way a tensor's ``.device`` reports it.

    ``cuda`` means the current GPU (``cuda:N``), ``mps`` means ``mps:0``; ``cpu`` has no index. Comparing
    a tensor's device with an index-less ``torch.device("cuda")`` is always False, so every device the
    package keeps goes through here.
    """
    dev = torch.device(device)
    if dev.index is not None or dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else dev
    if dev.type in ("mps", "xpu"):
        return torch.device(dev.type, 0)
    return dev


def same_device(a: str | torch.device, b: str | torch.device) -> bool:
    """Whether two device names mean the same device (``cuda`` and ``cuda:0`` do on GPU 0)."""
    return canonical_device(a) == canonical_device(b)


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX-512 BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_supports_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` (``cuda``: the current one) computes in bf16 natively: compute capability 8.0
    (Ampere) or newer, or any ROCm GPU.

    ``torch.cuda.is_bf16_supported()`` is not this test: by default it also counts emulation (bf16 tensors work on
    a V100 or a T4, slowly), and it asks about the current GPU, not the requested one.
    """
    if torch.version.hip:
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] >= 8


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None`` means fp32, no autocast)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise ConfigError("precision 'fp16' needs a GPU: use bf16 or fp32 on the CPU")
        return torch.float16
    # auto
    if device.type == "cuda":
        return torch.bfloat16 if cuda_supports_bf16(device) else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def use_channels_last(setting: bool | str, device: torch.device) -> bool:
    """channels_last helps convolutions on CUDA and on CPUs with bf16 kernels."""
    if setting == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_supports_bf16())
    return bool(setting)
