"""Whole-model conversion to SparseLinear, safetensors save/load (N:M compressed layers and values + bitmask
weights of any sparsity), and a bytes-at-rest report."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from robustprune.sparse_ops.bitmask_format import (
    BITMASK_KEYS,
    bitmask_bytes,
    bitmask_encode,
    decode_bitmask_state,
)
from robustprune.sparse_ops.patterns import NMPattern
from robustprune.sparse_ops.sparse_linear import SparseLinear, dense_weight_of, require_nm
from robustprune.targets import LINEAR_TYPES, select_targets

_METADATA_KEY = "robustprune.sparse_modules"
_BITMASK_KEY = "robustprune.bitmask_modules"


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


def save_sparse_model(model: nn.Module, path: str | Path, bitmask: Iterable[str] | None = None) -> None:
    """Save ``model``'s state to a safetensors file that :func:`load_sparse_model` reads back exactly.

    SparseLinear layers are stored compressed (N:M values + packed indices). The Linear / Conv1D modules
    named in ``bitmask`` (qualified names, e.g. every pruned target) have their ``weight`` stored as
    values + bitmask, any sparsity, in compressed-tensors' ``sparse-bitmask`` layout
    (:mod:`robustprune.sparse_ops.bitmask_format`). Everything else is stored as it is; tensors that share
    storage (tied weights) are stored once. The file's metadata lists both kinds of sparse modules.

    Raises:
        ValueError: a name in ``bitmask`` is not a module of ``model``, not a Linear / Conv1D layer with a
            2-D weight, or named twice.
    """
    bitmask = list(bitmask or ())
    if len(set(bitmask)) != len(bitmask):
        raise ValueError("bitmask names a module more than once")
    for name in bitmask:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"bitmask: {type(model).__name__} has no module {name!r}") from None
        if not isinstance(module, LINEAR_TYPES) or module.weight.dim() != 2:
            raise ValueError(f"bitmask: {name!r} is a {type(module).__name__}; only Linear / Conv1D weights can be "
                             "stored as values + bitmask")
    layout = {name: {"pattern": str(m.pattern), "in_features": m.in_features, "out_features": m.out_features,
                     "bias": m.bias is not None}
              for name, m in model.named_modules() if isinstance(m, SparseLinear)}
    encoded = {f"{name}.weight": name for name in bitmask}
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    for key, tensor in model.state_dict().items():
        if key in encoded:
            tensors.update({f"{encoded[key]}.{part}": value for part, value in bitmask_encode(tensor).items()})
            continue
        storage = _storage_key(tensor)
        if storage in seen:  # a tied weight: stored once, restored through the tie on load
            continue
        seen.add(storage)
        tensors[key] = tensor.detach()
    owners: dict[tuple, int] = {}
    for tensor in tensors.values():
        owner = (tensor.device, tensor.untyped_storage().data_ptr())
        owners[owner] = owners.get(owner, 0) + 1
    tensors = {key: (t.clone() if owners[(t.device, t.untyped_storage().data_ptr())] > 1 else t).contiguous()
               for key, t in tensors.items()}
    save_file(tensors, str(path), metadata={_METADATA_KEY: json.dumps(layout), _BITMASK_KEY: json.dumps(bitmask)})


def load_sparse_model(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a file written by :func:`save_sparse_model` into ``model`` (same architecture, dense or
    already sparse): the recorded layers become SparseLinear, values + bitmask weights are decoded into
    the dense weights of their Linear layers (exactly), and every tensor is loaded.

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
    try:
        bitmask = json.loads(metadata.get(_BITMASK_KEY, "[]"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the {_BITMASK_KEY!r} metadata is not valid JSON: {error}") from None
    if not isinstance(bitmask, list) or not all(isinstance(name, str) for name in bitmask):
        raise ValueError(f"{path}: the {_BITMASK_KEY!r} metadata must list module names, got {bitmask!r}")
    tensors = decode_bitmask_state(tensors, bitmask, source=str(path))
    stray = [key for key in tensors if key.rpartition(".")[2] in BITMASK_KEYS]
    if stray:
        raise ValueError(f"{path}: {stray[0]!r} belongs to no values + bitmask weight listed in the metadata "
                         "(damaged or mismatched file?)")
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
    """Weight bytes at rest of the sparse layers (N:M SparseLinear or values + bitmask), compressed vs dense."""

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


def sparse_bytes_report(model: nn.Module, bitmask: Iterable[str] | None = None) -> BytesReport:
    """Bytes at rest of every SparseLinear weight in ``model``, and of the weights of the Linear / Conv1D
    modules named in ``bitmask`` as :func:`save_sparse_model` stores them (values + bitmask), against
    their dense equivalents."""
    layers = {name: (m.weight_bytes(), m.dense_weight_bytes())
              for name, m in model.named_modules() if isinstance(m, SparseLinear)}
    for name in bitmask or ():
        weight = model.get_submodule(name).weight
        rows, cols = weight.shape
        size = weight.element_size()
        layers[name] = (bitmask_bytes(rows, cols, int(torch.count_nonzero(weight)), size), weight.numel() * size)
    return BytesReport(layers)


#: compressed-tensors sparsity formats robustprune reads (``dense`` = no compression).
COMPRESSED_TENSORS_FORMATS = ("sparse-bitmask", "sparse-24-bitmask", "dense")


def compressed_tensors_format(config: dict) -> str | None:
    """The compressed-tensors sparsity format recorded in a ``config.json`` (as a dict), or None when the
    checkpoint was not written by compressed-tensors.

    Raises:
        ValueError: the checkpoint is compressed-tensors but quantized, or uses a sparsity format
            robustprune cannot read (it reads ``sparse-bitmask``, ``sparse-24-bitmask`` and ``dense``).
    """
    quantization = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(quantization, dict) or quantization.get("quant_method") != "compressed-tensors":
        return None
    if quantization.get("config_groups"):
        raise ValueError("the checkpoint is quantized by compressed-tensors (quantization_config.config_groups); "
                         "robustprune reads only its sparse formats "
                         f"{', '.join(COMPRESSED_TENSORS_FORMATS)} without quantization")
    sparsity = quantization.get("sparsity_config") or {}
    fmt = sparsity.get("format", "dense") if isinstance(sparsity, dict) else None
    if fmt not in COMPRESSED_TENSORS_FORMATS:
        raise ValueError(f"compressed-tensors sparsity format {fmt!r} is not supported; robustprune reads "
                         f"{', '.join(COMPRESSED_TENSORS_FORMATS)}")
    return fmt


def _checkpoint_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{index} is not a safetensors index (weight_map): {error}") from None
        return [directory / name for name in sorted(set(weight_map.values()))]
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{directory} has no model.safetensors (or model.safetensors.index.json)")


def load_compressed_tensors(model: nn.Module, directory: str | Path) -> nn.Module:
    """Load a checkpoint directory written by compressed-tensors (llm-compressor) in its ``sparse-bitmask``,
    ``sparse-24-bitmask`` or ``dense`` format into ``model`` (built from the same config), as dense weights.

    compressed-tensors 0.14 was the last release able to read these checkpoints; this reader needs neither
    it nor any other part of that stack. Atomic, like :func:`load_sparse_model`: every file is read, every
    values + bitmask weight decoded and every tensor's name, shape and dtype checked before ``model`` changes.

    Raises:
        FileNotFoundError: no ``config.json`` or no weights in ``directory``.
        ValueError: not a compressed-tensors checkpoint, a format robustprune does not read, damaged
            tensors, or a checkpoint that does not fit ``model``.
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no config.json in {directory}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from None
    fmt = compressed_tensors_format(config)
    if fmt is None:
        raise ValueError(f"{directory} is not a compressed-tensors checkpoint (no quantization_config with "
                         "quant_method 'compressed-tensors' in config.json)")
    tensors: dict[str, torch.Tensor] = {}
    for file in _checkpoint_files(directory):
        try:
            tensors.update(load_file(str(file)))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{file} is not a readable safetensors file (truncated or corrupted?): "
                             f"{error}") from None
    if fmt != "dense":
        tensors = decode_bitmask_state(tensors, source=str(directory))
    return load_state_checked(model, tensors, directory)


def load_state_checked(model: nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> nn.Module:
    """Load a complete state dict into ``model`` after checking every name, shape and dtype (tied weights
    may be given once); on any mismatch raise ``ValueError`` naming ``source`` and leave ``model`` unchanged."""
    missing_shared = _check_state(model, {}, tensors, Path(source))
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys or not set(result.missing_keys) <= missing_shared:
        raise RuntimeError(f"internal error loading {source}: {result}")
    return model
