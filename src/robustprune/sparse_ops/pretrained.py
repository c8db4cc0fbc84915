"""Pruned models as Hugging Face checkpoint directories: written dense or sparse, read back by one loader.

A directory written by :func:`save_pruned_model` holds the model's ``config.json``, its tokenizer files
(when a tokenizer is given) and ``pruning.json`` (what was pruned, as the caller records it), plus either

- ``format="dense"``: the usual ``model.safetensors`` (``save_pretrained``), which any
  ``AutoModelFor*.from_pretrained`` reads; or
- ``format="sparse"``: ``sparse_model.safetensors`` (:func:`robustprune.sparse_ops.convert.save_sparse_model`):
  every pruned matrix as N:M compressed values + indices (when the pattern is N:M; the layers come back as
  :class:`SparseLinear`) or as values + bitmask in compressed-tensors' ``sparse-bitmask`` layout (any
  sparsity; the layers come back as ordinary Linear layers). There is deliberately no ``model.safetensors``
  then, so a plain ``from_pretrained`` fails loudly instead of initialising random weights.

:func:`load_pretrained` reads those two, any ordinary checkpoint directory or Hub name, and a checkpoint
written by compressed-tensors (llm-compressor) in its ``sparse-bitmask`` / ``sparse-24-bitmask`` formats.
The model class is the one named in the config's ``architectures`` (the checkpoint's own head).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustprune.sparse_ops.convert import (
    compressed_tensors_format,
    load_compressed_tensors,
    load_sparse_model,
    save_sparse_model,
    sparsify_model,
)
from robustprune.sparse_ops.patterns import parse_pattern

FORMATS = ("dense", "sparse")
SPARSE_WEIGHTS = "sparse_model.safetensors"
RECORD = "pruning.json"


def save_pruned_model(model: nn.Module, directory: str | Path, *, pruned: Sequence[str], pattern: str = "unstructured",
                      format: str = "dense", tokenizer: Any = None, record: dict[str, Any] | None = None) -> Path:
    """Write a pruned Hugging Face model as a checkpoint directory that :func:`load_pretrained` reads.

    Args:
        model: a ``transformers`` model whose ``pruned`` Linear / Conv1D layers are pruned (zeros in place).
            With ``format="sparse"`` and an N:M ``pattern`` those layers are converted to SparseLinear in
            place (pass a copy to keep the dense one).
        directory: created if needed; must not hold a checkpoint already.
        pruned: qualified names of the pruned modules.
        pattern: ``"unstructured"`` or ``"N:M"`` (N kept of every M along the input dimension).
        format: ``"dense"`` (``model.safetensors``) or ``"sparse"`` (``sparse_model.safetensors``).
        tokenizer: saved beside the model when given.
        record: written as ``pruning.json`` (with ``format`` added).

    Returns:
        The directory.

    Raises:
        ValueError: an unknown ``format`` or ``pattern``, or ``directory`` already holds a checkpoint.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    nm = parse_pattern(pattern)
    directory = Path(directory)
    existing = [name for name in ("config.json", "model.safetensors", SPARSE_WEIGHTS, RECORD)
                if (directory / name).exists()]
    if existing:
        raise ValueError(f"{directory} already holds a checkpoint ({', '.join(existing)}); choose a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    if format == "dense":
        model.save_pretrained(directory)
    else:
        if nm is not None:
            sparsify_model(model, nm, targets=list(pruned))
            save_sparse_model(model, directory / SPARSE_WEIGHTS)
        else:
            save_sparse_model(model, directory / SPARSE_WEIGHTS, bitmask=list(pruned))
        model.config.architectures = [type(model).__name__]  # as save_pretrained records it: the head to rebuild
        model.config.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    payload = {"dtype": str(next(model.parameters()).dtype).removeprefix("torch."), **(record or {}),
               "format": format}
    (directory / RECORD).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return directory


def _model_class(config: Any, trust_remote_code: bool) -> Any:
    import transformers

    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    if getattr(config, "auto_map", None) and not trust_remote_code:
        raise ValueError(f"model type {config.model_type!r} needs the checkpoint's own code (auto_map); pass "
                         "trust_remote_code=True (--trust-remote-code) if you trust it")
    return transformers.AutoModel


def _checkpoint_dtype(directory: Path, config: Any) -> torch.dtype | None:
    record = directory / RECORD
    if record.is_file():
        dtype = json.loads(record.read_text(encoding="utf-8")).get("dtype")
        if isinstance(dtype, str) and isinstance(getattr(torch, dtype.removeprefix("torch."), None), torch.dtype):
            return getattr(torch, dtype.removeprefix("torch."))
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def _first_float_dtype(directory: Path) -> torch.dtype | None:
    """The dtype of the first floating-point tensor in the directory's safetensors files (None when there is
    none or a file is unreadable: the loader then reports the file)."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                    kind = handle.get_slice(key).get_dtype()
                    dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}.get(kind)
                    if dtype is not None:
                        return dtype
        except (SafetensorError, OSError):
            return None
    return None


def _empty_model(config: Any, cls: Any, dtype: torch.dtype | None, trust_remote_code: bool) -> nn.Module:
    kwargs: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
    if cls.__name__ == "AutoModel":
        model = cls.from_config(config, **kwargs)
    else:
        model = cls(config)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def load_pretrained(name_or_path: str | Path, *, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None, trust_remote_code: bool = False) -> nn.Module:
    """Load a model, in eval mode, from a checkpoint directory or a Hub name: a directory written by
    :func:`save_pruned_model` (dense, or sparse: N:M layers come back as SparseLinear, values + bitmask
    weights as dense Linear weights, bit for bit), a compressed-tensors ``sparse-bitmask`` /
    ``sparse-24-bitmask`` checkpoint (dense weights), or any ordinary ``transformers`` checkpoint.

    Args:
        name_or_path: a directory or a Hub model name.
        dtype: parameter dtype; None keeps the checkpoint's.
        device: where to put the model; None leaves it on the CPU.
        trust_remote_code: allow a checkpoint's own modelling code (``auto_map``).

    Raises:
        FileNotFoundError: a local path that does not exist.
        OSError: a Hub name that cannot be found (or fetched offline), naming it.
        ValueError: the checkpoint cannot be read (damaged or mismatched weights, an unsupported
            compressed-tensors format, remote code without ``trust_remote_code``).
    """
    from transformers import AutoConfig

    path = Path(name_or_path)
    local = path.exists()
    if not local and (path.is_absolute() or str(name_or_path).startswith((".", "~")) or str(name_or_path).count("/") > 1):
        raise FileNotFoundError(f"no such model directory {str(name_or_path)!r}")
    try:
        config = AutoConfig.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except OSError as error:  # transformers' message often omits the name it could not find
        raise OSError(f"cannot load model {str(name_or_path)!r}: {error}") from error
    cls = _model_class(config, trust_remote_code)
    sparse_file = path / SPARSE_WEIGHTS if local else None
    if sparse_file is not None and sparse_file.is_file():
        model = _empty_model(config, cls, dtype or _checkpoint_dtype(path, config) or _first_float_dtype(path),
                             trust_remote_code)
        load_sparse_model(model, sparse_file)
    elif local and (path / "config.json").is_file() and compressed_tensors_format(
            json.loads((path / "config.json").read_text(encoding="utf-8"))) is not None:
        for attribute in ("quantization_config", "compression_config"):
            if hasattr(config, attribute):
                delattr(config, attribute)
        model = _empty_model(config, cls, _first_float_dtype(path), trust_remote_code)
        load_compressed_tensors(model, path)
    else:
        kwargs: dict[str, Any] = {"trust_remote_code": True} if trust_remote_code else {}
        model = cls.from_pretrained(str(name_or_path), **kwargs).eval()
    if dtype is not None:
        model.to(dtype)
    if device is not None:
        model.to(device)
    return model.eval()


__all__ = ["FORMATS", "RECORD", "SPARSE_WEIGHTS", "load_pretrained", "save_pruned_model"]
