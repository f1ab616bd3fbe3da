"""One meaning of a device name across commands: auto, cpu, cuda or cuda:N."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """"auto" is CUDA where it is available, else the CPU; a CUDA device asked for where there is none is an
    error naming it (never a silent fall-back to the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available here: use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise ValueError(f"device {name!r} is not auto, cpu, cuda or cuda:N")
    return device


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """x on `device`; from the CPU to CUDA through pinned memory and a non-blocking copy, so the host never
    waits for the device's queue (a copy from pageable memory would)."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def release_gpu_memory() -> None:
    """Give the CUDA caching allocator's blocks back: a Ray worker process that runs the next task (or trial)
    must not find the previous one's DiT, VAE and student still holding GPU memory. Nothing without CUDA."""
    import gc

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
