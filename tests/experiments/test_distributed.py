"""The Ray executor on a real local Ray (2 CPUs, started for the run): the same records as the in-process
executor, only the driver writes, and a worker killed mid-point is retried without recomputing finished
points."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from robustprune.experiments.config import parse_config
from robustprune.experiments.demo import demo_config_dict
from robustprune.experiments.results import ResultsFile
from robustprune.experiments.runner import run_experiment, sweep_points

ray = pytest.importorskip("ray", reason='the Ray executor needs Ray: pip install "robustprune[ray]"')

# what may differ between executors: wall-clock times
TIMING_KEYS = {"prune_seconds", "finetune_seconds", "timings"}


def sweep_config():
    raw = demo_config_dict()
    raw["name"] = "distributed"
    raw["data"].update({"max_train_examples": 48, "max_eval_examples": 24})
    raw["finetune"].update({"epochs": 1.0, "max_length": 32, "batch_size": 8, "checkpoint_every": 2})
    raw["pruning"] = {"methods": ["magnitude", "wanda", "random", "imp"], "patterns": ["unstructured", "2:4"],
                      "sparsities": [0.3, 0.6], "imp": {"prune_rate": 0.4},
                      "calibration": {"samples": 8, "seq_len": 32, "reuse_statistics": True}}
    raw["evaluation"] = {"clean": True, "attacks": [{"recipe": "deepwordbug", "max_examples": 3}],
                         "shifts": ["char_swap"]}
    return parse_config(raw)


def comparable(record):
    """A record without its wall-clock measurements (the points' times, the attacks' speeds) and without the
    GPU Ray gave its task (``runtime.cuda_visible_devices``)."""
    out = {k: v for k, v in record.items() if k not in TIMING_KEYS}
    out["runtime"] = {k: v for k, v in record["runtime"].items() if k != "cuda_visible_devices"}
    out["details"] = {k: v for k, v in record.get("details", {}).items() if not k.endswith("seconds")}
    out["attacks"] = {recipe: {**summary, "metrics": {k: v for k, v in summary["metrics"].items()
                                                      if not k.endswith(("seconds", "per_second"))}}
                      for recipe, summary in record.get("attacks", {}).items()}
    return out


def by_key(out):
    return {r["key"]: comparable(r) for r in ResultsFile(Path(out) / "results.jsonl").records()}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    run_experiment(sweep_config(), out, progress=False)
    return out


def _kill_first_point_worker(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Ray worker seen running a point (Ray titles it ``ray::_point_task``)."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::_point_task") or b"ray::_point_task" in cmdline[:64]:
                time.sleep(1.0)  # let it get into its point
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_ray_records_equal_local_and_survive_a_killed_worker(local_run, tmp_path):
    config = sweep_config()
    out = tmp_path / "ray"
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_point_worker, args=(stop, killed), daemon=True)
    killer.start()
    try:
        summary = run_experiment(config, out, progress=False, executor="ray")
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker ran a point"
    assert not ray.is_initialized()  # the run started its local Ray and shut it down
    keys = [p.key for p in sweep_points(config)]
    assert sorted(summary.computed) == sorted(keys)
    records = ResultsFile(out / "results.jsonl").records()
    assert sorted(r["key"] for r in records) == sorted(keys)  # each point written once, by the driver
    assert by_key(out) == by_key(local_run)
    for record in records:  # the per-example files are the driver's too
        assert (out / record["files"]["predictions"]).read_text() == \
            (local_run / record["files"]["predictions"]).read_text()

    again = run_experiment(config, out, progress=False, executor="ray")
    assert again.computed == [] and sorted(again.skipped) == sorted(keys)


def test_executor_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="executor"):
        run_experiment(sweep_config(), tmp_path, executor="dask")
    with pytest.raises(ValueError, match="address"):
        run_experiment(sweep_config(), tmp_path, address="auto")


@pytest.mark.slow
def test_an_attack_split_across_ray_workers_equals_one_process(sst2_classifier, sst2_dev):
    from robustprune.eval.attacks.attack import attack
    from robustprune.experiments.distributed import attack_on_ray

    dev = sst2_dev.subset(range(7))
    local = attack(sst2_classifier, dev, "deepwordbug", progress=False)
    split = attack_on_ray(sst2_classifier, dev, "deepwordbug", shards=3)
    assert split.results == local.results  # texts, predictions, statuses and query counts, example by example
    assert split.parameters == local.parameters and split.summary() == local.summary()


def test_task_resources_follow_the_device_and_the_cluster():
    from robustprune.experiments.distributed import task_resources

    def config(device, gpus=1.0):
        return parse_config({"device": device, "resources": {"gpus_per_point": gpus}})

    assert task_resources(config("cpu"), 2) == ({"num_cpus": 1}, "cpu")  # a CPU sweep never takes a GPU
    assert task_resources(config("auto"), 0) == ({"num_cpus": 1}, "cpu")
    assert task_resources(config("auto"), 2) == ({"num_cpus": 1, "num_gpus": 1.0}, "auto")
    assert task_resources(config("cuda", 0.5), 1) == ({"num_cpus": 1, "num_gpus": 0.5}, "cuda")
    for device, gpus, cluster, message in (("cuda", 1, 0, r"^config key 'device': 'cuda' needs GPUs, but the Ray "),
                                           ("cuda:1", 1, 2, r"^config key 'device': 'cuda:1' pins one GPU"),
                                           ("auto", 3, 2, r"^config key 'resources.gpus_per_point': 3 GPUs per")):
        with pytest.raises(ValueError, match=message):
            task_resources(config(device, gpus), cluster)


def gpu_sweep_config():
    raw = demo_config_dict()
    raw.update(name="gpus", device="auto", resources={"gpus_per_point": 1})
    raw["data"].update({"max_train_examples": 16, "max_eval_examples": 16})
    raw["finetune"].update({"epochs": 1.0, "max_length": 32, "batch_size": 8})
    raw["pruning"] = {"methods": ["magnitude", "random"], "patterns": ["unstructured"], "sparsities": [0.3, 0.6]}
    raw["evaluation"] = {"clean": True}
    return parse_config(raw)


@pytest.mark.slow
def test_points_are_spread_over_declared_gpus_and_equal_the_local_records(tmp_path):
    """Ray with two declared GPUs (none real): every task asks for one, sees only its own
    (``CUDA_VISIBLE_DEVICES``), computes where ``auto`` resolves there (the CPU: no real GPU), and the
    records equal the local executor's; the driver never initialises CUDA."""
    import torch

    config = gpu_sweep_config()
    run_experiment(config, tmp_path / "local", progress=False)
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        run_experiment(config, tmp_path / "ray", progress=False, executor="ray")
    finally:
        ray.shutdown()
    assert not torch.cuda.is_initialized()
    records = ResultsFile(tmp_path / "ray" / "results.jsonl").records()
    visible = [r["runtime"]["cuda_visible_devices"] for r in records]
    assert len(records) == 5 and set(visible) == {"0", "1"}  # one declared GPU per task, both in use
    assert all(r["runtime"]["device"] == "cpu" for r in records)
    assert by_key(tmp_path / "ray") == by_key(tmp_path / "local")
