"""pytest setup for the benchmark suites in ``bench/``.

The project's ``testpaths`` is ``tests``, so a plain ``pytest`` never collects these. Run them with::

    python -m pytest bench/ --benchmark-only

If ``bench/`` is collected without ``--benchmark-only`` (e.g. ``pytest .``), its tests are skipped: the
torch.nn.utils.prune baseline alone takes ~20 s, which has no place in a correctness run.
"""

from __future__ import annotations

import pytest
import torch

from bench.workloads import bert_base_weights, square_matrix


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `python -m pytest bench/ --benchmark-only`")
    for item in items:
        if item.path.is_relative_to(config.rootpath / "bench"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bert_weights() -> list[torch.Tensor]:
    """BERT-base-shaped fp32 encoder weights (85M). Read-only: benchmarks that prune clone them."""
    return bert_base_weights(seed=0)


@pytest.fixture(scope="session")
def matrix_4096() -> torch.Tensor:
    """A 4096x4096 fp32 randn matrix (no ties within N:M groups). Read-only."""
    return square_matrix(4096, torch.float32)
