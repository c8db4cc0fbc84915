"""Whole-model conversion to SparseLinear, safetensors save/load, and a bytes-at-rest report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_model
from torch import nn

from robustprune.sparse_ops.patterns import NMPattern
from robustprune.sparse_ops.sparse_linear import SparseLinear, dense_weight_of, require_nm
from robustprune.targets import LINEAR_TYPES, select_targets

_METADATA_KEY = "robustprune.sparse_modules"


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def sparsify_model(model: nn.Module, pattern: str | NMPattern, targets: str | Sequence[str] | None = None,
                   prune: bool = False) -> dict[str, SparseLinear]:
    """Replace the targeted Linear layers of ``model`` with :class:`SparseLinear`, in place.

    ``targets`` as in :func:`robustprune.targets.select_targets` (default: the Linear
    layers inside the transformer blocks). Every target is compressed before any is replaced, so a
    weight that is not N:M (with ``prune=False``) raises and leaves the model unchanged.
    Returns the new modules by qualified name.
    """
    nm = require_nm(pattern)
    modules = select_targets(model, targets)
    for name, module in modules.items():
        if not isinstance(module, LINEAR_TYPES):
            raise TypeError(f"target {name!r} is a {type(module).__name__}; only Linear/Conv1D layers can be "
                            "made sparse")
        in_features = dense_weight_of(module).shape[1]
        if in_features % nm.m:
            raise ValueError(f"target {name!r} has in_features={in_features}, not divisible by M={nm.m} "
                             f"for pattern {nm}")
    converted = {}
    for name, module in modules.items():
        try:
            converted[name] = SparseLinear.from_dense(module, nm, prune=prune)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from error
    for name, sparse in converted.items():
        _replace(model, name, sparse)
    return converted


def save_sparse_model(model: nn.Module, path: str | Path) -> None:
    """Save ``model``'s state (compressed layers included) to a safetensors file, with the list of
    sparse modules in the file's metadata so :func:`load_sparse_model` can rebuild them."""
    layout = {name: {"pattern": str(m.pattern), "in_features": m.in_features, "out_features": m.out_features,
                     "bias": m.bias is not None}
              for name, m in model.named_modules() if isinstance(m, SparseLinear)}
    save_model(model, str(path), metadata={_METADATA_KEY: json.dumps(layout)})


