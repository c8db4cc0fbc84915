"""Where and at which precision a run computes: the one place a device name becomes a ``torch.device``.

A device is named ``auto`` (CUDA when this process sees a GPU, else the CPU), ``cpu``, ``cuda`` or
``cuda:N``; :func:`resolve_device` turns the name into a ``torch.device`` (or a one-line
:class:`DeviceError`) and :func:`device_problem` says what is wrong with it without raising. Both ask
CUDA only for its device count (``torch.cuda.device_count``), which does not initialise CUDA in this
process.

A precision is ``fp32``, ``bf16`` or ``fp16``: :func:`autocast` is the autocast context of training and
evaluation at that precision (``fp32``: none). Pruning maths keeps its own precision whatever the run's
(SparseGPT's Hessian and Cholesky, Wanda's norms: fp32). ``fp16`` training scales its loss with a
``torch.amp.GradScaler`` (:func:`grad_scaler`); autocast to fp16 on the CPU is supported by torch >= 2.4.

:func:`runtime_info` is what records and reports state about the machine: the device and its name, the
precision, the torch / CUDA / Triton versions and ``CUDA_VISIBLE_DEVICES`` (which GPU a Ray task was given).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

import torch

DEVICES_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_NAME = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")


class DeviceError(ValueError):
    """A device that this process cannot use, or a bad device / precision name; one line."""


def check_device_name(name: Any) -> str:
    """``name`` if it is a valid device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``), else DeviceError."""
    if not isinstance(name, str) or _NAME.match(name) is None:
        raise DeviceError(f"expected {DEVICES_HELP}, got {name!r}")
    return name


def check_precision(name: Any) -> str:
    """``name`` if it is one of :data:`PRECISIONS`, else DeviceError."""
    if name not in PRECISIONS:
        raise DeviceError(f"expected one of {list(PRECISIONS)}, got {name!r}")
    return name


def device_problem(name: str) -> str | None:
    """None when this process can compute on the device ``name``, else what is wrong (one line)."""
    check_device_name(name)
    if name in ("auto", "cpu"):
        return None
    count = torch.cuda.device_count()  # does not initialise CUDA
    if count == 0:
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return f"device {name!r} needs a CUDA GPU, but this process sees none ({build})"
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= count:
        return f"device {name!r}: this process sees {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})"
    return None


def resolve_device(name: str = "auto", where: str | None = None) -> torch.device:
    """The ``torch.device`` a device name means here (``auto``: ``cuda`` when a GPU is visible, else ``cpu``).

    Raises:
        DeviceError: a malformed name, or a CUDA device this process does not see (prefixed by ``where``,
            the flag or config key that named the device, when given).
    """
    try:
        problem = device_problem(name)
    except DeviceError as error:
        problem = str(error)
    if problem is not None:
        raise DeviceError(problem if where is None else f"{where}: {problem}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.device_count() > 0 else "cpu")
    return torch.device(name)


def use_device(name: str = "auto", where: str | None = None) -> torch.device:
    """:func:`resolve_device`, and for a CUDA device also make it this process's current device: Triton
    launches its kernels on the current device, so ``cuda:1`` must be current for tensors there.

    Raises:
        DeviceError: as :func:`resolve_device`.
    """
    device = resolve_device(name, where)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None for ``fp32``: no autocast)."""
    dtype = _DTYPES[check_precision(precision)]
    return None if dtype is torch.float32 else dtype


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """Autocast on ``device``'s type at ``precision`` for the forward passes inside (``fp32``: nothing)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield


def grad_scaler(device: torch.device | str, precision: str) -> Any:
    """A ``torch.amp.GradScaler`` for ``fp16`` training on ``device``; None at other precisions."""
    if check_precision(precision) != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def runtime_info(device: torch.device | str, precision: str) -> dict[str, Any]:
    """What a record states about where it was computed: device, device name, precision, torch / CUDA /
    Triton versions (None when absent). Reads the GPU's name only for a CUDA device."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        import platform

        name = platform.processor() or platform.machine() or "cpu"
    try:
        from importlib.metadata import version

        triton = version("triton")
    except Exception:  # noqa: BLE001 - Triton is optional on the CPU
        triton = None
    return {"device": str(device), "device_name": name, "precision": check_precision(precision),
            "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


__all__ = ["DEVICES_HELP", "PRECISIONS", "DeviceError", "autocast", "autocast_dtype", "check_device_name",
           "check_precision", "device_problem", "grad_scaler", "resolve_device", "runtime_info",
           "use_device"]
