"""The Ray executor: every point of a sweep a Ray task, on a local Ray or a cluster.

Per seed one task does the work the points share, once: the dense fine-tuning (checkpointed as
in-process), the magnitude selection, reused calibration statistics, IMP's rewind point, Robust Tickets'
mask learning; the driver (the ``robustprune run`` process) builds the shifted evaluation sets. The shared
work stays in Ray's object store and the driver submits one task per point; each task rebuilds the base
model from the shared state, prunes, trains and evaluates, and returns its record and per-example
payloads.

Devices: every task resolves the config's device itself (:func:`robustprune.devices.use_device`), so
the driver never initialises CUDA and needs no GPU. When the device is not ``cpu`` and the cluster has
GPUs, each task asks for ``resources.gpus_per_point`` of them (a fraction shares a GPU) and Ray makes only
its GPU visible to it (``CUDA_VISIBLE_DEVICES``, stated in each record's ``runtime``); ``device: cuda``
on a cluster without GPUs is an error before any task, ``auto`` then computes on the CPU. A fixed
``cuda:N`` is refused: a task sees only the GPU Ray gave it. Only the driver writes: files and
the record of each point as soon as it returns, so an interrupted run keeps every finished point and a
re-run computes only the rest. A task whose worker dies is retried by Ray (``max_retries``); a task that
raises stops the run with that error.

Trained methods checkpoint under the output folder: on a cluster, put ``--out`` on storage every node
sees for their training to resume after a lost worker (otherwise a retried point trains from the start).

Install with ``pip install "robustprune[ray]"``. Workers need robustprune and the model and data it reads
(the bundled MiniLM and SST-2 sample ship with the packages).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from robustprune.devices import use_device
from robustprune.experiments.config import ExperimentConfig
from robustprune.experiments.methods import PointPruner, load_sweep_classifier
from robustprune.experiments.points import (
    Evaluator,
    Point,
    PointResult,
    SeedSetup,
    SweepData,
    compute_point,
    mixed_pretrained,
    prepare_seed,
)

logger = logging.getLogger(__name__)
MAX_RETRIES = 3  # attempts after a worker dies (Ray's own retries; an exception in the task is not retried)


def _seed_task(config: ExperimentConfig, data: SweepData, out: str, seed: int, points: list[Point], device: str,
               progress: bool) -> tuple[dict[str, torch.Tensor], float, dict[str, Any]]:
    """The work one seed's points share, in a Ray worker on ``device``: (the base model's state, the seconds
    its fine-tuning took, :meth:`PointPruner.shared_work`)."""
    setup = prepare_seed(config, data, Path(out), seed, progress, use_device(device))
    checkpoints = Path(out) / "checkpoints" / config.fingerprint()
    pruner = PointPruner(config, setup.base, setup.tokenizer, data.train, seed, checkpoints, progress,
                         pretrained=setup.pretrained, robust=data.robust)
    shared = pruner.shared_work(points)
    base_state = {k: v.detach().clone() for k, v in setup.base.state_dict().items()}
    return base_state, setup.dense_finetune_seconds, shared


def _point_task(config: ExperimentConfig, data: SweepData, point: Point, base_state: dict[str, torch.Tensor],
                dense_finetune_seconds: float, shared: dict[str, Any], shifted: dict[str, Any],
                checkpoints: str, device: str) -> PointResult:
    """One point in a Ray worker on ``device``: the seed's base rebuilt from ``base_state`` (and, when the sweep
    mixes protocols, the pre-trained model loaded as the seed's was), the shared work adopted."""
    model, tokenizer = load_sweep_classifier(config, data.train.num_labels, point.seed, use_device(device))
    model.load_state_dict(base_state)
    pretrained = mixed_pretrained(config, data.train.num_labels, point.seed, use_device(device))
    setup = SeedSetup(point.seed, model.eval(), tokenizer, dense_finetune_seconds, pretrained)
    pruner = PointPruner(config, setup.base, tokenizer, data.train, point.seed, Path(checkpoints), progress=False,
                         pretrained=pretrained, robust=data.robust)
    pruner.adopt(shared)
    evaluator = Evaluator(config, data, progress=False)
    evaluator.adopt(shifted)
    return compute_point(config, setup, pruner, evaluator, point, progress=False)


def _start_ray(address: str | None) -> bool:
    """Connect to ``address``, or start a local Ray with this machine's CPUs; True if this call started it."""
    try:
        import ray
    except ImportError:
        raise ImportError('the Ray executor needs Ray: pip install "robustprune[ray]"') from None
    if ray.is_initialized():
        return False
    # Workers read the packaged model and data: never reach for a hub from a worker.
    env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                        "TOKENIZERS_PARALLELISM": "false"}}
    if address is None:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=env, logging_level=logging.WARNING)
    else:
        ray.init(address=address, runtime_env=env, logging_level=logging.WARNING)
    return True


