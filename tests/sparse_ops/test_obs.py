"""SparseGPT's blockwise OBS op against a straightforward per-column implementation of the reference.

``reference_sparsegpt`` below is SparseGPT's ``fasterprune`` (github.com/IST-DASLab/sparsegpt,
sparsegpt.py) line for line, with one documented change: the unstructured block mask prunes exactly
``int(numel * sparsity)`` weights (stable sort: ties prune the lower row-major index first) where the
reference's ``tmp <= sort(tmp)[int(numel * sparsity)]`` prunes one more (see
``test_reference_threshold_prunes_one_more_per_block``).
"""

import pytest
import torch

from robustprune.sparse_ops.obs import (
    HessianNotPositiveDefiniteError,
    damping_schedule,
    sparsegpt_hinv,
    sparsegpt_prune_,
    sparsegpt_prune_weight_,
)
from robustprune.sparse_ops.sparsegpt_algorithm import sparsegpt_layer


def reference_sparsegpt(W, Hinv, sparsity, prunen=0, prunem=0, blocksize=128):
    """Per-column SparseGPT. ``prunen`` counts PRUNED weights per group of ``prunem`` (the reference's
    convention); returns (pruned weight in fp32, keep-mask)."""
    W = W.clone().float()
    rows, columns = W.shape
    keep = torch.ones(rows, columns, dtype=torch.bool)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            k = int(tmp.numel() * sparsity)  # the reference: thresh = sort(...)[k]; mask1 = tmp <= thresh
            order = torch.sort(tmp.flatten(), stable=True)[1]
            mask1 = torch.zeros(tmp.numel(), dtype=torch.bool)
            mask1[order[:k]] = True
            mask1 = mask1.view(tmp.shape)
        else:
            mask1 = torch.zeros_like(W1) == 1
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        keep[:, i1:i2] = ~mask1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W, keep


