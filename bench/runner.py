"""The sweep runner's own cost per point, in-process and on Ray: ``python -m bench.runner``.

A sweep of cheap points (magnitude and random masks at 9 sparsities and 2:4 on MiniLM, clean accuracy on 24
dev sentences) runs once per executor into a fresh folder. In-process, the runner's overhead per point is
the wall time minus everything the records time (the dense fine-tuning, each point's pruning and
evaluations), divided by the points. On Ray, with 2 workers, points overlap, so the comparison is the
wall time of the same sweep against the in-process run, with Ray's start-up reported apart.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from robustprune.experiments.config import parse_config
from robustprune.experiments.results import ResultsFile
from robustprune.experiments.runner import run_experiment

GOAL_SECONDS = 1.0  # issue: the runner's own overhead per point stays under 1 s


def bench_config(sparsities: int) -> dict:
    return {
        "name": "runner-overhead",
        "data": {"data_dir": "sst2-sample", "max_train_examples": 48, "max_eval_examples": 24},
        "finetune": {"epochs": 1.0, "batch_size": 16, "max_length": 32},
        "pruning": {"methods": ["magnitude", "random"], "patterns": ["unstructured", "2:4"],
                    "sparsities": [round(0.1 * (i + 1), 1) for i in range(sparsities)]},
        "evaluation": {"clean": True},
    }


def timed_run(executor: str, raw: dict) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run_experiment(parse_config(raw), folder, progress=False, executor=executor)
        wall = time.perf_counter() - start
        return wall, ResultsFile(Path(folder) / "results.jsonl").records()


def measured_work(records: list[dict]) -> float:
    return sum(r["prune_seconds"] + r["finetune_seconds"] + sum(r["timings"].values()) for r in records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 sparsities instead of 9")
    parser.add_argument("--no-ray", action="store_true", help="the in-process executor only")
    args = parser.parse_args(argv)
    raw = bench_config(3 if args.quick else 9)
    local_wall, records = timed_run("local", raw)
    overhead = (local_wall - measured_work(records)) / len(records)
    print(f"in-process: {len(records)} points in {local_wall:.1f} s; measured work {measured_work(records):.1f} s; "
          f"runner overhead {overhead:.3f} s per point (goal < {GOAL_SECONDS:g} s: "
          f"{'MET' if overhead < GOAL_SECONDS else 'NOT MET'})")
    if args.no_ray:
        return
    import ray

    start = time.perf_counter()
    ray.init(include_dashboard=False)
    ray_start = time.perf_counter() - start
    try:
        ray_wall, ray_records = timed_run("ray", raw)
    finally:
        ray.shutdown()
    per_point = (ray_wall - local_wall) / len(ray_records)
    print(f"ray (local, one task per CPU): start {ray_start:.1f} s, then {len(ray_records)} points in {ray_wall:.1f} s = "
          f"{ray_wall / local_wall:.2f}x the in-process wall time ({per_point:+.2f} s per point)")


if __name__ == "__main__":
    main()