def task_resources(config: ExperimentConfig, cluster_gpus: float) -> tuple[dict[str, float], str]:
    """(what each task asks Ray for, the device name each task resolves) for ``config`` on a cluster with
    ``cluster_gpus`` GPUs.

    Raises:
        ValueError: ``device: cuda:N`` (a task sees only its own GPU), ``device: cuda`` on a cluster without
            GPUs, or ``resources.gpus_per_point`` larger than the cluster's GPUs.
    """
    device, gpus = config.device, config.resources.gpus_per_point
    if device.startswith("cuda:"):
        raise ValueError(f"config key 'device': {device!r} pins one GPU, but a Ray task sees only the GPU Ray "
                         "gives it; use device 'cuda' (or 'auto') with resources.gpus_per_point")
    if device == "cpu" or (device == "auto" and cluster_gpus == 0):
        return {"num_cpus": 1}, "cpu"
    if cluster_gpus == 0:
        raise ValueError("config key 'device': 'cuda' needs GPUs, but the Ray cluster has none; run with "
                         "--device cpu, or on a cluster whose nodes declare GPUs")
    if gpus > cluster_gpus:
        raise ValueError(f"config key 'resources.gpus_per_point': {gpus:g} GPUs per point, but the Ray cluster "
                         f"has {cluster_gpus:g}")
    return {"num_cpus": 1, "num_gpus": gpus}, device


def run_on_ray(config: ExperimentConfig, data: SweepData, out: Path, todo: Sequence[Point], evaluator: Evaluator,
               finish: Callable[[PointResult], None], *, address: str | None = None, progress: bool = True) -> None:
    """Compute ``todo`` as Ray tasks, calling ``finish`` (which writes) in this process as each returns.

    Raises:
        ImportError: Ray is not installed.
        The error of the first point whose task raised (Ray's wrapper removed).
    """
    import ray

    started = _start_ray(address)
    try:
        options, device = task_resources(config, float(ray.cluster_resources().get("GPU", 0)))
        task = ray.remote(max_retries=MAX_RETRIES, **options)(_point_task)
        seed_task = ray.remote(max_retries=MAX_RETRIES, num_returns=3, **options)(_seed_task)
        data_ref = ray.put(data)
        shifted_ref = ray.put(evaluator.shifted_sets())
        checkpoints = out / "checkpoints" / config.fingerprint()
        for seed in config.seeds:
            seed_points = [p for p in todo if p.seed == seed]
            if not seed_points:
                continue
            # the shared work's tensors may live on a GPU: the driver passes them on without fetching them
            base_ref, seconds_ref, shared_ref = seed_task.remote(config, data_ref, str(out), seed, seed_points,
                                                                 device, progress)
            try:
                seconds = ray.get(seconds_ref)
            except ray.exceptions.RayTaskError as error:
                cause = error.as_instanceof_cause()
                raise getattr(cause, "cause", None) or cause from None
            pending = {task.remote(config, data_ref, point, base_ref, seconds, shared_ref, shifted_ref,
                                   str(checkpoints), device): point for point in seed_points}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                point = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayTaskError as error:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    cause = error.as_instanceof_cause()
                    raise getattr(cause, "cause", None) or cause from None
                logger.debug("point %s done", point.key)
                finish(result)
    finally:
        if started:
            ray.shutdown()


def _attack_shard(classifier: Any, dataset: Any, recipe: str, examples: list[int], options: dict[str, Any]) -> Any:
    from robustprune.eval.attacks.attack import attack

    return attack(classifier, dataset, recipe, examples=examples, progress=False, **options)


def attack_on_ray(classifier: Any, dataset: Any, recipe: str, *, shards: int | None = None,
                  max_examples: int | None = None, address: str | None = None, **options: Any) -> Any:
    """:func:`robustprune.eval.attacks.attack` over a dataset split into ``shards`` Ray tasks (default:
    the cluster's CPUs), on a local Ray or the cluster at ``address``; the same per-example results as one
    process (each example's attack depends only on the model, the example and the recipe).

    ``recipe`` is a name (each worker builds it, loading its resources); ``options`` are ``attack``'s
    (query_budget, batch_size, perturb, recipe options). The report's ``seconds`` is this call's wall time;
    model calls and texts scored are summed over the shards. A worker that dies is retried by Ray.

    Raises:
        ImportError: Ray is not installed.
        The first shard's error (Ray's wrapper removed).
    """
    import time

    import ray

    from robustprune.eval.attacks.attack import merge_reports

    start = time.perf_counter()
    count = len(dataset) if max_examples is None else min(max_examples, len(dataset))
    started = _start_ray(address)
    try:
        shards = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
        if not isinstance(shards, int) or shards < 1:
            raise ValueError(f"shards must be a positive int or None, got {shards!r}")
        size = -(-count // shards)  # contiguous shards: neighbouring examples share the prediction cache
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_attack_shard)
        classifier_ref, dataset_ref = ray.put(classifier), ray.put(dataset)
        refs = [task.remote(classifier_ref, dataset_ref, recipe, list(range(first, min(first + size, count))), options)
                for first in range(0, count, size)]
        try:
            reports = ray.get(refs)
        except ray.exceptions.RayTaskError as error:
            cause = error.as_instanceof_cause()
            raise getattr(cause, "cause", None) or cause from None
    finally:
        if started:
            ray.shutdown()
    merged = merge_reports(reports)
    return dataclasses.replace(merged, seconds=time.perf_counter() - start)


__all__ = ["MAX_RETRIES", "attack_on_ray", "run_on_ray", "task_resources"]