def problem(rows, columns, seed=0, tokens=None):
    """A weight and the Hinv of a random-activation Hessian (built like the pruner builds it)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=g)
    x = torch.randn(tokens or 2 * columns, columns, generator=g) * torch.rand(columns, generator=g) * 2
    hinv, dead = sparsegpt_hinv(2 * x.t() @ x / x.shape[0])
    assert not bool(dead.any())
    return weight, hinv


PATTERNS = [("unstructured", 0.5), ("unstructured", 0.3), ("2:4", None), ("4:8", None)]
SHAPES = [(37, 96, 40), (24, 64, 32), (9, 64, 128)]  # (out, in, blocksize): narrow last block, one block


def run(weight, hinv, pattern, sparsity, blocksize):
    pruned = weight.clone()
    mask = sparsegpt_prune_(pruned, hinv, sparsity, pattern=pattern, blocksize=blocksize)
    return pruned, mask


def reference_args(pattern, sparsity):
    if pattern == "unstructured":
        return sparsity, 0, 0
    n, m = map(int, pattern.split(":"))
    return 0.0, m - n, m


@pytest.mark.parametrize("pattern,sparsity", PATTERNS)
@pytest.mark.parametrize("rows,columns,blocksize", SHAPES)
def test_matches_reference(pattern, sparsity, rows, columns, blocksize):
    weight, hinv = problem(rows, columns, seed=rows + columns)
    expected_w, expected_keep = reference_sparsegpt(weight, hinv, *reference_args(pattern, sparsity), blocksize)
    pruned, keep = run(weight, hinv, pattern, sparsity, blocksize)
    assert keep.dtype == torch.bool and keep.shape == weight.shape and keep.is_contiguous()
    assert torch.equal(keep, expected_keep)
    torch.testing.assert_close(pruned, expected_w, rtol=1e-5, atol=1e-6)
    assert bool((pruned[~keep] == 0).all())


@pytest.mark.parametrize("pattern,sparsity", PATTERNS)
@pytest.mark.parametrize("rows,columns,blocksize", SHAPES)
def test_algorithm_module_is_the_reference_and_the_op_its_fast_form(pattern, sparsity, rows, columns, blocksize):
    # the readable Algorithm 1 equals fasterprune line for line, and the op equals it bit for bit on the CPU
    weight, hinv = problem(rows, columns, seed=rows * columns)
    expected_w, expected_keep = reference_sparsegpt(weight, hinv, *reference_args(pattern, sparsity), blocksize)
    algorithm_w, algorithm_keep = sparsegpt_layer(weight, hinv, sparsity, pattern=pattern, blocksize=blocksize)
    assert torch.equal(algorithm_keep, expected_keep) and torch.equal(algorithm_w, expected_w)
    pruned, keep = run(weight, hinv, pattern, sparsity, blocksize)
    assert torch.equal(keep, algorithm_keep) and torch.equal(pruned, algorithm_w)


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.5), ("2:4", None), ("4:8", None)])
def test_algorithm_and_op_share_tie_rules(pattern, sparsity):
    # integer weights and a diagonal Hinv: many tied scores; both must prune the same ones
    g = torch.Generator().manual_seed(3)
    weight = torch.randint(-2, 3, (12, 32), generator=g).float()
    hinv = torch.eye(32)
    algorithm_w, algorithm_keep = sparsegpt_layer(weight, hinv, sparsity, pattern=pattern, blocksize=16)
    pruned, keep = run(weight, hinv, pattern, sparsity, 16)
    assert torch.equal(keep, algorithm_keep) and torch.equal(pruned, algorithm_w)
    assert torch.equal(algorithm_w, weight * algorithm_keep)  # diagonal Hinv: nothing to compensate


@pytest.mark.parametrize("pattern,sparsity", PATTERNS)
def test_pruned_counts(pattern, sparsity):
    rows, columns, blocksize = 37, 96, 40
    weight, hinv = problem(rows, columns)
    _, keep = run(weight, hinv, pattern, sparsity, blocksize)
    if pattern == "unstructured":  # exactly int(numel * sparsity) per block, jointly over rows
        for start in range(0, columns, blocksize):
            block = keep[:, start:start + blocksize]
            assert int((~block).sum()) == int(block.numel() * sparsity)
    else:
        n, m = map(int, pattern.split(":"))
        assert bool((keep.view(-1, m).sum(1) == n).all())


def test_compensation_beats_plain_masking():
    """The OBS update lowers the layer-output error ||(W - W') X||^2 against zeroing the same weights."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(512, 64, generator=g) @ torch.randn(64, 64, generator=g)  # correlated inputs
    weight = torch.randn(32, 64, generator=g)
    pruned = weight.clone()
    keep = sparsegpt_prune_weight_(pruned, 2 * x.t() @ x / x.shape[0], 0.5, blocksize=16)
    error = ((weight - pruned) @ x.t()).square().sum()
    masked_error = ((weight - weight * keep) @ x.t()).square().sum()
    assert error < 0.7 * masked_error


def test_reference_threshold_prunes_one_more_per_block():
    """The reference's `tmp <= sort(tmp)[k]` prunes k + 1 on tie-free data; we prune exactly k, its subset."""
    weight, hinv = problem(16, 32)
    _, keep = run(weight, hinv, "unstructured", 0.5, 32)  # one block: mask from the initial weights
    scores = weight ** 2 / hinv.diagonal() ** 2
    threshold = torch.sort(scores.flatten())[0][int(scores.numel() * 0.5)]
    reference_pruned = scores <= threshold
    assert int(reference_pruned.sum()) == int(scores.numel() * 0.5) + 1
    assert bool((reference_pruned | keep).all())  # everything we prune, the reference prunes
    assert int((reference_pruned & keep).sum()) == 1  # the reference's one extra: its largest score
    assert bool(scores[reference_pruned & keep] == threshold)


def test_unstructured_ties_prune_lower_row_major_index_first():
    weight = torch.ones(3, 8)
    keep = sparsegpt_prune_(weight, torch.eye(8), 0.5, blocksize=4)  # Hinv = I: no compensation
    expected = torch.tensor([[False] * 8, [False] * 2 + [True] * 2 + [False] * 2 + [True] * 2, [True] * 8])
    # each 3x4 block prunes 6 = its first six entries in row-major order
    assert torch.equal(keep, expected)
    assert torch.equal(weight, expected.float())


def test_nm_ties_keep_lower_index():
    weight = torch.ones(2, 8)
    keep = sparsegpt_prune_(weight, torch.eye(8), pattern="2:4")
    assert torch.equal(keep, torch.tensor([[True, True, False, False] * 2] * 2))


def test_sparsity_zero_changes_nothing():
    weight, hinv = problem(8, 32)
    pruned, keep = run(weight, hinv, "unstructured", 0.0, 16)
    assert bool(keep.all())
    assert torch.equal(pruned, weight)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.5), ("2:4", None)])
