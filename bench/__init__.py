"""Benchmarks for robustprune: pytest-benchmark suites and the side-by-side ``bench.compare`` script."""
