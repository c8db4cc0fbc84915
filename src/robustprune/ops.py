"""The ``robustprune::`` custom ops and their helpers: the low-level tier under the pruners.

Each op has a vectorised CPU implementation, a CUDA implementation that launches a Triton kernel and a
fake implementation for ``torch.compile``; see :mod:`robustprune.sparse_ops` for the code.

``route("triton")`` (a context manager) sends the ops' CPU tensors through their CUDA implementations,
the Triton kernels, under ``TRITON_INTERPRET=1``; :func:`launch_counts` counts the calls of each op's
Triton implementation (CUDA tensors or the route), :func:`reset_launch_counts` starts them from zero;
inside :func:`record_devices`, :func:`launch_devices` also keeps the devices of the tensors each op received.

Two environment variables reach a whole process (a child process, say), read when the ops are first imported:
``ROBUSTPRUNE_ROUTE=triton`` takes the Triton route from the start, and ``ROBUSTPRUNE_LAUNCH_LOG=FILE``
records devices from the start and writes :func:`launch_report` (counts and devices) to FILE as JSON when
the process exits. ``python -m bench.gpu --acceptance`` checks a GPU run with them.
"""

from robustprune.sparse_ops.backend import (
    ROUTES,
    launch_counts,
    launch_devices,
    launch_report,
    record_devices,
    reset_launch_counts,
    route,
)
from robustprune.sparse_ops.hard_concrete import hard_concrete_gate, sample_hard_concrete_noise
from robustprune.sparse_ops.magnitude import magnitude_mask_, magnitude_thresholds
from robustprune.sparse_ops.masks import pack_mask, packed_size, unpack_mask
from robustprune.sparse_ops.nm import nm_mask
from robustprune.sparse_ops.nm_format import nm_compress, nm_decompress
from robustprune.sparse_ops.nm_linear import nm_linear
from robustprune.sparse_ops.obs import sparsegpt_hinv, sparsegpt_prune_
from robustprune.sparse_ops.patterns import NMPattern, parse_pattern
from robustprune.sparse_ops.scores import score_keep_mask, score_thresholds

__all__ = [
    "ROUTES",
    "NMPattern",
    "hard_concrete_gate",
    "launch_counts",
    "launch_devices",
    "launch_report",
    "magnitude_mask_",
    "magnitude_thresholds",
    "nm_compress",
    "nm_decompress",
    "nm_linear",
    "nm_mask",
    "pack_mask",
    "packed_size",
    "parse_pattern",
    "record_devices",
    "reset_launch_counts",
    "route",
    "sample_hard_concrete_noise",
    "score_keep_mask",
    "score_thresholds",
    "sparsegpt_hinv",
    "sparsegpt_prune_",
    "unpack_mask",
]
