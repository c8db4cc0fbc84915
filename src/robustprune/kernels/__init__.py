"""Triton kernels and their launch wrappers. Pure: no torch.library registration happens here.

Every kernel works on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (how CI checks them).
Bytes and FLOPs per launch are documented next to each launcher for roofline checks on a GPU.
"""

from __future__ import annotations

import os

# Read once, at import, like triton itself reads it: the kernels are built for one mode or the other.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def tuning_configs(configs: list) -> list:
    """The ``triton.autotune`` configs to use: all of ``configs`` on a GPU; under the interpreter only the
    first, the default (there is no GPU to time on, and ``triton.autotune`` needs exactly one config there)."""
    return configs[:1] if INTERPRETED else list(configs)
