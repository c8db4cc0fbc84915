"""SparseGPT's blockwise OBS update: ``robustprune::sparsegpt_prune_(weight, hinv, ...) -> keep-mask``.

The op prunes ``weight`` (``[out, in]``) in place and lets the surviving weights absorb the error,
exactly as SparseGPT's reference ``fasterprune`` (Frantar & Alistarh, 2023) does. The algorithm itself,
as the paper writes it, is :func:`robustprune.sparse_ops.sparsegpt_algorithm.sparsegpt_layer`; this op is
its fast form (same masks and weights, tested), and this docstring describes only what makes it fast. Given ``hinv``, the
upper Cholesky factor of ``H^-1`` (``H = 2 X X^T`` over the calibration inputs; build it with
:func:`sparsegpt_hinv`), the ``in`` columns are processed in blocks of ``blocksize`` (default 128):

- unstructured: before the column loop of a block, score every weight of the block by
  ``w^2 / diag(hinv)^2`` (the block's current weights, i.e. after the earlier blocks' updates) and
  prune the ``int(rows * width * sparsity)`` lowest scores of the block, over all rows jointly;
- N:M: at every M-th column inside the column loop, score the next M columns of the *already
  updated* weights the same way and keep the N largest of every group (N counts KEPT weights);
- for each column ``i`` of the block: ``q = w * keep``, ``err = (w - q) / hinv[i, i]``,
  ``W[:, i+1:end] -= err (x) hinv[i, i+1:end]``; column ``i`` becomes ``q``;
- after the block: ``W[:, end:] -= Err @ hinv[block, end:]`` (one matmul).

Tie rules, and the two places where this deliberately differs from the reference code:

- Unstructured: the reference computes ``thresh = sort(scores)[int(numel * sparsity)]`` and prunes
  ``scores <= thresh``: one weight more than ``int(numel * sparsity)`` per block (plus every weight
  tied with ``thresh``), and one weight per block even at sparsity 0. Here exactly
  ``int(numel * sparsity)`` weights are pruned per block; among scores tied at the cut the lower
  row-major index (in the ``[out, in]`` orientation) is pruned first. On tie-free data the pruned set
  is the reference's minus its single largest-scored weight per block.
- N:M: the reference prunes ``torch.topk(scores, M - N, largest=False)`` (unspecified tie order);
  here ties keep the lower index within the group, as :func:`robustprune.ops.nm_mask` does.

Everything else follows the reference operation for operation: on the CPU the result is bit-identical
to the straightforward per-column implementation (``tests/sparse_ops/test_obs.py`` holds one). Only the
upper triangle of ``hinv`` is read.

CPU path: the block is held transposed (``[width, out]``, so that a column of W is a contiguous row),
``err`` is one division by a per-block divisor that is ``inf`` where the weight is kept, each rank-1
update is one in-place ``addmm_`` over the block's remaining columns only, and the cross-block update is
one ``addmm_``. CUDA path: a Triton kernel runs the column loop of a block (one launch per block, the
block of W resident in registers) and torch does the cross-block matmul.
"""

from __future__ import annotations

import warnings

import torch

from robustprune.sparse_ops.backend import (
    check_triton_device,
    count_launch,
    skip_dynamo_until_loaded,
    triton_route,
)
from robustprune.sparse_ops.nm import selection_network
from robustprune.sparse_ops.patterns import NMPattern, check_nm, resolve_sparsity
from robustprune.sparse_ops.validation import check_finite, check_float_tensor, check_sparsity

DEFAULT_BLOCKSIZE = 128
DEFAULT_DAMP = 0.01
DEFAULT_DAMP_ATTEMPTS = 4
RETRY_DAMP_FLOOR = 1e-3  # damping restarts from here (x10 per retry) when the caller asked for damp=0


class HessianNotPositiveDefiniteError(RuntimeError):
    """The Hessian stayed non-positive-definite after every damping attempt."""


# --------------------------------------------------------------------------------------------- H^-1

