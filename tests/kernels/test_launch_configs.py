"""Launch configs of the autotuned kernels: the interpreter's single default, the configs each group size
M may pick on CUDA, the batch buckets of the tuning key, and the cost model's default tile."""

from __future__ import annotations

import pytest

from robustprune.kernels import hard_concrete, nm_matmul
from robustprune.sparse_ops.backend import triton_interpreter_active

TUNED = (nm_matmul.nm_linear_kernel, nm_matmul.nm_linear_grad_input_kernel, nm_matmul.nm_linear_grad_values_kernel)


@pytest.mark.skipif(not triton_interpreter_active(), reason="needs TRITON_INTERPRET=1")
def test_the_interpreter_runs_one_default_config():
    for kernel in TUNED:
        assert kernel.configs == [nm_matmul.DEFAULT]
    for kernel in (hard_concrete.hard_concrete_forward_kernel, hard_concrete.hard_concrete_backward_kernel):
        assert kernel.configs == hard_concrete.CONFIGS[:1]


@pytest.mark.parametrize("configs", [nm_matmul.NM_LINEAR_CONFIGS, nm_matmul.GRAD_INPUT_CONFIGS,
                                     nm_matmul.GRAD_VALUES_CONFIGS])
@pytest.mark.parametrize("m", [4, 8, 16])
def test_each_group_size_keeps_whole_groups_and_one_default(configs, m):
    kept = nm_matmul.configs_for_group_size(configs, m)
    assert kept[0] == (nm_matmul.DEFAULT_M16 if m == 16 else nm_matmul.DEFAULT)
    assert all(c.kwargs["BLOCK_K"] % m == 0 and c.kwargs["BLOCK_K"] >= 2 * m for c in kept)
    assert nm_matmul.DEFAULT_M16 not in kept[1:] and (m != 16 or nm_matmul.DEFAULT not in kept)
    assert [c for c in configs if c in kept] == kept  # the list's order, so its default stays first


def test_batch_buckets():
    assert [nm_matmul.batch_bucket(b) for b in (1, 16, 17, 64, 65, 256, 257, 10_000)] == [16, 16, 32, 64, 128, 256,
                                                                                            256, 256]


def test_cost_model_defaults_to_the_default_tile_of_the_group_size():
    # bytes read: x once per BLOCK_O column tile of W, W once per BLOCK_B row tile of x
    assert nm_matmul.nm_linear_cost(16, 64, 128, 2, 4, 2) == nm_matmul.nm_linear_cost(16, 64, 128, 2, 4, 2, 16, 32)
    assert nm_matmul.nm_linear_cost(16, 64, 128, 8, 16, 2) == nm_matmul.nm_linear_cost(16, 64, 128, 8, 16, 2, 16, 16)
    small, large = (nm_matmul.nm_linear_cost(256, 64, 128, 2, 4, 2, block_b, 32)[0] for block_b in (16, 64))
    assert small - large == 64 * 128 // 2 * (2 + 2 / 8) * (16 - 4)
