"""Structured pruning of BERT-family encoders: physically remove attention heads and FFN neurons.

A BERT-family block (BERT, RoBERTa, MiniLM, ELECTRA, ...) holds ``attention.self.{query,key,value}``,
``attention.output.dense``, ``intermediate.dense`` and ``output.dense``. Removing head ``h`` deletes its
``head_size`` rows of q/k/v (weights and biases) and the matching input columns of the attention output
projection; removing FFN neuron ``j`` deletes row ``j`` of ``intermediate.dense`` and column ``j`` of
``output.dense``. The result computes exactly what the unpruned model computes with those heads' outputs and
those neurons' activations multiplied by zero (the attention of the remaining heads does not depend on the
removed ones, and a removed column only ever multiplied a zero).

transformers 5 dropped ``PreTrainedModel.prune_heads``; the Linear layers are sliced in place here (their
dtype, device and module identity are kept) and each attention module's ``num_attention_heads`` and
``all_head_size`` updated. ``config`` still describes the unpruned shapes: to reload a pruned model, rebuild
it from the config, prune it with the same keep-masks, then load the state dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustprune.targets import find_block_stack

_EXPECTED = (
    "a BERT-family encoder (BERT, RoBERTa, MiniLM, ...) whose blocks hold attention.self.query/key/value, "
    "attention.output.dense, intermediate.dense and output.dense as nn.Linear"
)

KeepMasks = torch.Tensor | Sequence[torch.Tensor]


def bert_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a BERT-family model, checked to have the expected sub-modules.

    Raises:
        TypeError: ``model`` is not a BERT-family encoder (the message names the expected structure).
    """
    try:
        stack_name = find_block_stack(model)
    except ValueError as error:
        raise TypeError(f"{type(model).__name__} is not {_EXPECTED}: {error}") from None
    stack = model.get_submodule(stack_name)
    for index, layer in enumerate(stack):
        try:
            attention = layer.get_submodule("attention.self")
            linears = [layer.get_submodule(path) for path in (
                "attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "intermediate.dense", "output.dense")]
        except AttributeError:
            raise TypeError(f"{type(model).__name__} is not {_EXPECTED}; block {stack_name}.{index} is a "
                            f"{type(layer).__name__} without them") from None
        if not all(type(m) is nn.Linear for m in linears) or not hasattr(attention, "attention_head_size"):
            raise TypeError(f"{type(model).__name__} is not {_EXPECTED}; block {stack_name}.{index} "
                            f"({type(layer).__name__}) has other layer types or no attention_head_size")
    return list(stack)


def head_counts(model: nn.Module) -> list[int]:
    """Number of attention heads in each block (after any pruning)."""
    return [layer.attention.self.num_attention_heads for layer in bert_layers(model)]


def neuron_counts(model: nn.Module) -> list[int]:
    """Number of FFN (intermediate) neurons in each block (after any pruning)."""
    return [layer.intermediate.dense.out_features for layer in bert_layers(model)]


def count_parameters(model: nn.Module) -> int:
    """Number of parameter entries in ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def _per_layer(keep: KeepMasks, sizes: list[int], name: str, unit: str) -> list[torch.Tensor]:
    rows = list(keep.unbind(0)) if isinstance(keep, torch.Tensor) and keep.ndim == 2 else list(keep)
    if len(rows) != len(sizes):
        raise ValueError(f"{name} must hold one keep-mask per block ({len(sizes)}), got {len(rows)}")
    checked = []
    for index, (mask, size) in enumerate(zip(rows, sizes)):
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (size,):
            got = (f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor)
                   else type(mask).__name__)
            raise ValueError(f"{name}[{index}] must be a bool tensor of shape ({size},), one entry per "
                             f"{unit} of block {index} (True = kept), got {got}")
        checked.append(mask)
    return checked


@torch.no_grad()
def _slice_linear_(layer: nn.Linear, index: torch.Tensor, dim: int) -> None:
    """Keep only ``index`` along ``dim`` of ``layer.weight`` (0: outputs, also slicing the bias; 1: inputs)."""
    index = index.to(layer.weight.device)
    weight = layer.weight
    layer.weight = nn.Parameter(weight.index_select(dim, index).clone(), requires_grad=weight.requires_grad)
    if dim == 0:
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias[index].clone(), requires_grad=layer.bias.requires_grad)
        layer.out_features = index.numel()
    else:
        layer.in_features = index.numel()


def prune_heads_(model: nn.Module, keep: KeepMasks) -> list[int]:
    """Remove attention heads in place; ``keep[l]`` is a bool mask over block ``l``'s current heads.

    ``keep`` is a list of 1-D masks or one ``(layers, heads)`` bool tensor. Every block must keep at least one
    head (an attention with no head has no defined output shape here). Returns the heads left per block.
    """
    layers = bert_layers(model)
    masks = _per_layer(keep, [layer.attention.self.num_attention_heads for layer in layers], "keep", "head")
    for index, mask in enumerate(masks):
        if not bool(mask.any()):
            raise ValueError(f"keep[{index}] removes every head of block {index}; keep at least one per block")
    for layer, mask in zip(layers, masks):
        attention = layer.attention.self
        if bool(mask.all()):
            continue
        size = attention.attention_head_size
        kept_heads = torch.nonzero(mask.cpu()).view(-1)
        index = (kept_heads.view(-1, 1) * size + torch.arange(size).view(1, -1)).view(-1)
        for linear in (attention.query, attention.key, attention.value):
            _slice_linear_(linear, index, 0)
        _slice_linear_(layer.attention.output.dense, index, 1)
        attention.num_attention_heads = kept_heads.numel()
        attention.all_head_size = kept_heads.numel() * size
    return head_counts(model)


def prune_neurons_(model: nn.Module, keep: KeepMasks) -> list[int]:
    """Remove FFN neurons in place; ``keep[l]`` is a bool mask over block ``l``'s current intermediate neurons.

    ``keep`` is a list of 1-D masks or one ``(layers, neurons)`` bool tensor. A block may lose every neuron
    (its FFN then adds only ``output.dense``'s bias). Returns the neurons left per block.
    """
    layers = bert_layers(model)
    masks = _per_layer(keep, [layer.intermediate.dense.out_features for layer in layers], "keep", "neuron")
    for layer, mask in zip(layers, masks):
        if bool(mask.all()):
            continue
        index = torch.nonzero(mask.cpu()).view(-1)
        _slice_linear_(layer.intermediate.dense, index, 0)
        _slice_linear_(layer.output.dense, index, 1)
    return neuron_counts(model)


__all__ = ["bert_layers", "count_parameters", "head_counts", "neuron_counts", "prune_heads_", "prune_neurons_"]
