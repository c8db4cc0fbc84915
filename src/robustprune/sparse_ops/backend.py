"""Which implementation runs: CPU torch code, or Triton kernels (CUDA, or CPU under the interpreter)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

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



@functools.cache
def _plain_cpu_keys() -> tuple:
    """Dispatch key sets of ordinary CPU tensors (with and without autograd metadata)."""
    with torch.inference_mode():
        inference = torch._C._dispatch_keys(torch.empty(0))
    return torch._C._dispatch_keys(torch.empty(0)), inference


def dispatch_reaches_cpu_kernel(*tensors: torch.Tensor | None) -> bool:
    """Whether a custom op called on ``tensors`` would go straight to its CPU kernel, so that calling the
    kernel directly is the same computation without the dispatcher's cost (~0.1 ms a call after a large
    layer has flushed the caches: a fifth of a 4096 x 4096 fp16 decode step).

    True only for ordinary CPU tensors (no vmap, functionalisation, fake, meta or subclass wrapping, judged by
    their dispatch keys; ``nn.Parameter`` is ordinary) when no gradient is to be recorded, nothing is being
    traced or compiled, and no dispatch mode, torch-function mode or functorch transform is active.
    """
    present = [tensor for tensor in tensors if tensor is not None]
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in present):
        return False
    if (torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled()
            or torch._C._functorch.peek_interpreter_stack() is not None or torch.compiler.is_compiling()):
        return False
    plain = _plain_cpu_keys()
    return all(type(tensor) in (torch.Tensor, torch.nn.Parameter) and torch._C._dispatch_keys(tensor) in plain
               for tensor in present)


def _until_dynamo_loads(kernel: Callable[..., Any]) -> Callable[..., Any]:
    def guard(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:  # nothing can be tracing: run the kernel as it is
            return kernel(*args, **kwargs)
        import torch._dynamo

        disabled = torch._dynamo.disable(kernel, recursive=True, wrapping=False)
        setattr(kernel, "__dynamo_disable", disabled)  # from now on torch's own guard, as without this
        return disabled(*args, **kwargs)

    return guard


def skip_dynamo_until_loaded(op: Any) -> Any:
    """Let ``op``'s kernels run without importing ``torch._dynamo`` while nothing else has imported it.

    torch wraps every kernel of a custom op in ``torch._disable_dynamo``, which imports ``torch._dynamo``
    (1-2 s) on the first call of any op, so that dynamo never traces into the kernel. Dynamo can only be
    tracing once it is imported: until then each kernel runs directly, and from the first call after
    dynamo is loaded on, through torch's own guard. Call it once an op has all its kernels. It relies on
    torch's private layout of custom ops; where that differs, the op keeps torch's wrapper unchanged.
    """
    for wrapper in getattr(op, "_backend_fns", {}).values():
        kernel = getattr(wrapper, "__wrapped__", None)
        if kernel is not None and getattr(kernel, "__dynamo_disable", None) is None:
            setattr(kernel, "__dynamo_disable", _until_dynamo_loads(kernel))
    return op