def _check_hessian(hessian: torch.Tensor, damp: float, max_attempts: int) -> None:
    if not isinstance(hessian, torch.Tensor):
        raise TypeError(f"H must be a torch.Tensor, got {type(hessian).__name__}")
    if hessian.dtype != torch.float32:
        raise TypeError(f"H has dtype {hessian.dtype}; accumulate the SparseGPT Hessian in float32")
    if hessian.dim() != 2 or hessian.shape[0] != hessian.shape[1] or hessian.numel() == 0:
        raise ValueError(f"H must be a non-empty square [in, in] matrix, got shape {tuple(hessian.shape)}")
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not damp >= 0.0 or damp == float("inf"):
        raise ValueError(f"damp must be a finite float >= 0 (a fraction of mean(diag H)), got {damp!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
    check_finite(hessian, "H")


def damping_schedule(damp: float, max_attempts: int) -> list[float]:
    """Damping fractions tried in turn: ``damp``, then 10x more per retry (from 1e-3 if ``damp`` is 0)."""
    fractions = [float(damp)]
    base = float(damp) if damp > 0 else RETRY_DAMP_FLOOR
    for attempt in range(1, max_attempts):
        fractions.append(base * 10.0 ** attempt)
    return fractions


def sparsegpt_hinv(hessian: torch.Tensor, damp: float = DEFAULT_DAMP, *,
                   max_attempts: int = DEFAULT_DAMP_ATTEMPTS,
                   inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT's ``Hinv``: the upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1``.

    As the reference: dead inputs (``H_ii == 0``, the input never fired) get ``H_ii = 1`` (zero their
    weight columns: the second return value marks them), then ``damp * mean(diag H)`` is added to the
    diagonal and ``Hinv = cholesky(cholesky_inverse(cholesky(H)), upper=True)``.

    If a Cholesky factorisation fails, the damping is raised 10x (``damp``, ``10 damp``, ...; from
    ``1e-3`` when ``damp`` is 0) with a ``UserWarning``, for ``max_attempts`` attempts in all; then
    :class:`HessianNotPositiveDefiniteError` is raised.

    Args:
        hessian: ``[in, in]`` float32, symmetric (only its lower triangle is read by Cholesky).
        damp: fraction of ``mean(diag H)`` added to the diagonal (SparseGPT's ``percdamp``).
        max_attempts: damping attempts before giving up.
        inplace: overwrite ``hessian`` (dead diagonal entries set to 1, damping added) instead of a copy.

    Returns:
        ``(hinv, dead)``: ``hinv`` float32 ``[in, in]`` upper triangular; ``dead`` bool ``[in]``.
    """
    _check_hessian(hessian, damp, max_attempts)
    h = hessian if inplace else hessian.clone()
    diagonal = h.diagonal()
    dead = diagonal == 0
    diagonal.masked_fill_(dead, 1.0)
    mean_diag = float(diagonal.mean())
    added = 0.0
    failure = ""
    schedule = damping_schedule(damp, max_attempts)
    for attempt, fraction in enumerate(schedule):
        amount = fraction * mean_diag
        diagonal.add_(amount - added)
        added = amount
        lower, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if int(info) == 0 and bool(torch.isfinite(upper.diagonal()).all()):
                return upper.contiguous(), dead
            failure = f"the Cholesky factor of H^-1 failed (leading minor {int(info)})"
        else:
            failure = f"the Cholesky factor of H failed (leading minor {int(info)} not positive)"
        if attempt + 1 < len(schedule):
            warnings.warn(f"SparseGPT Hessian ({h.shape[0]}x{h.shape[0]}) is not positive definite with "
                          f"damp={fraction:g} ({failure}); retrying with damp={schedule[attempt + 1]:g}",
                          stacklevel=2)
    raise HessianNotPositiveDefiniteError(
        f"SparseGPT Hessian ({h.shape[0]}x{h.shape[0]}) is not positive definite even with damp="
        f"{schedule[-1]:g} x mean(diag H) after {len(schedule)} attempts ({failure}). The calibration "
        "activations are degenerate (e.g. too few tokens, or huge values); use more calibration data or a "
        "larger damp")


# -------------------------------------------------------------------------------------------- checks

def _check_prune_inputs(weight: torch.Tensor, hinv: torch.Tensor, sparsity: float, n: int, m: int,
                        blocksize: int, values: bool = True) -> None:
    check_float_tensor(weight, "weight")
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D [out, in] matrix, got shape {tuple(weight.shape)}")
    if not isinstance(hinv, torch.Tensor):
        raise TypeError(f"hinv must be a torch.Tensor, got {type(hinv).__name__}")
    if hinv.dtype != torch.float32:
        raise TypeError(f"hinv has dtype {hinv.dtype}; it must be float32 (see sparsegpt_hinv)")
    columns = weight.shape[1]
    if tuple(hinv.shape) != (columns, columns):
        raise ValueError(f"hinv has shape {tuple(hinv.shape)}; weight {tuple(weight.shape)} needs "
                         f"[in, in] = ({columns}, {columns})")
    if hinv.device != weight.device:
        raise ValueError(f"weight is on {weight.device} but hinv is on {hinv.device}")
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive int, got {blocksize!r}")
    if n == 0 and m == 0:
        check_sparsity(sparsity)
    else:
        check_nm(n, m)
        if columns % m:
            raise ValueError(f"weight has in_features={columns}, not divisible by M={m}: cannot form "
                             f"{n}:{m} groups (N = weights kept per group of M)")
        if blocksize % m:
            raise ValueError(f"blocksize={blocksize} must be a multiple of M={m} so that {n}:{m} groups "
                             "do not straddle blocks")
    if values:
        check_finite(weight, "weight")
        check_finite(hinv, "hinv")
        diagonal = hinv.diagonal()
        if not bool((diagonal > 0).all()):
            bad = int(torch.nonzero(diagonal <= 0)[0, 0])
            raise ValueError(f"hinv must be the upper Cholesky factor of H^-1 (positive diagonal), but "
                             f"hinv[{bad}, {bad}] = {float(diagonal[bad])!r}; build it with sparsegpt_hinv")


# ------------------------------------------------------------------------------------------- helpers

def block_keep_unstructured(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask of one block: prune exactly ``int(numel * sparsity)`` lowest ``scores`` jointly over
    all rows; ties at the cut prune the lower row-major index of ``scores`` (``[out, width]``
    orientation; a transposed view is fine) first. Returns bool with ``scores``' shape and strides."""
    k = int(scores.numel() * sparsity)
    if k == 0:
        return torch.ones_like(scores, dtype=torch.bool)
    flat = scores.t() if scores.t().is_contiguous() else scores.contiguous()
    threshold = flat.reshape(-1).kthvalue(k).values
    keep = scores > threshold
    tied = scores == threshold
    below = scores.numel() - int(keep.sum()) - int(tied.sum())
    prune_ties = k - below  # 1 <= prune_ties <= number of ties
    index = torch.nonzero(tied)  # row-major order of the [out, width] orientation
    if prune_ties < index.shape[0]:
        rest = index[prune_ties:]
        keep[rest[:, 0], rest[:, 1]] = True
    return keep


def _group_keep_lanes(scores: torch.Tensor, n: int, m: int, lane_bias: torch.Tensor,
                      out: torch.Tensor) -> torch.Tensor:
    """N:M keep-mask of one group held lane-major (``[m, rows]``): the ``n`` largest scores per row,
    ties to the lower lane. Scores are non-negative floats, so their int32 bit patterns order like
    them; ``bits * 16 + (m - 1 - lane)`` makes every key unique with the tie rule built in."""
    keys = torch.add(lane_bias, scores.view(torch.int32), alpha=16)
    if m <= 8 and scores.shape[1] >= 1024:  # long rows: a selection network beats topk's overhead
        lanes = list(keys.unbind(0))
        for lo, hi in selection_network(m, (m - n,)):
            lanes[lo], lanes[hi] = torch.minimum(lanes[lo], lanes[hi]), torch.maximum(lanes[lo], lanes[hi])
        nth = lanes[m - n]
    else:
        nth = keys.topk(n, dim=0).values[n - 1]
    return torch.ge(keys, nth, out=out)


def _working_copy(weight: torch.Tensor, transposed: bool) -> tuple[torch.Tensor, bool]:
    """fp32 working matrix (``[in, out]`` if ``transposed`` else ``[out, in]``, contiguous) and
    whether it must be copied back into ``weight`` at the end."""
    view = weight.t() if transposed else weight
    if weight.dtype == torch.float32 and view.is_contiguous():
        return view, False
    work = torch.empty(view.shape, dtype=torch.float32, device=weight.device)
    work.copy_(view)
    return work, True


# ----------------------------------------------------------------------------------------------- op

def sparsegpt_prune_(weight: torch.Tensor, hinv: torch.Tensor, sparsity: float | None = None, *,
                     pattern: str | NMPattern | None = "unstructured",
                     blocksize: int = DEFAULT_BLOCKSIZE) -> torch.Tensor:
    """Prune ``weight`` (``[out, in]``, fp32/fp16/bf16, any layout) in place with SparseGPT's OBS update.

    Args:
        weight: the matrix, input dimension last (pass ``conv1d.weight.t()`` for GPT-2's Conv1D).
            Computed in fp32 and written back in its own dtype.
        hinv: float32 ``[in, in]``, the upper Cholesky factor of ``H^-1`` from :func:`sparsegpt_hinv`.
            Zero ``weight``'s dead columns (``sparsegpt_hinv``'s second result) before calling.
        sparsity: unstructured: fraction pruned in [0, 1), exactly ``int(out * width * sparsity)`` per
            block of columns. N:M: leave None (it is 1 - N/M).
        pattern: ``"unstructured"`` or ``"N:M"`` (N KEPT of every M consecutive input weights).
        blocksize: columns per block (a multiple of M for N:M).

    Returns:
        The bool keep-mask, ``[out, in]``. See the module docstring for tie rules.
    """
    sparsity, nm = resolve_sparsity(sparsity, pattern)
    n, m = (nm.n, nm.m) if nm is not None else (0, 0)
    _check_prune_inputs(weight, hinv, sparsity, n, m, blocksize, values=False)  # the op checks values
    return _sparsegpt_prune_op(weight, hinv, float(sparsity), n, m, int(blocksize))


def sparsegpt_prune_weight_(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float | None = None, *,
                            pattern: str | NMPattern | None = "unstructured",
                            blocksize: int = DEFAULT_BLOCKSIZE, damp: float = DEFAULT_DAMP) -> torch.Tensor:
    """:func:`sparsegpt_hinv` of ``hessian``, zero ``weight``'s dead columns, then
    :func:`sparsegpt_prune_`. ``hessian`` is left untouched. Returns the keep-mask."""
    hinv, dead = sparsegpt_hinv(hessian, damp)
    if bool(dead.any()):
        weight[:, dead] = 0
    return sparsegpt_prune_(weight, hinv, sparsity, pattern=pattern, blocksize=blocksize)


@torch.library.custom_op("robustprune::sparsegpt_prune_", mutates_args=("weight",), device_types="cpu")
def _sparsegpt_prune_op(weight: torch.Tensor, hinv: torch.Tensor, sparsity: float, n: int, m: int,
                        blocksize: int) -> torch.Tensor:
    if triton_route():  # route("triton"): the CUDA implementation on these CPU tensors
        return _sparsegpt_prune_triton(weight, hinv, sparsity, n, m, blocksize)
    count_launch("robustprune::sparsegpt_prune_", "cpu", (weight, hinv))
    _check_prune_inputs(weight, hinv, sparsity, n, m, blocksize)
    rows, columns = weight.shape
    hinv = hinv.contiguous()  # row slices hinv[i, i+1:] are read per column
    work, copy_back = _working_copy(weight, transposed=True)  # [in, out]: column i of W is work[i]
    keep = torch.empty((columns, rows), dtype=torch.bool)
    diagonal = hinv.diagonal()
    diagonal_sq = diagonal.square()
    width = min(blocksize, columns)
    err = torch.empty((width, rows), dtype=torch.float32)
    divisor = torch.empty((width, rows), dtype=torch.float32)  # hinv[i, i] where pruned, inf where kept
    product = torch.empty((width, rows), dtype=torch.float32)  # the rank-1 update's hinv[i, j] * err
    inf = torch.tensor(float("inf"))
    lane_bias = (m - 1 - torch.arange(m)).view(m, 1) if m else None
    for start in range(0, columns, blocksize):
        end = min(start + blocksize, columns)
        count = end - start
        w_block, keep_block = work[start:end], keep[start:end]
        err_block, div_block = err[:count], divisor[:count]
        d_block = diagonal[start:end].unsqueeze(1)
        h_block = hinv[start:end, start:end]
        if m == 0:
            keep_block.copy_(block_keep_unstructured(w_block.square().div_(diagonal_sq[start:end, None]).t(),
                                                     sparsity).t())
            torch.where(keep_block, inf, d_block, out=div_block)
        # Per-column views made in bulk: Python overhead per column is what this loop is made of.
        w_rows, err_rows, div_rows = w_block.split(1), err_block.split(1), div_block.split(1)
        h_columns = h_block.unsqueeze(2).unbind(0)  # h_columns[i][j] = hinv[i, j] as a [*, 1] column
        if m:
            groups = list(zip(w_block.split(m), diagonal_sq[start:end, None].split(m), keep_block.split(m),
                              d_block.split(m), div_block.split(m)))
        for i in range(count):
            if m and i % m == 0:
                w_group, dsq_group, keep_group, d_group, div_group = groups[i // m]
                scores = torch.div(w_group.square(), dsq_group)
                torch.where(_group_keep_lanes(scores, n, m, lane_bias, keep_group), inf, d_group, out=div_group)
            e = torch.div(w_rows[i], div_rows[i], out=err_rows[i])  # (w - q) / d: w/d if pruned, else 0
            if i + 1 < count:
                # Rank-1 update of the block's remaining columns only, the product rounded before the
                # subtraction as in the reference, fl(w - fl(err * h)): a K=1 addmm_ (or addcmul_)
                # fuses the two into one rounding where the BLAS uses FMA (MKL on AVX-512).
                rest = product[:count - i - 1]
                torch.mul(h_columns[i][i + 1:], e, out=rest)
                w_block[i + 1:].sub_(rest)
        w_block.mul_(keep_block).add_(0.0)  # q = w * keep; "+ 0" turns -0.0 into the reference's +0.0
        if end < columns:
            work[end:].addmm_(hinv[start:end, end:].t(), err_block, alpha=-1)
    if copy_back:
        weight.copy_(work.t())
    return keep.t().contiguous()


@_sparsegpt_prune_op.register_kernel("cuda")
def _sparsegpt_prune_triton(weight: torch.Tensor, hinv: torch.Tensor, sparsity: float, n: int, m: int,
                            blocksize: int) -> torch.Tensor:
    count_launch("robustprune::sparsegpt_prune_", "triton", (weight, hinv))
    _check_prune_inputs(weight, hinv, sparsity, n, m, blocksize)
    check_triton_device(weight, "weight")
    from robustprune.kernels.obs import sparsegpt_block_

    rows, columns = weight.shape
    hinv = hinv.contiguous()  # the kernel reads rows of the diagonal block
    work, copy_back = _working_copy(weight, transposed=False)  # [out, in] row-major
    keep = torch.empty((rows, columns), dtype=torch.bool, device=weight.device)
    keep_bytes = keep.view(torch.uint8)
    diagonal_sq = hinv.diagonal().square()
    err = torch.empty((rows, min(blocksize, columns)), dtype=torch.float32, device=weight.device)
    for start in range(0, columns, blocksize):
        end = min(start + blocksize, columns)
        err_block = err[:, :end - start]
        if m == 0:  # the block's quantile spans every row: chosen here, before the column loop, as the reference
            scores = work[:, start:end].square().div_(diagonal_sq[start:end])
            keep[:, start:end] = block_keep_unstructured(scores, sparsity)
        sparsegpt_block_(work[:, start:end], hinv[start:end, start:end], err_block, keep_bytes[:, start:end], n, m)
        if end < columns:
            work[:, end:].addmm_(err_block, hinv[start:end, end:], alpha=-1)
    if copy_back:
        weight.copy_(work)
    return keep


@_sparsegpt_prune_op.register_fake
def _sparsegpt_prune_fake(weight: torch.Tensor, hinv: torch.Tensor, sparsity: float, n: int, m: int,
                          blocksize: int) -> torch.Tensor:
    _check_prune_inputs(weight, hinv, sparsity, n, m, blocksize, values=False)
    return torch.empty(weight.shape, dtype=torch.bool, device=weight.device)


skip_dynamo_until_loaded(_sparsegpt_prune_op)

__all__ = [
    "DEFAULT_BLOCKSIZE",
    "DEFAULT_DAMP",
    "HessianNotPositiveDefiniteError",
    "block_keep_unstructured",
    "damping_schedule",
    "sparsegpt_hinv",
    "sparsegpt_prune_",
    "sparsegpt_prune_weight_",
]
