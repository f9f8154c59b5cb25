"""The compute dtype of an engine: weights are cast to it once, crops and template tokens are kept in it."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 dot-product instructions (AVX512-BF16 or AMX), where oneDNN's bf16 matmuls
    beat fp32; on others bf16 is emulated and slower."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_precision(precision: str, device: torch.device) -> tuple[str, torch.dtype, str]:
    """(name, dtype, why) for a precision option; "auto" picks fp16 on CUDA, bf16 on CPUs with native bf16,
    fp32 otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision, _DTYPES[precision], "asked for"
    if device.type == "cuda":
        return "fp16", torch.float16, "auto: CUDA device"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16", torch.bfloat16, "auto: CPU with AVX512-BF16/AMX"
    return "fp32", torch.float32, f"auto: {device.type} without native bf16"
