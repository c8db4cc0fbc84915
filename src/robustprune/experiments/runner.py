"""The resumable sweep runner: model + data -> pruned models -> evaluations -> one record per point.

For each seed the runner prepares the model every point starts from (protocol
``finetune_then_prune``: the pre-trained model fine-tuned once, checkpointed to
``<out>/checkpoints/``; ``prune_then_finetune``: the pre-trained model, each pruned copy then
fine-tuned with its mask fixed; a per-method ``protocol`` mapping keeps both), evaluates the dense point
once, then prunes a fresh copy per (method, pattern, sparsity) and evaluates it. Every finished point is appended to
``<out>/results.jsonl`` at once (see :mod:`robustprune.experiments.results`), so an interrupted run
keeps it and a re-run of the same config skips it.

Sweep-aware work: unstructured magnitude masks come from one selection per seed for all sparsities
(:class:`~robustprune.pruners.magnitude.MagnitudeSweep`, nested masks); with
``pruning.calibration.reuse_statistics`` Wanda's input norms and SparseGPT's Hessians are collected
once per seed on the dense model; shifted evaluation sets are built once per run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustprune.devices import use_device
from robustprune.experiments.config import ExperimentConfig
from robustprune.experiments.methods import PointPruner, check_against_data
from robustprune.experiments.points import (
    Evaluator,
    Point,
    PointResult,
    SeedSetup,
    SweepData,
    compute_point,
    load_sweep_data,
    prepare_seed,
    sweep_points,
)
from robustprune.experiments.protocol import write_protocol_report
from robustprune.experiments.results import ResultsFile, ResultsMismatchError, lock_output

logger = logging.getLogger(__name__)



def _require_method_settings(config: ExperimentConfig, results: ResultsFile, fingerprint: str) -> None:
    """Refuse to resume into results whose trained-method points were made with other block settings."""
    for record in results.records():
        method = record.get("method")
        if record.get("fingerprint") != fingerprint or config.method_fingerprint(method) is None:
            continue
        if record.get("method_settings") != config.method_fingerprint(method):
            raise ResultsMismatchError(
                f"{results.path} holds {method} points made with other 'pruning.{method}' settings; use another "
                f"output folder, or restore those settings to resume")


def _write_point_file(out: Path, folder: str, point: Point, payload: dict[str, Any], indent: int | None) -> str:
    """``payload`` as ``<out>/<folder>/<point key>.json`` (atomic replace); returns the path relative to
    ``out``, as records reference it."""
    safe = point.key.replace("|", "__").replace("=", "-")
    path = out / folder / f"{safe}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(payload, indent=indent, separators=None if indent else (",", ":")),
                       encoding="utf-8")
    os.replace(partial, path)
    return f"{folder}/{path.name}"


@dataclass(frozen=True)
class RunSummary:
    results_path: Path
    computed: list[str]
    skipped: list[str]


def run_experiment(config: ExperimentConfig, out_dir: str | Path, *, progress: bool = True,
                   on_point: Callable[[dict[str, Any]], None] | None = None, executor: str = "local",
                   address: str | None = None) -> RunSummary:
    """Run (or resume) the sweep of ``config`` into ``out_dir``.

    Args:
        config: a validated config (:func:`robustprune.experiments.config.load_config`).
        out_dir: results directory: ``results.jsonl`` (one record per point), ``config.json``,
            ``checkpoints/`` (fine-tuned dense models), ``predictions/`` (per point, every evaluated
            example's predicted and true label, and each attacked example's status and queries) and
            ``examples/`` (per point, every attacked text and its perturbation); each record names its
            two files under ``files``.
        progress: progress bars for the sweep and its long steps.
        on_point: called with each record right after it is written (e.g. to print it).
        executor: ``"local"`` (this process, point after point) or ``"ray"``: every point a Ray task
            (:mod:`robustprune.experiments.distributed`; ``pip install "robustprune[ray]"``), on a local Ray
            started for the run or, with ``address``, on that cluster. The records are the same (timings
            aside); only this process writes results.
        address: a Ray cluster's address (``"ray://head:10001"`` or ``"auto"``) for ``executor="ray"``.

    Every stage computes on ``config.device``, resolved once (:func:`robustprune.devices.use_device`):
    here for the local executor, in each task for Ray (whose tasks ask for ``config.resources`` GPUs when the
    cluster has GPUs and the device is not ``cpu``); this process then never initialises CUDA.

    Returns:
        Which point keys were computed now and which were already done.

    Raises:
        MissingResourcesError: models, packages, files or the CUDA device the config needs are missing (all
            named at once; checked before anything is written or trained).
        FileNotFoundError / ValueError: malformed data, before any training.
        OutputLockedError: another run holds ``out_dir``.
        ResultsMismatchError: ``out_dir`` holds results of another config.
        PermissionError: ``out_dir`` or its results file is not writable (checked before any work).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if address is not None and executor != "ray":
        raise ValueError("address is a Ray cluster's address: use it with executor='ray'")
    from robustprune.experiments.resources import check_resources

    check_resources(config, executor)  # every missing model, package or file named at once, before any work
    out = Path(out_dir)
    data = load_sweep_data(config)  # malformed data surfaces before any work too
    check_against_data(config, data.train)
    with lock_output(out):
        return _run_locked(config, data, out, progress, on_point, executor, address)


