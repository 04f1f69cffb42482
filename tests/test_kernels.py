"""Property tests of the fused ReLU² + 2:4 kernels against the plain PyTorch reference (Triton interpreter on CPU)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from elas_nb.relu2 import relu2
from elas_nb.sparse24 import prune24
from elas_nb.kernels import (compressed_shape, meta_nibbles, meta_index, compress24_ref, decompress24_ref, decompress24,
                             relu2_prune_compress, lowrank_up_relu2_prune_compress, prune_bytes)

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
HALF = [torch.bfloat16, torch.float16]


def y2_ref(y1, out_dtype):
    "prune24(relu2(y1)): squared in float32, rounded once to the stored dtype, then masked."
    return prune24(relu2(y1.float()).to(out_dtype))


def same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def same_buffer(buf, ref, M, K):
    "Values equal (NaN payloads may differ), metadata and the bytes after it equal bit for bit."
    assert buf.shape == ref.shape == compressed_shape(M, K, ref.dtype)
    same(buf.view(-1)[:M * K // 2], ref.view(-1)[:M * K // 2])
    assert torch.equal(buf.view(-1).view(torch.int16)[M * K // 2:], ref.view(-1).view(torch.int16)[M * K // 2:])


@st.composite
def activations(draw, dtypes=DTYPES):
    "Random (T, F) pre-activations with ties, zeros, negatives, and optionally NaN/Inf."
    T, F = draw(st.integers(1, 140)), 4 * draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(dtypes))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    y = torch.randn(T, F, generator=g) * draw(st.sampled_from([1.0, 20.0]))
    if draw(st.booleans()): y = y.round()  # many ties and zeros
    if draw(st.booleans()):  # sprinkle NaN / ±Inf
        i = torch.randint(0, T * F, (max(1, T * F // 50),), generator=g)
        y.view(-1)[i] = torch.tensor([float('nan'), float('inf'), -float('inf')])[torch.arange(len(i)) % 3]
    return y.to(dtype)


@settings(max_examples=25, deadline=None)
@given(activations(), st.sampled_from([None, torch.float16]))
def test_kernel_is_the_reference(y1, out_dtype):
    T, F = y1.shape
    res = relu2_prune_compress(y1, dense=True, counts=True, out_dtype=out_dtype)
    od = out_dtype or (y1.dtype if y1.dtype in HALF else torch.bfloat16)
    y2 = y2_ref(y1, od)
    same_buffer(res.compressed, compress24_ref(y2), T, F)  # bit for bit, padding included, on every shape
    same(res.dense, y2)
    assert torch.equal(res.counts, (y2 != 0).sum(0).int())
    same(decompress24_ref(res.compressed, T, F), y2)
    same(decompress24(res.compressed, T, F), y2)


@settings(max_examples=8, deadline=None)
@given(activations(HALF))
def test_flags_do_not_change_the_buffer(y1):
    plain = relu2_prune_compress(y1)
    assert plain.dense is None and plain.counts is None
    same(plain.compressed.view(-1)[:y1.numel() // 2], relu2_prune_compress(y1, counts=True).compressed.view(-1)[:y1.numel() // 2])


@settings(max_examples=15, deadline=None)
@given(activations(HALF))
def test_reference_round_trip(y):
    x = prune24(y)  # any 2:4 matrix, negatives included
    same(decompress24_ref(compress24_ref(x), *x.shape), x)


@pytest.mark.parametrize('T,F', [(64, 32), (128, 64), (192, 96), (64, 256)])
def test_tile_multiples_bit_exact(T, F):
    y1 = torch.randn(T, F, dtype=torch.bfloat16)
    buf = relu2_prune_compress(y1).compressed
    ref = compress24_ref(y2_ref(y1, torch.bfloat16))
    assert torch.equal(buf.view(torch.int16), ref.view(torch.int16))  # the whole buffer
    if F % 64 == 0: assert compressed_shape(T, F) == (T, 9 * F // 16)  # no padding: values + 1/8 metadata


# measured on an H200 with torch._cslt_compress (cuSPARSELt 0.8): (M, K) -> columns, bf16 and fp16 alike
CSLT_COLUMNS = {(64, 32): 20, (64, 48): 28, (64, 64): 36, (64, 96): 56, (64, 1376): 776, (64, 2112): 1188, (96, 32): 20,
                (96, 48): 30, (96, 64): 38, (96, 96): 56, (96, 1376): 803, (96, 2112): 1232, (128, 32): 20, (128, 96): 56,
                (128, 1376): 776, (2048, 5472): 3080, (16384, 1376): 776}


@pytest.mark.parametrize('M,K', list(CSLT_COLUMNS))
def test_compressed_shape_matches_cusparselt(M, K):
    for dtype in HALF:
        assert compressed_shape(M, K, dtype) == (M, CSLT_COLUMNS[M, K])


def test_layout_is_a_bijection_per_block():
    for M, K in [(64, 32), (128, 96), (70, 44)]:
        n = meta_index(M, K)
        assert n.unique().numel() == n.numel() and n.max() < meta_nibbles(M, K)
    assert prune_bytes(64, 32) == 64 * 32 * 2 + 64 * 32 + 64 * 32 // 8


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 140), st.integers(1, 24), st.integers(1, 40), st.sampled_from(HALF), st.integers(0, 2**31 - 1))
def test_fused_gemm_is_two_step(T, groups, r, dtype, seed):
    "Small-integer operands: the float32 GEMM is exact in any order, so the fused kernel must match bit for bit."
    g = torch.Generator().manual_seed(seed)
    h1 = torch.randint(-3, 4, (T, r), generator=g).to(dtype)
    M1 = torch.randint(-3, 4, (4 * groups, r), generator=g).to(dtype)
    res = lowrank_up_relu2_prune_compress(h1, M1, dense=True, counts=True, block_m=64, block_k=64, block_r=32)
    y2 = y2_ref(h1.float() @ M1.float().T, dtype)
    same_buffer(res.compressed, compress24_ref(y2), T, 4 * groups)
    same(res.dense, y2)
    assert torch.equal(res.counts, (y2 != 0).sum(0).int())


def test_bad_input_is_refused(monkeypatch):
    y = torch.zeros(8, 8)
    with pytest.raises(ValueError, match='divisible by 4'): relu2_prune_compress(torch.zeros(8, 6))
    with pytest.raises(TypeError, match='y1 must have dtype'): relu2_prune_compress(y.double())
    with pytest.raises(TypeError, match='y1 must be a torch.Tensor'): relu2_prune_compress(y.numpy())
    with pytest.raises(ValueError, match='contiguous'): relu2_prune_compress(torch.zeros(16, 8)[:, :4])
    with pytest.raises(ValueError, match='2-D'): relu2_prune_compress(torch.zeros(8))
    with pytest.raises(TypeError, match='out_dtype'): relu2_prune_compress(y, out_dtype=torch.float32)
    with pytest.raises(ValueError, match='block_m'): relu2_prune_compress(y, block_m=32)
    with pytest.raises(ValueError, match='shape'): decompress24(torch.zeros(8, 3, dtype=torch.bfloat16), 8, 8)
    with pytest.raises(TypeError, match='buf must be'): decompress24_ref(torch.zeros(8, 5), 8, 8)
    with pytest.raises(ValueError, match='at most 2 non-zeros'): compress24_ref(torch.ones(4, 8, dtype=torch.float16))
    h = torch.zeros(8, 16, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match='M1 must be'): lowrank_up_relu2_prune_compress(h, torch.zeros(8, 16))
    with pytest.raises(TypeError, match='dtype of h1'): lowrank_up_relu2_prune_compress(h, torch.zeros(8, 16, dtype=torch.float16))
    with pytest.raises(ValueError, match='M1 must be'): lowrank_up_relu2_prune_compress(h, torch.zeros(8, 4, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match='divisible by 4'): lowrank_up_relu2_prune_compress(h, torch.zeros(6, 16, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match='h1 must be'): lowrank_up_relu2_prune_compress(h.float(), torch.zeros(8, 16))
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    with pytest.raises(ValueError, match='CUDA device'): relu2_prune_compress(y)
