"""Device, precision and reproducibility settings of a run."""

from __future__ import annotations

import contextlib
import logging
import os
import random

import numpy as np
import torch

__all__ = ["resolve_device", "seed_everything", "set_determinism", "autocast", "make_grad_scaler", "amp_dtype"]

log = logging.getLogger("planessl.training")


def resolve_device(preference: str) -> torch.device:
    """``auto`` -> CUDA when present else CPU; ``cuda`` without CUDA falls back to CPU with a warning."""
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        log.warning("runtime.device is 'cuda' but no CUDA device is available: training on the CPU")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the global RNG for code that uses it
    torch.manual_seed(seed)


def set_determinism(deterministic: bool, device: torch.device, compiled: bool = False) -> None:
    """Deterministic algorithms (and cuDNN) when asked; cuDNN autotuning otherwise on CUDA."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if not compiled and hasattr(torch._C, "_set_deterministic_algorithms"):
            # what torch.use_deterministic_algorithms does minus setting the inductor flag, whose
            # import costs seconds per process and matters only to torch.compile
            torch._C._set_deterministic_algorithms(True, warn_only=False)
        else:
            torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        if torch.are_deterministic_algorithms_enabled():
            torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = device.type == "cuda"


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``runtime.amp`` on this device, or None (full precision).

    fp16 is CUDA-only (on the CPU it falls back to full precision with a warning); bf16 works on
    both (CPU autocast is slow on most CPUs but correct).
    """
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        log.warning("runtime.amp fp16 needs CUDA: training in float32 on %s", device)
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` (a null context when None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 and fp32 need no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
