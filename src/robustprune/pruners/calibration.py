"""Layer-by-layer calibration capture for Hugging Face transformers (encoders and decoders).

One-shot pruners that look at activations (Wanda, SparseGPT) calibrate block by block:

1. :func:`capture_block_inputs` runs the model on the calibration batches only up to its first
   transformer block and records everything that block receives: the hidden states and every other
   positional / keyword argument (attention mask in whatever form the model builds it, position ids,
   rotary ``position_embeddings`` ``(cos, sin)``, cache position, ...). Cache objects are dropped
   (``past_key_values=None``, ``use_cache=False``) so that replays never grow a cache.
2. :func:`run_blocks_sequentially` then walks the blocks: ``visit(index, block, inputs)`` lets the
   pruner hook the block's Linear layers, :func:`replay` the block and prune it; afterwards the
   block's outputs are computed on the same inputs *with the pruned weights* and become the next
   block's inputs. Layer ``l`` is therefore calibrated on the outputs of the already-pruned layers
   ``< l`` (the SparseGPT default).

Memory stays bounded: the hidden states are stored once (each batch's entry is overwritten by the
block's output), only one block sits on the compute device at a time, and during capture only the
modules that actually run before the first block (embeddings, rotary tables) visit the device.
:func:`hessian_bytes` says up front how much the per-Linear SparseGPT Hessians will take.

Models whose blocks receive different arguments per layer (``config.layer_types`` mixing e.g.
sliding-window and full attention, as in Gemma 2 or Qwen 2 with sliding windows) are handled by
recording the arguments of every block in the same stopped forward pass (blocks before the last are
replaced by pass-throughs for that pass only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from robustprune.targets import LINEAR_TYPES, find_block_stack, input_dim_last, select_targets

try:
    from transformers.cache_utils import Cache as _Cache
except ImportError:  # pragma: no cover - transformers is a runtime dependency
    _Cache = ()

# Keyword names under which transformers versions pass a KV cache to a block.
CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")
EXPECTED_STACKS = ("encoder.layer (BERT family)", "model.layers (Llama, Mistral, Qwen)",
                   "model.decoder.layers (OPT)", "transformer.h (GPT-2)")

VisitFn = Callable[[int, nn.Module, "BlockInputs"], Any]


class _StopForward(Exception):
    """Raised by the capture hook to end the model's forward pass once the block inputs are recorded."""


