"""Whole-model conversion to SparseLinear, safetensors save/load, and a bytes-at-rest report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_model, save_model
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
    already sparse): the recorded layers become SparseLinear, then every tensor is loaded strictly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sparse model file at {path}")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if _METADATA_KEY not in metadata:
        raise ValueError(f"{path} was not written by save_sparse_model (no {_METADATA_KEY!r} metadata)")
    for name, spec in json.loads(metadata[_METADATA_KEY]).items():
        current = model.get_submodule(name)
        reference = current.values if isinstance(current, SparseLinear) else dense_weight_of(current)
        _replace(model, name, SparseLinear(spec["in_features"], spec["out_features"], spec["pattern"],
                                           bias=spec["bias"], dtype=reference.dtype, device=reference.device))
    load_model(model, str(path), strict=True)
    return model


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
