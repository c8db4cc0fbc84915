"""The native kernels' own tests need llvmlite: not collected where it is hidden or missing (the op tests
then check the eager paths)."""

import importlib.util
import sys

_NATIVE_KERNEL_TESTS = ["test_native.py", "test_cpu_threads.py", "test_nm_mask_cpu.py", "test_nm_linear_cpu.py",
                        "test_cross_target.py"]


def _llvmlite_importable() -> bool:
    if "llvmlite" in sys.modules:
        return sys.modules["llvmlite"] is not None
    return importlib.util.find_spec("llvmlite") is not None


collect_ignore = [] if _llvmlite_importable() else _NATIVE_KERNEL_TESTS