@dataclass
class BlockInputs:
    """What a transformer block is called with, per calibration batch.

    Attributes:
        hidden_states: per batch, the ``[batch, seq, hidden]`` tensor fed into the block. During
            :func:`run_blocks_sequentially` the entries are overwritten by each block's outputs.
        args: per batch, the positional arguments after ``hidden_states`` (GPT-2 passes its cache
            and attention mask positionally, BERT its attention mask), caches replaced by None.
        kwargs: per batch, the keyword arguments, ``hidden_states`` removed, caches set to None and
            ``use_cache`` to False.
        hidden_as_keyword: the model passed ``hidden_states=`` by keyword rather than first positional.
        token_masks: per batch, a bool ``[batch, seq]`` tensor marking real (non-padding) tokens taken
            from the batch's 2-D ``attention_mask``, or None when every token is real. Statistics such
            as Wanda norms or SparseGPT Hessians should use ``x[token_mask]`` only.
        per_block: for models whose blocks receive different arguments (see module docs):
            block index -> (args, kwargs) lists, applied by :meth:`for_block`. None otherwise.
    """

    hidden_states: list[torch.Tensor]
    args: list[tuple[Any, ...]]
    kwargs: list[dict[str, Any]]
    hidden_as_keyword: bool = False
    token_masks: list[torch.Tensor | None] = field(default_factory=list)
    per_block: dict[int, tuple[list[tuple[Any, ...]], list[dict[str, Any]]]] | None = None

    def __len__(self) -> int:
        return len(self.hidden_states)

    @property
    def num_tokens(self) -> int:
        """Number of real (non-padding) tokens over all batches."""
        total = 0
        for hidden, mask in zip(self.hidden_states, self._masks()):
            total += int(mask.sum()) if mask is not None else hidden.shape[0] * hidden.shape[1]
        return total

    def _masks(self) -> list[torch.Tensor | None]:
        return list(self.token_masks) if self.token_masks else [None] * len(self.hidden_states)

    def for_block(self, index: int) -> BlockInputs:
        """A view for block ``index``: same hidden-state list, that block's own args / kwargs."""
        if not self.per_block or index not in self.per_block:
            return self
        args, kwargs = self.per_block[index]
        return replace(self, args=args, kwargs=kwargs)

    def call(self, block: nn.Module, i: int, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Run batch ``i`` through ``block`` (with ``hidden`` instead of the stored hidden states if
        given) and return the block's output hidden states (element 0 when it returns a tuple)."""
        hidden = self.hidden_states[i] if hidden is None else hidden
        if self.hidden_as_keyword:
            out = block(*self.args[i], hidden_states=hidden, **self.kwargs[i])
        else:
            out = block(hidden, *self.args[i], **self.kwargs[i])
        return _first_output(out)


def _first_output(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) or hasattr(out, "to_tuple"):
        first = out[0]
        if isinstance(first, torch.Tensor):
            return first
    raise TypeError(f"a block returned {type(out).__name__}; expected a tensor or a tuple whose "
                    "first element is the hidden states")


@torch.no_grad()
def replay(block: nn.Module, inputs: BlockInputs, keep_outputs: bool = True) -> list[torch.Tensor]:
    """Run every calibration batch through ``block`` (under ``torch.no_grad``).

    Forward hooks registered on the block's Linear layers see the calibration activations. Returns
    the block's outputs per batch, or an empty list with ``keep_outputs=False`` (statistics-only
    passes, e.g. accumulating Hessians, need not hold a second copy of the hidden states).
    """
    outputs = []
    for i in range(len(inputs)):
        out = inputs.call(block, i)
        if keep_outputs:
            outputs.append(out)
    return outputs


# --------------------------------------------------------------------------------------------------
# devices and modes


class _Mover:
    """Moves module tensors to a device and puts each back where it was."""

    def __init__(self, device: torch.device | None):
        self.device = device
        self._moved: dict[tuple[int, str, str], tuple[nn.Module, str, str, torch.device]] = {}

    def own(self, module: nn.Module) -> None:
        """Move the parameters and buffers ``module`` holds directly (not its children's)."""
        if self.device is None:
            return
        for kind, store in (("p", module._parameters), ("b", module._buffers)):
            for name, tensor in store.items():
                if tensor is None or tensor.device == self.device:
                    continue
                key = (id(module), kind, name)
                self._moved.setdefault(key, (module, kind, name, tensor.device))
                self._set(module, kind, name, self.device)

    def tree(self, module: nn.Module) -> None:
        """Move every parameter and buffer under ``module``."""
        for sub in module.modules():
            self.own(sub)

    @staticmethod
    def _set(module: nn.Module, kind: str, name: str, device: torch.device) -> None:
        if kind == "p":
            param = module._parameters[name]
            param.data = param.data.to(device)
        else:
            module._buffers[name] = module._buffers[name].to(device)

    def restore(self, tree: nn.Module | None = None) -> None:
        """Put moved tensors back. With ``tree``, also send tensors that appeared under it while it
        was on the device (e.g. a Linear replaced by the pruner) to the tree's original device."""
        fallback = next((dev for *_, dev in self._moved.values()), None)
        for module, kind, name, device in reversed(list(self._moved.values())):
            if name in (module._parameters if kind == "p" else module._buffers):
                self._set(module, kind, name, device)
        self._moved.clear()
        if tree is not None and fallback is not None and self.device is not None:
            for sub in tree.modules():
                for kind, store in (("p", sub._parameters), ("b", sub._buffers)):
                    for name, tensor in list(store.items()):
                        if tensor is not None and tensor.device == self.device:
                            self._set(sub, kind, name, fallback)


def _training_flags(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def _restore_training(flags: Iterable[tuple[nn.Module, bool]]) -> None:
    for module, training in flags:
        module.training = training


def resolve_block_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, ModuleList) of the model's transformer blocks, or a clear "unsupported
    architecture" error naming the stacks that were expected."""
    try:
        name = find_block_stack(model)
    except ValueError as exc:
        raise ValueError(f"unsupported architecture {type(model).__name__}: no stack of transformer blocks "
                         f"found. Expected an nn.ModuleList of transformer layers such as "
                         f"{', '.join(EXPECTED_STACKS)}") from exc
    stack = model.get_submodule(name)
    if len(stack) == 0:
        raise ValueError(f"{type(model).__name__}.{name} is an empty ModuleList: no blocks to calibrate")
    return name, stack


def _input_device(model: nn.Module) -> torch.device:
    get = getattr(model, "get_input_embeddings", None)
    try:
        emb = get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        emb = None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    return value


def _is_cache(value: Any) -> bool:
    return bool(_Cache) and isinstance(value, _Cache)


def _neutralise(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args = tuple(None if _is_cache(a) else a for a in args)
    out = {k: (None if k in CACHE_KWARGS or _is_cache(v) else v) for k, v in kwargs.items()}
    if "use_cache" in out:
        out["use_cache"] = False
    return args, out


def _split_hidden(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, tuple, dict, bool]:
    if args:
        return args[0], tuple(args[1:]), dict(kwargs), False
    if "hidden_states" in kwargs:
        kwargs = dict(kwargs)
        hidden = kwargs.pop("hidden_states")
        return hidden, (), kwargs, True
    raise RuntimeError("the first block was called without hidden states (neither positionally nor as "
                       f"hidden_states=); it received keyword arguments {sorted(kwargs)}")


def _heterogeneous_layers(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    for cfg in (config, getattr(config, "text_config", None)):
        layer_types = getattr(cfg, "layer_types", None)
        if layer_types is not None and len(set(layer_types)) > 1:
            return True
    return False


# --------------------------------------------------------------------------------------------------
# capture


def _capture(model: nn.Module, batches: Sequence[Mapping[str, Any]], device: torch.device | str | None,
             all_blocks: bool | None = None) -> BlockInputs:
    if len(batches) == 0:
        raise ValueError("empty calibration set: no calibration batches given")
    stack_name, stack = resolve_block_stack(model)
    device = torch.device(device) if device is not None else None
    target = device if device is not None else _input_device(model)
    if all_blocks is None:
        all_blocks = _heterogeneous_layers(model)
    recorded = list(range(len(stack))) if all_blocks else [0]
    last = recorded[-1]

    inputs = BlockInputs(hidden_states=[], args=[], kwargs=[], token_masks=[])
    per_block: dict[int, tuple[list, list]] = {i: ([], []) for i in recorded}
    hidden_kw: list[bool] = []

    def make_hook(index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden, rest, kw, as_keyword = _split_hidden(args, kwargs)
            rest, kw = _neutralise(rest, kw)
            per_block[index][0].append(rest)
            per_block[index][1].append(kw)
            if index == 0:
                inputs.hidden_states.append(hidden.detach())
                hidden_kw.append(as_keyword)
            if index == last:
                raise _StopForward
        return hook

    def passthrough(*args: Any, **kwargs: Any) -> torch.Tensor:
        return args[0] if args else kwargs["hidden_states"]

    inside_stack = {id(m) for m in stack.modules()}
    mover = _Mover(device)
    handles = []
    saved_forwards: dict[int, Any] = {}
    flags = _training_flags(model)
    try:
        model.eval()
        if device is not None:
            # Only what runs before the first block visits the device: the model's own tensors along the
            # path to the stack eagerly, every other module outside the stack just before it runs.
            parts = stack_name.split(".")
            for depth in range(len(parts)):
                mover.own(model.get_submodule(".".join(parts[:depth])))
            for module in model.modules():
                if id(module) not in inside_stack and (module._parameters or module._buffers):
                    handles.append(module.register_forward_pre_hook(lambda m, a: mover.own(m)))
        for i in recorded:
            handles.append(stack[i].register_forward_pre_hook(make_hook(i), with_kwargs=True))
            if i != last:
                saved_forwards[i] = stack[i].__dict__.get("forward")
                stack[i].forward = passthrough
        with torch.no_grad():
            for b, batch in enumerate(batches):
                batch = {k: _to_device(v, target) for k, v in batch.items()}
                before = len(inputs.hidden_states)
                try:
                    model(**batch)
                except _StopForward:
                    pass
                if len(inputs.hidden_states) != before + 1 or len(per_block[last][1]) != before + 1:
                    raise RuntimeError(f"calibration batch {b}: the forward pass of {type(model).__name__} "
                                       f"did not reach block {last} of {stack_name!r}")
                mask = batch.get("attention_mask")
                if isinstance(mask, torch.Tensor) and mask.dim() == 2 and not bool(mask.all()):
                    inputs.token_masks.append(mask.to(torch.bool))
                else:
                    inputs.token_masks.append(None)
    finally:
        for handle in handles:
            handle.remove()
        for i, forward in saved_forwards.items():
            del stack[i].forward
            if forward is not None:
                stack[i].forward = forward
        mover.restore()
        _restore_training(flags)
    if len(set(hidden_kw)) > 1:
        raise RuntimeError("the model passed hidden_states positionally for some batches and by keyword for "
                           "others")
    inputs.hidden_as_keyword = hidden_kw[0]
    inputs.args, inputs.kwargs = per_block[0]
    if all_blocks:
        inputs.per_block = {i: per_block[i] for i in recorded if i != 0}
    if all(m is None for m in inputs.token_masks):
        inputs.token_masks = []
    return inputs


def capture_block_inputs(model: nn.Module, batches: Sequence[Mapping[str, Any]],
                         device: torch.device | str | None = None) -> BlockInputs:
    """Record what the model's first transformer block receives for each calibration batch.

    The model runs in eval mode under ``torch.no_grad`` and stops at the first block (its training
    flags are restored afterwards). Every positional and keyword argument of the block call is kept
    as the model built it; cache objects are replaced by None and ``use_cache`` by False. When
    ``config.layer_types`` mixes layer kinds (sliding-window and full attention), the arguments of
    every block are recorded in the same pass (earlier blocks pass their input through unchanged
    while recording) and :meth:`BlockInputs.for_block` hands each block its own.

    Args:
        model: a Hugging Face model (encoder or decoder) with a stack of blocks, found by
            :func:`robustprune.targets.find_block_stack`.
        batches: dicts to call ``model(**batch)`` with (see
            :func:`robustprune.pruners.calibration_data.calibration_batches`).
        device: where to compute and keep the captured inputs. None: the device of the input
            embeddings, nothing is moved. Otherwise the modules that run before the first block visit
            ``device`` and are moved back afterwards.

    Raises:
        ValueError: no batches ("empty calibration set"), or no block stack in the model.
    """
    return _capture(model, batches, device)


def run_blocks_sequentially(model: nn.Module, batches: Sequence[Mapping[str, Any]], visit: VisitFn,
                            device: torch.device | str | None = None, progress: bool = True) -> BlockInputs:
    """Calibrate block by block: capture the first block's inputs, then for each block ``l``

    1. move block ``l`` to ``device`` (if given),
    2. call ``visit(l, block, inputs)``: the pruner registers hooks on the block's Linear layers,
       calls :func:`replay` to collect statistics, removes its hooks and prunes,
    3. recompute the block's outputs on the same inputs *after* ``visit`` returned and store them as
       the inputs of block ``l + 1`` (so block ``l + 1`` sees the already-pruned blocks ``< l + 1``),
    4. move the block back to where it was.

    The block's qualified name is ``f"{find_block_stack(model)}.{l}"``. ``visit`` is not run under
    ``torch.no_grad`` (``replay`` and the output pass are). The model is in eval mode throughout and
    its training flags are restored at the end.

    Returns:
        The :class:`BlockInputs` whose ``hidden_states`` now hold the last block's outputs (the
        hidden states before any final norm).
    """
    inputs = capture_block_inputs(model, batches, device)
    stack_name, stack = resolve_block_stack(model)
    device = torch.device(device) if device is not None else None
    flags = _training_flags(model)
    indices: Iterable[int] = range(len(stack))
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=f"calibrating {stack_name}", unit="block")
    try:
        model.eval()
        for index in indices:
            block = stack[index]
            view = inputs.for_block(index)
            mover = _Mover(device)
            try:
                mover.tree(block)
                visit(index, block, view)
                block.eval()
                with torch.no_grad():
                    for i in range(len(view)):
                        view.hidden_states[i] = view.call(block, i)
            finally:
                mover.restore(tree=block)
    finally:
        _restore_training(flags)
    return inputs


# --------------------------------------------------------------------------------------------------
# Hessian memory


def _format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class HessianBudget:
    """Memory of the fp32 SparseGPT Hessians (``in_features^2 x 4`` bytes per target Linear).

    Attributes:
        per_block_max: bytes needed while calibrating the largest block (one block at a time).
        total: bytes if every Hessian were held at once.
        per_group: bytes per block (keyed by the block's qualified name); a target outside the block
            stack is its own group.
        num_hessians: number of target Linear layers counted (one Hessian each).
    """

    per_block_max: int
    total: int
    per_group: dict[str, int]
    num_hessians: int

    def summary(self) -> str:
        """One line for the log, e.g. ``SparseGPT Hessians: 36 x fp32 ..., 3.4 MiB per block ...``."""
        return (f"SparseGPT Hessians: {self.num_hessians} fp32 matrices (in_features^2 x 4 bytes each), "
                f"at most {_format_bytes(self.per_block_max)} at a time (one block), "
                f"{_format_bytes(self.total)} over all {len(self.per_group)} block(s); "
                "modules sharing an input (q/k/v) can share one")

    def __str__(self) -> str:
        return self.summary()


def hessian_bytes(model: nn.Module, targets: str | Sequence[str] | None = None) -> HessianBudget:
    """How much memory the per-Linear SparseGPT Hessians need, per block and in total.

    Counts one ``in_features x in_features`` fp32 matrix per targeted Linear / Conv1D (Embedding
    targets have no Hessian and are skipped). ``targets`` as in
    :func:`robustprune.targets.select_targets`. Sharing one Hessian among modules that see the same
    input (q/k/v) lowers the real figure; this is the upper bound.
    """
    if targets is None:
        resolve_block_stack(model)  # a clear error naming the expected block stacks
    modules = select_targets(model, targets)
    try:
        prefix = find_block_stack(model) + "."
    except ValueError:
        prefix = None
    groups: dict[str, int] = {}
    count = 0
    for name, module in modules.items():
        if not isinstance(module, LINEAR_TYPES):
            continue
        in_features = input_dim_last(module, module.weight).shape[1]
        if prefix and name.startswith(prefix):
            group = prefix + name[len(prefix):].split(".", 1)[0]
        else:
            group = name
        groups[group] = groups.get(group, 0) + in_features * in_features * 4
        count += 1
    return HessianBudget(per_block_max=max(groups.values(), default=0), total=sum(groups.values()),
                         per_group=groups, num_hessians=count)


__all__ = [
    "CACHE_KWARGS",
    "BlockInputs",
    "HessianBudget",
    "capture_block_inputs",
    "hessian_bytes",
    "replay",
    "run_blocks_sequentially",
]
