import pytest
import torch
import torch.nn.functional as F

from robustprune.ops import nm_compress, nm_linear, nm_mask
from robustprune.sparse_ops.nm_format import unpack_indices
from tests.conftest import DTYPES
from tests.reference import nm_linear_backward_bounds, within_bound, within_rounding


def problem(out, in_features, n, m, dtype, batch_shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, in_features, generator=g).to(dtype)
    w = w * nm_mask(w, n, m)
    x = torch.randn(*batch_shape, in_features, generator=g).to(dtype)
    b = torch.randn(out, generator=g).to(dtype)
    return w, x, b


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (5, 16)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_shape", [(1,), (7,), (3, 5)])
def test_forward_matches_masked_dense_linear(n, m, dtype, batch_shape):
    w, x, b = problem(37, 6 * m, n, m, dtype, batch_shape)
    values, metadata = nm_compress(w, n, m)
    assert within_rounding(nm_linear(x, values, metadata, b, n, m), x, w, b, dtype)
    assert within_rounding(nm_linear(x, values, metadata, None, n, m), x, w, None, dtype)
    # an output off by 3 % is caught (in fp32 too: the reference is float64)
    assert not within_rounding(nm_linear(x, values, metadata, b, n, m) * 1.03, x, w, b, dtype)


def test_many_row_blocks_cpu():
    w, x, b = problem(700, 512, 2, 4, torch.float32, (9,))  # several 1 MiB blocks of rows
    values, metadata = nm_compress(w, 2, 4)
    assert torch.allclose(nm_linear(x, values, metadata, b, 2, 4), F.linear(x, w, b), atol=1e-4)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_masked_dense(n, m, dtype):
    w, x, b = problem(29, 4 * m, n, m, dtype, (2, 3), seed=1)
    values, metadata = nm_compress(w, n, m)
    values.requires_grad_()
    bias = b.clone().requires_grad_()
    xs = x.clone().requires_grad_()
    grad_y = torch.randn(2, 3, 29, generator=torch.Generator().manual_seed(2)).to(dtype)
    nm_linear(xs, values, metadata, bias, n, m).backward(grad_y)

    lanes = unpack_indices(metadata, values.shape[1], m).view(29, -1, n)
    bounds = nm_linear_backward_bounds(grad_y, x, w, lanes, dtype)
    for grad, bound in zip((xs.grad, values.grad, bias.grad), bounds, strict=True):
        assert grad.dtype == dtype and within_bound(grad, bound)
        assert not within_bound(grad * 1.03, bound)  # an error of 3 % is caught, in fp32 as in fp16 / bf16


@pytest.mark.parametrize("n,m", [(2, 4), (5, 16)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_shape", [(1,), (3, 5)])
def test_exact_on_integers(n, m, dtype, batch_shape):
    """Values in -2..2 (|y| <= 4 * 30 kept products + 2, |grads| <= 4 * 29): every product and partial sum is
    exact in fp32 and every result an integer each format holds, so forward and gradients must be exact; an
    error of one ulp is caught, in fp32 too."""
    g = torch.Generator().manual_seed(4)
    w = torch.randint(-2, 3, (29, 6 * m), generator=g).to(dtype)
    w = w * nm_mask(w, n, m)
    x = torch.randint(-2, 3, (*batch_shape, 6 * m), generator=g).to(dtype)
    b = torch.randint(-2, 3, (29,), generator=g).to(dtype)
    grad_y = torch.randint(-2, 3, (*batch_shape, 29), generator=g).to(dtype)
    values, metadata = nm_compress(w, n, m)
    exact = x.double() @ w.double().t()
    assert torch.equal(nm_linear(x, values, metadata, b, n, m).double(), exact + b.double())
    values.requires_grad_()
    xs = x.clone().requires_grad_()
    nm_linear(xs, values, metadata, None, n, m).backward(grad_y)
    lanes = unpack_indices(metadata, values.shape[1], m).view(29, -1, n)
    grad_w = grad_y.double().reshape(-1, 29).t() @ x.double().reshape(-1, 6 * m)
    assert torch.equal(xs.grad.double(), grad_y.double() @ w.double())
    assert torch.equal(values.grad.double(), torch.gather(grad_w.view(29, -1, m), 2, lanes).flatten(1))


def test_opcheck():
    w, x, b = problem(8, 16, 2, 4, torch.float32, (3,), seed=3)
    values, metadata = nm_compress(w, 2, 4)
    torch.library.opcheck(torch.ops.robustprune.nm_linear.default,
                          (x.requires_grad_(), values.requires_grad_(), metadata, b.requires_grad_(), 2, 4))
    grad_y = torch.randn(3, 8)
    torch.library.opcheck(torch.ops.robustprune.nm_linear_backward.default,
                          (grad_y, x.detach(), values.detach(), metadata, 2, 4))


def test_clear_errors():
    w, x, b = problem(8, 16, 2, 4, torch.float32, (3,))
    values, metadata = nm_compress(w, 2, 4)
    with pytest.raises(TypeError, match="input has dtype torch.float16 but the sparse weight is torch.float32"):
        nm_linear(x.half(), values, metadata, b, 2, 4)
    with pytest.raises(ValueError, match="last dimension must be in_features=16"):
        nm_linear(x[:, :8], values, metadata, b, 2, 4)
    with pytest.raises(ValueError, match="bias must be a torch.float32 vector of 8"):
        nm_linear(x, values, metadata, b[:4], 2, 4)
