"""``robustprune prune``: one-shot pruning of any Hugging Face model whose layers form a stack of blocks,
written as a checkpoint directory (dense or sparse) with a ``pruning.json`` record.

The pruners are the package's own (:func:`robustprune.magnitude_prune`, :func:`robustprune.wanda_prune`,
:func:`robustprune.sparsegpt_prune`, :func:`robustprune.random_prune`) and so is the target selection
(the Linear layers inside the largest stack of blocks, :func:`robustprune.targets.select_targets`);
this module checks the command's input, reads the calibration text, measures the result and writes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustprune.data.texts import calibration_texts, hub_dataset_spec
from robustprune.sparse_ops.convert import sparse_bytes_report
from robustprune.sparse_ops.patterns import parse_pattern
from robustprune.sparse_ops.pretrained import FORMATS, RECORD, load_pretrained, save_pruned_model
from robustprune.sparse_ops.validation import check_sparsity
from robustprune.targets import input_dim_last, select_targets

METHODS = ("magnitude", "wanda", "sparsegpt", "random")
CALIBRATED = ("wanda", "sparsegpt")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class PruneSummary:
    """What :func:`prune_pretrained` wrote: the directory, its ``pruning.json`` record and the weight files'
    bytes on disk."""

    directory: Path
    record: dict[str, Any]
    weight_bytes: int


def _check_request(method: str, sparsity: float | None, pattern: str | None, scope: str | None,
                   calibration: str | None, samples: int, seq_len: int, output_format: str) -> tuple[float, Any]:
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if (sparsity is None) == (pattern is None):
        raise ValueError("give exactly one of --sparsity S (unstructured, in [0, 1)) and --pattern N:M")
    nm = None
    if pattern is not None:
        try:
            nm = parse_pattern(pattern)
        except (TypeError, ValueError) as error:
            raise ValueError(f"--pattern: {error}") from None
        if nm is None:
            raise ValueError("--pattern takes N:M (N kept of every M, e.g. 2:4); for unstructured pruning "
                             "give --sparsity")
        asked = nm.sparsity
    else:
        asked = check_sparsity(sparsity, "--sparsity")
    if scope is not None:
        if scope not in ("global", "layer"):
            raise ValueError(f"--scope must be global or layer, got {scope!r}")
        if method in CALIBRATED:
            raise ValueError(f"--scope applies to unstructured magnitude and random pruning only; {method} "
                             f"{'compares within each output row' if method == 'wanda' else 'prunes per matrix'}")
        if nm is not None:
            raise ValueError(f"--scope applies to unstructured pruning only; --pattern {nm} compares within each "
                             "group of M weights")
    if method in CALIBRATED and calibration is None:
        raise ValueError(f"--method {method} needs calibration text: give --calibration DATA (a shipped set "
                         "such as sst2-sample, a text/TSV/CSV/JSONL file, or a Hugging Face dataset)")
    if method not in CALIBRATED and calibration is not None:
        raise ValueError(f"--calibration is used by wanda and sparsegpt only, not by {method}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"--samples must be a positive integer, got {samples!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"--seq-len must be a positive integer, got {seq_len!r}")
    if output_format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    return asked, nm


def _version() -> str:
    try:
        return metadata.version("robustprune")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def _model_type(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", type(model).__name__))


def _targets(model: nn.Module, nm: Any) -> dict[str, nn.Module]:
    model_type = _model_type(model)
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"model type {model_type!r} is an encoder-decoder (two stacks of blocks); robustprune "
                         "prune handles models whose layers form one stack of blocks")
    try:
        targets = select_targets(model)
    except ValueError as error:
        raise ValueError(f"model type {model_type!r} cannot be pruned: {error}") from None
    if not targets:
        raise ValueError(f"model type {model_type!r} cannot be pruned: no Linear layers in its blocks")
    if nm is not None:
        for name, module in targets.items():
            in_features = input_dim_last(module, module.weight).shape[1]
            if in_features % nm.m:
                raise ValueError(f"--pattern {nm}: layer {name} has {in_features} input features, not a multiple "
                                 f"of M={nm.m}")
    return targets


def _tokenizer(source: str, required: bool, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as error:
        if required:
            raise ValueError(f"{source}: no usable tokenizer for the calibration text ({error})") from None
        return None


def _run_pruner(model: nn.Module, method: str, sparsity: float, nm: Any, scope: str | None, batches: Any,
                device: str | None, seed: int, progress: bool) -> None:
    from robustprune.pruners.magnitude import magnitude_prune
    from robustprune.pruners.random_masks import random_prune
    from robustprune.pruners.sparsegpt import sparsegpt_prune
    from robustprune.pruners.wanda import wanda_prune

    pattern = str(nm) if nm is not None else "unstructured"
    amount = None if nm is not None else sparsity
    if method == "magnitude":
        magnitude_prune(model, amount, scope=scope or "global", pattern=pattern)
    elif method == "random":
        random_prune(model, amount, seed=seed, scope=scope or "global", pattern=pattern)
    elif method == "wanda":
        wanda_prune(model, batches, amount, pattern=pattern, device=device, progress=progress)
    else:
        sparsegpt_prune(model, batches, amount, pattern=pattern, device=device, progress=progress)


def prune_pretrained(model: str, *, method: str, out: str | Path, sparsity: float | None = None,
                     pattern: str | None = None, scope: str | None = None, calibration: str | None = None,
                     samples: int = 128, seq_len: int = 128, device: str | None = None, output_format: str = "dense",
                     seed: int = 0, dtype: str | None = None, trust_remote_code: bool = False,
                     progress: bool = True) -> PruneSummary:
    """Prune a Hugging Face model one-shot and write it to ``out`` (what ``robustprune prune`` runs).

    Args:
        model: a checkpoint directory or Hub name (loaded with its own head, see
            :func:`robustprune.sparse_ops.pretrained.load_pretrained`).
        method: ``magnitude``, ``wanda``, ``sparsegpt`` or ``random``.
        out: the directory to write (config, tokenizer, weights, ``pruning.json``); must be new.
        sparsity: unstructured sparsity in [0, 1); exclusive with ``pattern``.
        pattern: ``"N:M"``, N kept of every M along the input dimension.
        scope: ``global`` (default) or ``layer``, for unstructured magnitude and random pruning.
        calibration: text source for Wanda / SparseGPT (see :func:`calibration_texts`; a Hub dataset gives
            its first ``samples`` texts). With at least ``samples`` texts the first ``samples`` are used,
            truncated to ``seq_len`` tokens; with fewer, ``samples`` random windows of ``seq_len`` tokens
            (``robustprune.calibration_batches`` modes ``first`` / ``windows``; ``pruning.json`` says which).
        samples, seq_len: calibration sequences and their maximum length in tokens.
        device: where blocks run (``auto``, ``cpu``, ``cuda``, ``cuda:N``; ``auto``: CUDA when a GPU is
            visible); None keeps the model where it loads. The pruned model is gathered on the CPU to be written.
        output_format: ``dense`` (``model.safetensors``) or ``sparse`` (values + bitmask, or N:M compressed).
        seed: seeds random pruning and calibration windows.
        dtype: ``float32``, ``float16`` or ``bfloat16``: the dtype the pruned model is written in (pruning
            runs in the checkpoint's dtype); None keeps the checkpoint's.
        trust_remote_code: allow the checkpoint's own modelling code.
        progress: a progress bar over blocks for the calibrated methods.

    Raises:
        ValueError: bad input (named by its command-line flag), or a model that cannot be pruned (named by
            its model type).
    """
    asked, nm = _check_request(method, sparsity, pattern, scope, calibration, samples, seq_len, output_format)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    out = Path(out)
    if (out / RECORD).exists() or (out / "config.json").exists():
        raise ValueError(f"--out {out} already holds a checkpoint; choose a new directory")
    # bad data fails before the model loads; a Hub dataset is streamed, only the texts the samples use
    texts = calibration_texts(calibration, hub_limit=samples) if calibration is not None else None
    if device is not None:
        from robustprune.devices import use_device

        device = str(use_device(device, where="--device"))
    loaded = load_pretrained(model, trust_remote_code=trust_remote_code)
    targets = _targets(loaded, nm)
    tokenizer = _tokenizer(str(model), method in CALIBRATED, trust_remote_code)
    calibration_record = None
    batches = None
    if texts is not None:
        from robustprune.pruners.calibration_data import auto_mode, calibration_batches

        mode = auto_mode(texts, samples)
        try:
            batches = calibration_batches(tokenizer, texts, num_samples=samples, seq_len=seq_len, mode=mode, seed=seed)
        except ValueError as error:
            raise ValueError(f"--calibration {calibration}: {error}") from None
        digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
        calibration_record = {"source": calibration, "texts": len(texts), "sha256": digest, "samples": samples,
                              "seq_len": seq_len, "mode": mode,
                              "tokens": int(sum(int(b["attention_mask"].sum()) for b in batches))}
    if device is not None and method not in CALIBRATED:
        loaded.to(device)
    try:
        _run_pruner(loaded, method, asked, nm, scope, batches, device, seed, progress)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ValueError(f"model type {_model_type(loaded)!r} could not be pruned with {method}: {error}") from error
    matrices = {}
    zeros = total = 0
    with torch.no_grad():
        for name, module in targets.items():
            count = int((module.weight == 0).sum())
            matrices[name] = {"shape": list(module.weight.shape), "sparsity": count / module.weight.numel()}
            zeros += count
            total += module.weight.numel()
    loaded.to("cpu")  # written from host memory, whatever device pruned it
    if dtype is not None:
        loaded.to(getattr(torch, dtype))
    record = {
        "robustprune_version": _version(), "model": str(model), "model_type": _model_type(loaded),
        "architecture": type(loaded).__name__, "dtype": str(next(loaded.parameters()).dtype).removeprefix("torch."),
        "method": method, "pattern": str(nm) if nm is not None else "unstructured", "sparsity_asked": asked,
        "scope": (scope or "global") if method in ("magnitude", "random") and nm is None else None,
        "seed": seed if method == "random" else None, "sparsity_measured": zeros / total,
        "calibration": calibration_record, "matrices": matrices,
    }
    if output_format == "sparse":
        report = sparse_bytes_report(loaded, bitmask=list(targets)) if nm is None else None
    save_pruned_model(loaded, out, pruned=list(targets), pattern=record["pattern"], format=output_format,
                      tokenizer=tokenizer, record=record)
    if output_format == "sparse":
        report = report if report is not None else sparse_bytes_report(loaded)
        record["bytes_at_rest"] = {"pruned_matrices": report.sparse_bytes, "dense_equivalent": report.dense_bytes,
                                   "ratio": report.ratio}
        (out / RECORD).write_text(json.dumps(dict(record, format=output_format), indent=2) + "\n", encoding="utf-8")
    weight_bytes = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return PruneSummary(out, dict(record, format=output_format), weight_bytes)


__all__ = ["METHODS", "PruneSummary", "calibration_texts", "hub_dataset_spec", "prune_pretrained"]
