"""The fast path's choices: numeric precision, memory layout, optimizer kernels, compilation.

Measured on a 2-core AVX-512 CPU without bf16 matrix units (64x64x3, batch 128, the tutorial's
widths): fp32 eager 3.2 s/step; channels_last 2.7 s; plus D held fixed in the G step and fused Adam
2.4 s; plus torch.compile of each network 2.3 s; bf16 autocast 4.9 s, slower, because such a CPU
emulates bf16 matrix products. So `auto` takes bf16 only where the hardware multiplies bf16
natively: CUDA GPUs that support it, and CPUs with AMX or AVX512-BF16.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from .errors import DcganError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16_units() -> bool:
    """AMX or AVX512-BF16 in the CPU flags (Linux); elsewhere assume not."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(precision, why) for the requested one on this device."""
    if requested not in PRECISIONS:
        raise DcganError(f"unknown precision '{requested}': use one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested, "as asked"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU computes in bf16"
        return "fp32", "auto: this GPU lacks bf16"
    if cpu_has_bf16_units():
        return "bf16", "auto: this CPU has bf16 matrix units"
    return "fp32", "auto: this CPU has no bf16 matrix units, where bf16 runs slower than fp32"


def autocast_factory(precision: str, device: torch.device) -> Callable:
    """A zero-argument context-manager factory: autocast for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return nullcontext
    return partial(torch.autocast, device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def adam(parameters: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all parameters) where this torch has it, else foreach."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch or a device without the fused kernel
        return torch.optim.Adam(parameters, lr=lr, betas=betas, foreach=True)
