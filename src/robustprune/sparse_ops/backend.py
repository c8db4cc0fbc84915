"""Which implementation runs: CPU torch code, or Triton kernels (CUDA, or CPU under the interpreter)."""

from __future__ import annotations

import os

import torch

# Elements per chunk on the CPU path: large enough to amortise per-op overhead, small enough that the
# temporaries stay in cache and peak extra memory stays a few MB whatever the model size.
CPU_CHUNK = 1 << 19


def triton_interpreter_active() -> bool:
    """True when Triton kernels run on CPU tensors (``TRITON_INTERPRET=1``, set before importing triton)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_triton_device(tensor: torch.Tensor, name: str) -> None:
    if tensor.device.type != "cuda" and not triton_interpreter_active():
        raise RuntimeError(f"{name} is on {tensor.device}; the Triton kernels need a CUDA tensor "
                           "(or TRITON_INTERPRET=1 for CPU tensors)")


def flat_chunks(tensor: torch.Tensor, chunk: int = CPU_CHUNK):
    """Yield consecutive 1-D views of a contiguous tensor, ``chunk`` elements at a time."""
    flat = tensor.view(-1)
    for start in range(0, flat.numel(), chunk):
        yield start, flat[start:start + chunk]

