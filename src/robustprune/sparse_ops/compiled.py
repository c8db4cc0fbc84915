"""The switch between an op's compiled CPU kernel and its eager torch path, shared by the ops that have one.

This module imports neither llvmlite nor a kernel module: an op module (``nm.py``, ``nm_linear.py``) holds a
:class:`CompiledRoute` and asks it for the kernel module on each CPU call. The route imports the module
(``robustprune.sparse_ops.<name>``, which needs llvmlite) on first use and answers None, so the op runs its
eager path, when

- the op's environment switch (e.g. ``ROBUSTPRUNE_NM_MASK_CPU``) is ``eager``;
- the kernel module cannot be imported (llvmlite missing or broken): one ``RuntimeWarning`` per process
  names the error;
- building a kernel failed (:class:`KernelBuildError`: LLVM refused the IR, the object code needs a symbol
  outside the allowed set, the JIT could not load it): one ``RuntimeWarning`` per route names it, and the
  route stays on the eager path for the rest of the process.

Only :class:`KernelBuildError` switches a route off: any other error of a kernel call (a bug, a bad
argument) reaches the caller.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")

_CHOICES = ("", "compiled", "eager")


class KernelBuildError(RuntimeError):
    """A native kernel could not be compiled or loaded on this machine; the op runs its eager path."""


def eager_cpu_forced(variable: str) -> bool:
    """Whether the environment switch ``variable`` (``eager``, ``compiled`` or unset: compiled) asks for
    the eager torch CPU path; any other value is refused, naming the variable."""
    choice = os.environ.get(variable, "").strip().lower()
    if choice not in _CHOICES:
        raise ValueError(f"environment variable {variable} must be 'eager' or 'compiled' (or unset), "
                         f"got {choice!r}")
    return choice == "eager"


_import_lock = threading.Lock()
_import_failure: str | None = None  # why kernel modules cannot be imported in this process (warned once)


def _import_kernel_module(name: str) -> ModuleType | None:
    global _import_failure
    with _import_lock:
        if _import_failure is not None:
            return None
        try:
            return importlib.import_module(f"robustprune.sparse_ops.{name}")
        # llvmlite missing (ImportError), or its LLVM library failing to load (llvmlite raises OSError)
        except (ImportError, OSError) as error:
            _import_failure = f"{type(error).__name__}: {error}"
            warnings.warn(f"robustprune's compiled CPU kernels are unavailable ({_import_failure}); the ops run "
                          "their eager torch paths", RuntimeWarning, stacklevel=4)
            return None


class CompiledRoute:
    """An op's compiled CPU kernel module, switched by an environment variable (see the module docstring).

    Args:
        module: name of the kernel module inside :mod:`robustprune.sparse_ops` (``"nm_mask_cpu"``).
        switch: the environment variable choosing ``eager`` or ``compiled`` (the default).
        op: the op's name, for the warning.
    """

    def __init__(self, module: str, switch: str, op: str):
        self.module_name, self.switch, self.op = module, switch, op
        self._module: ModuleType | None = None
        self.failure: str | None = None  # the kernel build error that switched this route off

    def module(self) -> ModuleType | None:
        """The kernel module, or None where the op must run its eager path."""
        if eager_cpu_forced(self.switch) or self.failure is not None:
            return None
        if self._module is None:
            self._module = _import_kernel_module(self.module_name)
        return self._module

    def available(self) -> bool:
        """Whether the op's CPU calls run the compiled kernel (as far as is known before building it)."""
        return self.module() is not None

    def run(self, call: Callable[[ModuleType], T]) -> T | None:
        """``call(module)``, or None (run the eager path) when the route is off or a kernel fails to build."""
        module = self.module()
        if module is None:
            return None
        try:
            return call(module)
        except KernelBuildError as error:
            self.switch_off(error)
            return None

    def switch_off(self, error: BaseException) -> None:
        """Run the eager path from now on in this process, with one warning naming ``error``."""
        if self.failure is None:
            self.failure = f"{type(error).__name__}: {error}"
            warnings.warn(f"robustprune::{self.op}: the compiled CPU kernel failed to build ({self.failure}); "
                          "running the eager torch path", RuntimeWarning, stacklevel=4)
