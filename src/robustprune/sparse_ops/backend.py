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
# The environment's say, read once at import (so that it reaches a child process): the route every op takes
# from the start, and a file the launch counts and devices are written to when the process exits.
ROUTE_ENV = "ROBUSTPRUNE_ROUTE"
LAUNCH_LOG_ENV = "ROBUSTPRUNE_LAUNCH_LOG"


def _check_route(name: str, where: str) -> None:
    if name not in ROUTES:
        raise ValueError(f"{where} must be one of {list(ROUTES)}, got {name!r}")
    if name == "triton" and not triton_interpreter_active():
        raise RuntimeError(f"{where} 'triton' runs the Triton kernels on CPU tensors through the interpreter: set "
                           "TRITON_INTERPRET=1 before anything imports triton")


def _route_from_environment() -> str:
    name = os.environ.get(ROUTE_ENV, "") or "cpu"
    _check_route(name, ROUTE_ENV)
    return name


_route = {"name": _route_from_environment()}  # process-wide, so that the ops called from any thread take it
_route_lock = threading.Lock()
_launches: Counter[tuple[str, str]] = Counter()
_devices: dict[tuple[str, str], set[str]] = {}
_recording = {"depth": 0}  # > 0: count_launch also records the devices of the tensors it is given


@contextlib.contextmanager
def route(name: str) -> Iterator[None]:
    """Which implementation the ops give CPU tensors, inside the block: ``"cpu"`` (their CPU kernels, the
    default) or ``"triton"`` (their CUDA implementations, i.e. the Triton kernels, run by the interpreter:
    needs ``TRITON_INTERPRET=1`` set before triton is imported). The route proves on a CPU-only machine
    that a computation reaches the Triton kernels a GPU would run; count the launches with
    :func:`launch_counts`. Process-wide (every thread), restored on exit; CUDA tensors always take the
    Triton kernels. ``ROBUSTPRUNE_ROUTE=triton`` in the environment sets the route of a whole process
    (a child process, say) from its start.

    Raises:
        ValueError: an unknown route.
        RuntimeError: ``"triton"`` without the interpreter.
    """
    _check_route(name, "route")
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


def count_launch(op: str, implementation: str = "triton", tensors: tuple = ()) -> None:
    """Count one call of ``op``'s ``implementation`` (``"triton"``: its CUDA implementation, the Triton
    kernels; ``"cpu"``: its CPU kernel); one dict increment (see :func:`launch_counts`). ``tensors`` are the
    op's tensor arguments (``None`` and lists of tensors allowed): their devices are recorded only inside
    :func:`record_devices` (or with ``ROBUSTPRUNE_LAUNCH_LOG`` set), otherwise not looked at."""
    _launches[(op, implementation)] += 1
    if _recording["depth"]:
        seen = _devices.setdefault((op, implementation), set())
        for tensor in tensors:
            for one in (tensor if isinstance(tensor, (list, tuple)) else (tensor,)):
                if isinstance(one, torch.Tensor):
                    seen.add(str(one.device))


def launch_counts(implementation: str = "triton") -> dict[str, int]:
    """Calls of each op's ``implementation`` (``"triton"``: on CUDA tensors or through ``route("triton")``;
    ``"cpu"``: its CPU kernel), ``robustprune::NAME`` -> count, since the last :func:`reset_launch_counts`."""
    return {op: count for (op, kind), count in _launches.items() if kind == implementation}


@contextlib.contextmanager
def record_devices() -> Iterator[None]:
    """Inside the block, every counted call also records the devices of the tensors the op received; read
    them with :func:`launch_devices`. Costs a set update per tensor per call, nothing outside the block.
    Process-wide (every thread); blocks nest."""
    _recording["depth"] += 1
    try:
        yield
    finally:
        _recording["depth"] -= 1


def launch_devices(implementation: str = "triton") -> dict[str, list[str]]:
    """The devices (``"cpu"``, ``"cuda:0"``, ...) of the tensors each op's ``implementation`` received while
    recorded (:func:`record_devices`), ``robustprune::NAME`` -> sorted devices, since the last
    :func:`reset_launch_counts`."""
    return {op: sorted(devices) for (op, kind), devices in _devices.items() if kind == implementation}


def reset_launch_counts() -> None:
    """Start the launch counters (and the recorded devices) from zero."""
    _launches.clear()
    _devices.clear()


def launch_report() -> dict[str, Any]:
    """What the launch counters hold: ``{"route", "launches": {implementation: counts}, "devices":
    {implementation: devices}}`` (:func:`launch_counts`, :func:`launch_devices`); the content of the
    ``ROBUSTPRUNE_LAUNCH_LOG`` file."""
    return {"route": _route["name"],
            "launches": {kind: launch_counts(kind) for kind in ("triton", "cpu")},
            "devices": {kind: launch_devices(kind) for kind in ("triton", "cpu")}}


def _write_launch_log(path: str) -> None:
    import json

    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(launch_report(), handle, indent=1, sort_keys=True)
    os.replace(temporary, path)


if os.environ.get(LAUNCH_LOG_ENV):  # a whole process recorded: devices from the start, the file at exit
    import atexit

    _recording["depth"] += 1
    atexit.register(_write_launch_log, os.environ[LAUNCH_LOG_ENV])


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
