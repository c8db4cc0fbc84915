"""Kernel tests; ``REAL_SHAPES``: the benchmarks' BERT-base / LLaMA-7B weight shapes, one pytest param each
(named ``family-rowsxcols``), which the CUDA-marked tests run at."""

import pytest

from bench.gpu import SHAPES

REAL_SHAPES = [pytest.param(shape, id=f"{family}-{shape[0]}x{shape[1]}")
               for family, shapes in SHAPES.items() for shape in shapes]