EXECUTORS = ("local", "ray")


def _run_locked(config: ExperimentConfig, data: SweepData, out: Path, progress: bool,
                on_point: Callable[[dict[str, Any]], None] | None, executor: str, address: str | None
                ) -> RunSummary:
    from tqdm.auto import tqdm

    results = ResultsFile(out / "results.jsonl")
    results.check_writable()
    fingerprint = config.fingerprint()
    results.require_fingerprint(fingerprint)
    _require_method_settings(config, results, fingerprint)
    config_json = out / "config.json"
    partial = config_json.with_suffix(".partial")
    partial.write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
    os.replace(partial, config_json)
    write_protocol_report(config.to_dict(), out / "report" / "protocol.md")  # how this run differs from its paper
    done = results.done(fingerprint)
    points = sweep_points(config)
    todo = [p for p in points if p.key not in done]
    skipped = [p.key for p in points if p.key in done]
    if skipped:
        logger.info("%d of %d points already in %s: skipped", len(skipped), len(points), results.path)
    evaluator = Evaluator(config, data, progress)
    computed: list[str] = []
    bar = tqdm(total=len(todo), desc=f"sweep {config.name}", unit="point", disable=not progress)

    def finish(result: PointResult) -> None:
        """Only here are results written: the point's files, then its record (one appended line)."""
        point = result.point
        files = {"predictions": _write_point_file(out, "predictions", point, result.predictions, None)}
        if result.examples:
            files["examples"] = _write_point_file(out, "examples", point, result.examples, 1)
        record = {"key": point.key, "fingerprint": fingerprint, "experiment": config.name, **result.record,
                  "files": files}
        results.append(record)
        PointPruner.finished(out / "checkpoints" / fingerprint, config, point)
        computed.append(point.key)
        bar.update(1)
        if on_point is not None:
            on_point(record)

    try:
        if executor == "ray":
            from robustprune.experiments.distributed import run_on_ray

            run_on_ray(config, data, out, todo, evaluator, finish, address=address, progress=progress)
            return RunSummary(results.path, computed, skipped)
        device = use_device(config.device)  # the one device of this run, checked by check_resources
        for seed in config.seeds:
            seed_points = [p for p in todo if p.seed == seed]
            if not seed_points:
                continue
            setup = prepare_seed(config, data, out, seed, progress, device)
            pruner = PointPruner(config, setup.base, setup.tokenizer, data.train, seed,
                                 out / "checkpoints" / fingerprint, progress, pretrained=setup.pretrained,
                                 robust=data.robust)
            for point in seed_points:
                bar.set_postfix_str(f"{point.method} {point.pattern} {point.sparsity:.2f}")
                finish(compute_point(config, setup, pruner, evaluator, point, progress))
    finally:
        bar.close()
    return RunSummary(results.path, computed, skipped)


__all__ = ["EXECUTORS", "Point", "PointResult", "RunSummary", "SeedSetup", "compute_point", "load_sweep_data",
           "prepare_seed", "run_experiment", "sweep_points"]