def test_half_precision_weights_computed_in_fp32(dtype, pattern, sparsity):
    weight, hinv = problem(12, 32)
    weight = weight.to(dtype)
    pruned, keep = run(weight, hinv, pattern, sparsity, 16)
    expected, expected_keep = run(weight.float(), hinv, pattern, sparsity, 16)
    assert pruned.dtype == dtype
    assert torch.equal(keep, expected_keep)
    assert torch.equal(pruned, expected.to(dtype))


def test_transposed_weight_view_is_pruned_in_place():
    """GPT-2's Conv1D stores [in, out]: the op prunes the [out, in] view in place."""
    weight, hinv = problem(12, 32)
    storage = weight.t().contiguous()
    keep = sparsegpt_prune_(storage.t(), hinv, 0.5, blocksize=16)
    expected, expected_keep = run(weight, hinv, "unstructured", 0.5, 16)
    assert torch.equal(keep, expected_keep)
    assert torch.equal(storage.t(), expected)


def test_column_major_hinv():
    weight, hinv = problem(12, 32)
    expected, expected_keep = run(weight, hinv, "2:4", None, 16)
    pruned, keep = run(weight, hinv.t().contiguous().t(), "2:4", None, 16)
    assert torch.equal(keep, expected_keep) and torch.equal(pruned, expected)


def test_dead_columns():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(100, 16, generator=g)
    x[:, [2, 9]] = 0  # inputs that never fire
    hessian = 2 * x.t() @ x / 100
    original = hessian.clone()
    hinv, dead = sparsegpt_hinv(hessian)
    assert torch.equal(hessian, original)  # not modified unless inplace=True
    assert torch.equal(torch.nonzero(dead).view(-1), torch.tensor([2, 9]))
    fixed = original.clone()
    fixed[[2, 9], [2, 9]] = 1
    fixed.diagonal().add_(0.01 * fixed.diagonal().mean())
    expected = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(fixed)), upper=True)
    torch.testing.assert_close(hinv, expected)
    weight = torch.randn(6, 16, generator=g)
    keep = sparsegpt_prune_weight_(weight, original, 0.5, blocksize=8)
    assert bool((weight[:, [2, 9]] == 0).all())
    assert not bool(keep[:, [2, 9]].any())  # zero weights score lowest


def test_hinv_is_the_upper_factor_of_the_damped_inverse():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 24, generator=g)
    hessian = 2 * x.t() @ x / 60
    hinv, _ = sparsegpt_hinv(hessian, damp=0.05)
    assert hinv.is_contiguous() and torch.equal(hinv, hinv.triu())
    damped = hessian + 0.05 * hessian.diagonal().mean() * torch.eye(24)
    torch.testing.assert_close(hinv.t() @ hinv, torch.linalg.inv(damped), rtol=1e-3, atol=1e-4)
    inplace = hessian.clone()
    sparsegpt_hinv(inplace, damp=0.05, inplace=True)
    torch.testing.assert_close(inplace, damped)


