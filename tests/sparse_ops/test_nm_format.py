import pytest
import torch

from robustprune.ops import nm_compress, nm_decompress, nm_mask
from robustprune.sparse_ops.nm_format import metadata_row_bytes, pack_indices, unpack_indices
from tests.conftest import DTYPES

PATTERNS = [(2, 4), (1, 4), (3, 4), (4, 8), (3, 8), (7, 8), (5, 16), (15, 16)]


def nm_weight(out, in_features, n, m, dtype=torch.float32, seed=0):
    w = torch.randn(out, in_features, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return w * nm_mask(w, n, m)


@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_is_exact(n, m, dtype):
    w = nm_weight(11, 5 * m, n, m, dtype)
    values, metadata = nm_compress(w, n, m)
    assert values.shape == (11, 5 * n) and values.dtype == dtype
    assert metadata.shape == (11, metadata_row_bytes(5 * m, n, m)) and metadata.dtype == torch.uint8
    assert torch.equal(nm_decompress(values, metadata, n, m, 5 * m), w)


def test_documented_bit_layout_for_2_4_and_4_8():
    w = torch.zeros(1, 8)
    w[0, [1, 3, 4, 6]] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # groups of 4: lanes {1, 3} and {0, 2}
    values, metadata = nm_compress(w, 2, 4)
    assert values.tolist() == [[1.0, 2.0, 3.0, 4.0]]
    # indices 1, 3, 0, 2 at 2 bits each, least significant first: 0b10_00_11_01
    assert metadata.tolist() == [[0b10001101]]
    w8 = torch.zeros(1, 8)
    w8[0, [0, 2, 5, 7]] = 1.0
    _, metadata = nm_compress(w8, 4, 8)
    # indices 0, 2, 5, 7 at 3 bits each: bit stream 000 010 101 111 (LSB first) -> 0b111_101_010_000
    stream = 0 | (2 << 3) | (5 << 6) | (7 << 9)
    assert metadata.tolist() == [[stream & 0xFF, stream >> 8]]


def test_groups_with_fewer_nonzeros_keep_lowest_zero_lanes():
    w = torch.tensor([[0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0]])
    values, metadata = nm_compress(w, 2, 4)
    assert values.tolist() == [[0.0, 5.0, 0.0, 0.0]]
    assert unpack_indices(metadata, 4, 4).tolist() == [[0, 3, 0, 1]]
    assert torch.equal(nm_decompress(values, metadata, 2, 4, 8), w)


@pytest.mark.parametrize("m", [4, 8, 16])
def test_index_packing_round_trip(m):
    indices = torch.randint(0, m, (5, 37), generator=torch.Generator().manual_seed(m))
    assert torch.equal(unpack_indices(pack_indices(indices, m), 37, m), indices)


def test_not_nm_weight_is_rejected_with_location():
    w = nm_weight(4, 16, 2, 4)
    w[2, 8:12] = torch.tensor([1.0, 2.0, 3.0, 0.0])
    with pytest.raises(ValueError, match=r"weight is not 2:4: row 2, group 2 \(columns 8..11\)"):
        nm_compress(w, 2, 4)


def test_clear_errors():
    with pytest.raises(ValueError, match="divisible by M=8"):
        nm_compress(torch.zeros(2, 12), 4, 8)
    with pytest.raises(ValueError, match="must be 2-D"):
        nm_compress(torch.zeros(2, 2, 8), 2, 4)
    values, metadata = nm_compress(nm_weight(3, 8, 2, 4), 2, 4)
    with pytest.raises(ValueError, match="metadata must be uint8 of shape"):
        nm_decompress(values, metadata[:, :0], 2, 4, 8)
    with pytest.raises(ValueError, match="values must have shape"):
        nm_decompress(values, metadata, 2, 4, 16)


def test_opcheck():
    w = nm_weight(6, 16, 2, 4)
    torch.library.opcheck(torch.ops.robustprune.nm_compress.default, (w, 2, 4))
    values, metadata = nm_compress(w, 2, 4)
    torch.library.opcheck(torch.ops.robustprune.nm_decompress.default, (values, metadata, 2, 4, 16))
