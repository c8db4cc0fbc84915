"""``SparseLinear``: a drop-in ``nn.Linear`` whose weight is stored compressed N:M."""

from __future__ import annotations

import torch
from torch import nn

from robustprune.sparse_ops.nm import nm_mask
from robustprune.sparse_ops.nm_format import kept_per_row, metadata_row_bytes, nm_compress, nm_decompress
from robustprune.sparse_ops.nm_linear import nm_linear
from robustprune.sparse_ops.patterns import NMPattern, parse_pattern
from robustprune.sparse_ops.validation import check_finite


def require_nm(pattern: str | NMPattern) -> NMPattern:
    nm = parse_pattern(pattern)
    if nm is None:
        raise ValueError("SparseLinear needs an 'N:M' pattern such as '2:4' or '4:8', not 'unstructured'")
    return nm


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` (out, in) stored as N:M kept values plus packed indices.

    ``values`` is a trainable parameter (the sparsity pattern stays fixed); ``metadata`` is a uint8
    buffer (layout in :mod:`robustprune.sparse_ops.nm_format`). Build one with :meth:`from_dense`.
    """

    def __init__(self, in_features: int, out_features: int, pattern: str | NMPattern = "2:4", bias: bool = True,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.pattern = require_nm(pattern)
        n, m = self.pattern.n, self.pattern.m
        if in_features <= 0 or in_features % m:
            raise ValueError(f"in_features={in_features} must be a positive multiple of M={m} for pattern {n}:{m}")
        self.in_features, self.out_features = in_features, out_features
        factory = {"dtype": dtype, "device": device}
        self.values = nn.Parameter(torch.zeros(out_features, kept_per_row(in_features, n, m), **factory))
        self.register_buffer("metadata", torch.zeros(out_features, metadata_row_bytes(in_features, n, m),
                                                     dtype=torch.uint8, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None

    @classmethod
    def from_dense(cls, linear: nn.Module, pattern: str | NMPattern = "2:4", prune: bool = False) -> SparseLinear:
        """Compress an ``nn.Linear`` (or GPT-2 ``Conv1D``) whose weight is N:M.

        With ``prune=True`` the magnitude N:M mask is applied first; otherwise a weight with more
        than N non-zeros in some group raises ``ValueError``.
        """
        nm = require_nm(pattern)
        weight = dense_weight_of(linear)
        if prune:
            check_finite(weight, "weight")
            weight = weight * nm_mask(weight, nm.n, nm.m)
        values, metadata = nm_compress(weight, nm.n, nm.m)
        module = cls(weight.shape[1], weight.shape[0], nm, bias=linear.bias is not None,
                     dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            module.values.copy_(values)
            module.metadata.copy_(metadata)
            if linear.bias is not None:
                module.bias.copy_(linear.bias)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nm_linear(x, self.values, self.metadata, self.bias, self.pattern.n, self.pattern.m)

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, in) weight, rebuilt on each access (a copy: edits do not write back)."""
        return self.to_dense()

    def to_dense(self) -> torch.Tensor:
        return nm_decompress(self.values.detach(), self.metadata, self.pattern.n, self.pattern.m, self.in_features)

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` with the same (masked) weight and bias."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           dtype=self.values.dtype, device=self.values.device)
        with torch.no_grad():
            linear.weight.copy_(self.to_dense())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def weight_bytes(self) -> int:
        """Bytes at rest of the compressed weight (values + metadata)."""
        return self.values.numel() * self.values.element_size() + self.metadata.numel()

    def dense_weight_bytes(self) -> int:
        return self.in_features * self.out_features * self.values.element_size()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, pattern={self.pattern}, "
                f"bias={self.bias is not None}")


def dense_weight_of(module: nn.Module) -> torch.Tensor:
    """The (out, in) weight of an ``nn.Linear`` or of a GPT-2 ``Conv1D`` (stored (in, out))."""
    if isinstance(module, nn.Linear):
        return module.weight.detach()
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.detach().t()
    raise TypeError(f"cannot make a SparseLinear from {type(module).__name__}; expected nn.Linear or Conv1D")