def load_sparse_model(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a file written by :func:`save_sparse_model` into ``model`` (same architecture, dense or
    already sparse): the recorded layers become SparseLinear and every tensor is loaded.

    Atomic: the whole file is read and checked against the model first (every recorded module path,
    its shape and bias, then every tensor's name, shape and dtype); only then is the model changed.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is unreadable (truncated, not safetensors), was not written by
            :func:`save_sparse_model`, or does not fit ``model``; the message names the file and the
            first mismatch, and ``model`` is left exactly as it was.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sparse model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))  # read everything before the model is touched
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {error}") from None
    if _METADATA_KEY not in metadata:
        raise ValueError(f"{path} was not written by save_sparse_model (no {_METADATA_KEY!r} metadata)")
    try:
        layout = json.loads(metadata[_METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the {_METADATA_KEY!r} metadata is not valid JSON: {error}") from None
    replacements = {name: _planned_layer(model, name, spec, path) for name, spec in layout.items()}
    missing_shared = _check_state(model, replacements, tensors, path)
    for name, sparse in replacements.items():
        _replace(model, name, sparse)
    result = model.load_state_dict(tensors, strict=False)  # cannot fail now: every name, shape, dtype checked
    if result.unexpected_keys or not set(result.missing_keys) <= missing_shared:
        raise RuntimeError(f"internal error loading {path}: {result}")
    return model


def _planned_layer(model: nn.Module, name: str, spec: dict, path: Path) -> SparseLinear:
    """The SparseLinear that will replace module ``name``, after checking it fits the current module."""
    if not isinstance(spec, dict) or not {"pattern", "in_features", "out_features", "bias"} <= spec.keys():
        raise ValueError(f"{path}: the recorded layout of {name!r} is malformed: {spec!r}")
    try:
        current = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{path} does not fit the model: it has a sparse layer {name!r}, the model has no "
                         "such module") from None
    if isinstance(current, SparseLinear):
        reference, shape = current.values, (current.out_features, current.in_features)
    elif isinstance(current, LINEAR_TYPES):
        reference = dense_weight_of(current)
        shape = tuple(reference.shape)
    else:
        raise ValueError(f"{path} does not fit the model: {name!r} is a {type(current).__name__}, not a Linear "
                         "or SparseLinear layer")
    saved = (spec["out_features"], spec["in_features"])
    if shape != saved:
        raise ValueError(f"{path} does not fit the model: {name!r} is {shape[0]}x{shape[1]} (out x in) in the "
                         f"model, {saved[0]}x{saved[1]} in the file")
    if (getattr(current, "bias", None) is not None) != spec["bias"]:
        raise ValueError(f"{path} does not fit the model: {name!r} has "
                         f"{'a' if spec['bias'] else 'no'} bias in the file but not in the model")
    try:
        return SparseLinear(spec["in_features"], spec["out_features"], spec["pattern"], bias=spec["bias"],
                            dtype=reference.dtype, device=reference.device)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: sparse layer {name!r}: {error}") from None


def _check_state(model: nn.Module, replacements: dict[str, SparseLinear], tensors: dict[str, torch.Tensor],
                 path: Path) -> set[str]:
    """Check ``tensors`` against the state ``model`` will have once ``replacements`` are in place: same
    names, shapes and dtypes. Returns the names the file may omit because they share storage with a saved
    tensor (tied weights, which safetensors stores once)."""
    replaced = tuple(f"{name}." for name in replacements)
    expected = {key: t for key, t in model.state_dict().items() if not key.startswith(replaced)}
    for name, sparse in replacements.items():
        expected.update({f"{name}.{key}": t for key, t in sparse.state_dict().items()})
    for key, tensor in tensors.items():
        if key not in expected:
            raise ValueError(f"{path} does not fit the model: the file has {key!r}, the model has no such tensor")
        want = expected[key]
        if tuple(tensor.shape) != tuple(want.shape) or tensor.dtype != want.dtype:
            raise ValueError(f"{path} does not fit the model: {key!r} is {tuple(want.shape)} {want.dtype} in the "
                             f"model, {tuple(tensor.shape)} {tensor.dtype} in the file")
    saved_storages = {_storage_key(expected[key]) for key in tensors}
    missing_shared = set()
    for key, want in expected.items():
        if key in tensors:
            continue
        if _storage_key(want) not in saved_storages:
            raise ValueError(f"{path} does not fit the model: the model's {key!r} is missing from the file")
        missing_shared.add(key)
    return missing_shared


def _storage_key(tensor: torch.Tensor) -> tuple:
    return (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))


@dataclass(frozen=True)
class BytesReport:
    """Weight bytes at rest of the SparseLinear layers, compressed vs dense."""

    layers: dict[str, tuple[int, int]]  # name -> (sparse bytes, dense bytes)

    @property
    def sparse_bytes(self) -> int:
        return sum(sparse for sparse, _ in self.layers.values())

    @property
    def dense_bytes(self) -> int:
        return sum(dense for _, dense in self.layers.values())

    @property
    def ratio(self) -> float:
        return self.sparse_bytes / self.dense_bytes if self.dense_bytes else float("nan")

    def __str__(self) -> str:
        return (f"{len(self.layers)} sparse layers: {self.sparse_bytes / 2**20:.2f} MiB at rest vs "
                f"{self.dense_bytes / 2**20:.2f} MiB dense ({self.ratio:.4f}x)")


def sparse_bytes_report(model: nn.Module) -> BytesReport:
    """Bytes at rest of every SparseLinear weight in ``model`` against its dense equivalent."""
    return BytesReport({name: (m.weight_bytes(), m.dense_weight_bytes())
                        for name, m in model.named_modules() if isinstance(m, SparseLinear)})
