"""SparseGPT's layer algorithm as the paper writes it (Frantar & Alistarh, 2023, Algorithm 1).

Prune one weight matrix ``W`` (``[out, in]``) to a sparsity and let the surviving weights absorb the
error, given ``Hinv``: the upper Cholesky factor of ``H^-1``, ``H = 2 X X^T`` over the layer's calibration
inputs (:func:`robustprune.sparse_ops.obs.sparsegpt_hinv` builds it). Columns are visited left to right
in blocks of ``B`` (lazy batch updates)::

    for each block of columns i .. i+B-1:
        (unstructured) M[:, block] <- keep all but the int(out * B * p) lowest w^2 / Hinv[c, c]^2 of the block
        for each column j of the block:
            (N:M, every M-th column) M[:, j:j+M] <- keep the N largest w^2 / Hinv[c, c]^2 of each row's group
            E[:, j] <- (1 - M[:, j]) * W[:, j] / Hinv[j, j]            pruning error, kept weights frozen
            W[:, j:i+B] <- W[:, j:i+B] - E[:, j] Hinv[j, j:i+B]        OBS update of the block's rest
            W[:, j] <- M[:, j] * W[:, j]
        W[:, i+B:] <- W[:, i+B:] - E Hinv[i:i+B, i+B:]                lazy update of all later columns

This module is that loop and nothing else: it is the definition. The op
:func:`robustprune.sparse_ops.obs.sparsegpt_prune_` computes the same masks and weights fast (transposed
working copy, one fused rank-1 update per column, a Triton kernel on CUDA); the tests hold the two equal,
and both equal a line-for-line transcription of the reference ``fasterprune``. Tie rules: unstructured
prunes exactly ``int(numel * p)`` per block (ties prune the lower row-major index first; the reference's
``<= threshold`` prunes one more), N:M keeps the lower index among ties.
"""

from __future__ import annotations

import torch

from robustprune.sparse_ops.patterns import NMPattern, resolve_sparsity


def sparsegpt_layer(weight: torch.Tensor, hinv: torch.Tensor, sparsity: float | None = None, *,
                    pattern: str | NMPattern | None = "unstructured",
                    blocksize: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one ``[out, in]`` weight, written as Algorithm 1 (slow: the readable definition).

    Args:
        weight: ``[out, in]``; not modified (a float32 copy is pruned).
        hinv: float32 ``[in, in]`` upper Cholesky factor of ``H^-1``.
        sparsity: unstructured: fraction pruned per block of columns, in [0, 1). N:M: None.
        pattern: ``"unstructured"`` or ``"N:M"`` (N kept of every M along the input dimension).
        blocksize: columns per lazy-update block ``B`` (a multiple of M for N:M).

    Returns:
        ``(pruned float32 weight, bool keep-mask)``, both ``[out, in]``.
    """
    sparsity, nm = resolve_sparsity(sparsity, pattern)
    W = weight.detach().clone().float()
    rows, columns = W.shape
    d = hinv.diagonal()
    M = torch.ones(rows, columns, dtype=torch.bool, device=W.device)
    for i in range(0, columns, blocksize):
        end = min(i + blocksize, columns)
        E = torch.zeros(rows, end - i, device=W.device)
        if nm is None:
            scores = (W[:, i:end] ** 2 / d[i:end] ** 2).flatten()
            lowest = torch.argsort(scores, stable=True)[: int(scores.numel() * sparsity)]
            keep = torch.ones_like(scores, dtype=torch.bool)
            keep[lowest] = False
            M[:, i:end] = keep.view(rows, end - i)
        for j in range(i, end):
            if nm is not None and (j - i) % nm.m == 0:
                scores = W[:, j:j + nm.m] ** 2 / d[j:j + nm.m] ** 2
                pruned = torch.argsort(scores, dim=1, descending=True, stable=True)[:, nm.n:]
                M[:, j:j + nm.m].scatter_(1, pruned, False)
            q = torch.where(M[:, j], W[:, j], 0.0)
            E[:, j - i] = (W[:, j] - q) / d[j]
            W[:, j:end] -= torch.outer(E[:, j - i], hinv[j, j:end])
            W[:, j] = q
        W[:, end:] -= E @ hinv[i:end, end:]
    return W, M


__all__ = ["sparsegpt_layer"]
