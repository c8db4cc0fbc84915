"""Which implementation runs: CPU torch code, or Triton kernels (CUDA, or CPU under the interpreter)."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
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


ROUTES = ("cpu", "triton")
_route = {"name": "cpu"}  # process-wide, so that the ops called from any thread (attack pools) take it
_route_lock = threading.Lock()
_launches: Counter[tuple[str, str]] = Counter()


@contextlib.contextmanager
def route(name: str) -> Iterator[None]:
    """Which implementation the ops give CPU tensors, inside the block: ``"cpu"`` (their CPU kernels, the
    default) or ``"triton"`` (their CUDA implementations, i.e. the Triton kernels, run by the interpreter:
    needs ``TRITON_INTERPRET=1`` set before triton is imported). The route proves on a CPU-only machine
    that a computation reaches the Triton kernels a GPU would run; count the launches with
    :func:`launch_counts`. Process-wide (every thread), restored on exit; CUDA tensors always take the
    Triton kernels.

    Raises:
        ValueError: an unknown route.
        RuntimeError: ``"triton"`` without the interpreter.
    """
    if name not in ROUTES:
        raise ValueError(f"route must be one of {list(ROUTES)}, got {name!r}")
    if name == "triton" and not triton_interpreter_active():
        raise RuntimeError("route('triton') runs the Triton kernels on CPU tensors through the interpreter: set "
                           "TRITON_INTERPRET=1 before anything imports triton")
    with _route_lock:
        previous, _route["name"] = _route["name"], name
    try:
        yield
    finally:
        with _route_lock:
            _route["name"] = previous


def triton_route() -> bool:
    """True inside ``route("triton")``: the ops' CPU kernels hand their tensors to the Triton kernels."""
    return _route["name"] == "triton"


def count_launch(op: str, implementation: str = "triton") -> None:
    """Count one call of ``op``'s ``implementation`` (``"triton"``: its CUDA implementation, the Triton
    kernels; ``"cpu"``: its CPU kernel); one dict increment (see :func:`launch_counts`)."""
    _launches[(op, implementation)] += 1


def launch_counts(implementation: str = "triton") -> dict[str, int]:
    """Calls of each op's ``implementation`` (``"triton"``: on CUDA tensors or through ``route("triton")``;
    ``"cpu"``: its CPU kernel), ``robustprune::NAME`` -> count, since the last :func:`reset_launch_counts`."""
    return {op: count for (op, kind), count in _launches.items() if kind == implementation}


def reset_launch_counts() -> None:
    """Start the launch counters from zero."""
    _launches.clear()


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
