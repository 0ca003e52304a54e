"""Device and dtype policy: CUDA in fp16 by default, CPU in fp32; ``--device``/``--dtype`` override."""

from __future__ import annotations

import functools
import importlib

import torch

from ..errors import UserError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` -> ``cuda`` when available, else ``cpu``; a CUDA request without CUDA is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device '{device}'; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' was asked for but CUDA is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported device '{device}'; use cpu, cuda or cuda:N")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` -> fp16 on CUDA, fp32 elsewhere. fp16 on the CPU is refused (slow, and many ops lack it)."""
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype is None:
        resolved = torch.float16 if device.type == "cuda" else torch.float32
    elif dtype in DTYPES:
        resolved = DTYPES[dtype]
    else:
        raise UserError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    if resolved == torch.float16 and device.type == "cpu":
        raise UserError("fp16 is not supported on the CPU; use --dtype fp32 (or bf16)")
    return resolved


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype))


@functools.cache
def cuda_extension_available(*modules: str) -> bool:
    """True when CUDA is present and every module in ``modules`` imports (e.g. ``"tinycudann"``,
    ``"nerfacc.cuda._C"``); cached, so hot paths may ask on every call."""
    if not torch.cuda.is_available():
        return False
    try:
        for name in modules:
            importlib.import_module(name)
    except Exception:
        return False
    return True
