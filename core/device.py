"""The device a stage runs on: `auto`, `cpu`, `cuda`, `cuda:i` or `mps`,
checked against this machine before any work."""

from __future__ import annotations

import torch

from .errors import UsageError, VitregError


def check_device(device: str, *, error: type[VitregError] = UsageError) -> torch.device | None:
    """The device asked for, if this machine has it; None for `auto`. A stage
    passes its own `error` class (a `VitregError`)."""
    if device == "auto":
        return None
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise error(
            f"--device {device}: unknown device; use auto, cpu, cuda or cuda:i") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise error(f"--device {device}: torch sees no CUDA device on this machine; "
                             "use --device cpu (or auto)")
        if dev.index is not None and dev.index >= count:
            raise error(f"--device {device}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    elif dev.type not in ("cpu", "mps") or (
            dev.type == "mps" and not torch.backends.mps.is_available()):
        raise error(f"--device {device}: not available here; use auto, cpu, cuda or cuda:i")
    return dev


def resolve_device(device: str, *, local_rank: int = 0,
                   error: type[VitregError] = UsageError) -> torch.device:
    """`auto` is CUDA when there is one, else CPU; `auto` and `cuda` mean the
    local rank's GPU (under torchrun each rank has its own; 0 otherwise)."""
    dev = check_device(device, error=error)
    if dev is not None:
        if dev.type == "cuda" and dev.index is None:
            return torch.device("cuda", local_rank)
        return dev
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)