def test_damping_retry_warns_then_succeeds():
    hessian = torch.tensor([[1.0, 3.0], [3.0, 1.0]])  # eigenvalues -2 and 4: PD once damp * 1 > 2
    with pytest.warns(UserWarning, match="not positive definite") as record:
        hinv, _ = sparsegpt_hinv(hessian, damp=0.01, max_attempts=4)
    assert len(record) == 3  # 0.01, 0.1 and 1 fail; 10 succeeds
    assert "retrying with damp=0.1" in str(record[0].message)
    damped = hessian + 10.0 * torch.eye(2)
    torch.testing.assert_close(hinv.t() @ hinv, torch.linalg.inv(damped))


def test_damping_failure_raises_clearly():
    hessian = torch.tensor([[1.0, 3.0], [3.0, 1.0]])
    with pytest.warns(UserWarning), pytest.raises(HessianNotPositiveDefiniteError,
                                                  match=r"not positive definite even with damp=1 "):
        sparsegpt_hinv(hessian, damp=0.01, max_attempts=3)


def test_damping_schedule():
    assert damping_schedule(0.01, 4) == pytest.approx([0.01, 0.1, 1.0, 10.0])
    assert damping_schedule(0.0, 3) == pytest.approx([0.0, 0.01, 0.1])


def test_hinv_validation():
    with pytest.raises(TypeError, match="float32"):
        sparsegpt_hinv(torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        sparsegpt_hinv(torch.ones(3, 4))
    bad = torch.eye(4)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        sparsegpt_hinv(bad)
    with pytest.raises(ValueError, match="damp"):
        sparsegpt_hinv(torch.eye(4), damp=-0.1)


def test_prune_validation():
    weight, hinv = problem(8, 32)
    with pytest.raises(ValueError, match="hinv has shape"):
        sparsegpt_prune_(weight.clone(), hinv[:16, :16], 0.5)
    with pytest.raises(TypeError, match="float32"):
        sparsegpt_prune_(weight.clone(), hinv.double(), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        sparsegpt_prune_(weight.clone(), hinv, 1.0)
    with pytest.raises(ValueError, match="sparsity is required"):
        sparsegpt_prune_(weight.clone(), hinv)
    with pytest.raises(ValueError, match="conflicts with pattern 2:4"):
        sparsegpt_prune_(weight.clone(), hinv, 0.3, pattern="2:4")
    with pytest.raises(ValueError, match="multiple of M=8"):
        sparsegpt_prune_(weight.clone(), hinv, pattern="4:8", blocksize=12)
    with pytest.raises(ValueError, match="blocksize"):
        sparsegpt_prune_(weight.clone(), hinv, 0.5, blocksize=0)
    w36, h36 = problem(4, 36)
    with pytest.raises(ValueError, match="not divisible by M=8"):
        sparsegpt_prune_(w36, h36, pattern="4:8")
    nan_weight = weight.clone()
    nan_weight[3, 4] = float("inf")
    with pytest.raises(ValueError, match="weight contains 1 NaN/Inf"):
        sparsegpt_prune_(nan_weight, hinv, 0.5)
    with pytest.raises(ValueError, match="positive diagonal"):
        sparsegpt_prune_(weight.clone(), -hinv, 0.5)
    with pytest.raises(ValueError, match="2-D"):
        sparsegpt_prune_(weight.clone().view(2, 4, 32), hinv, 0.5)


def test_opcheck():
    weight, hinv = problem(8, 32)
    torch.library.opcheck(torch.ops.robustprune.sparsegpt_prune_.default, (weight, hinv, 0.5, 0, 0, 16))
    torch.library.opcheck(torch.ops.robustprune.sparsegpt_prune_.default, (weight, hinv, 0.5, 2, 4, 16))
