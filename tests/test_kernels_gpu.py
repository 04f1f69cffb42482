"""The fused kernels against cuSPARSELt itself: `torch._cslt_compress` and `torch._cslt_sparse_mm` (skipped without CUDA)."""
import pytest
import torch
from elas_nb.relu2 import relu2
from elas_nb.sparse24 import prune24
from elas_nb.kernels import (compressed_shape, meta_index, meta_nibbles, compress24_ref, decompress24_ref, decompress24,
                             relu2_prune_compress, lowrank_up_relu2_prune_compress)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU with cuSPARSELt')
DEV = 'cuda'


def codes(buf, M, K):
    "The (M, K/4) metadata codes of a buffer, read at the layout's nibble indices (padding ignored)."
    words = buf.view(-1).view(torch.int16)[M * K // 2:].int() & 0xFFFF
    n = meta_index(M, K, buf.device)
    return words[n // 4] >> (4 * (n % 4)) & 0xF


def same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def cslt(fn, *args):
    "Call a cuSPARSELt op; a shape it refuses skips the test (a library limit, recorded in bench/results/prune.json)."
    try: return fn(*args)
    except RuntimeError as e: pytest.skip(f'cuSPARSELt refuses this shape: {str(e).splitlines()[0][:100]}')


@pytest.mark.parametrize('M,K', [(128, 256), (1024, 2048), (2048, 5472), (64, 4160), (16384, 1376), (96, 512), (192, 2112)])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_bit_exact_against_cslt_compress(M, K, dtype):
    "Tie-free input (y1 > 0: every group keeps 2 non-zeros): values and codes equal cuSPARSELt's own."
    y1 = torch.rand(M, K, device=DEV).add_(0.5).to(dtype)
    ours = relu2_prune_compress(y1, dense=True)
    theirs = cslt(torch._cslt_compress, ours.dense)
    assert theirs.shape == ours.compressed.shape == compressed_shape(M, K, dtype)
    assert torch.equal(ours.compressed.view(-1)[:M * K // 2].view(torch.int16), theirs.view(-1)[:M * K // 2].view(torch.int16))
    assert torch.equal(codes(ours.compressed, M, K), codes(theirs, M, K))
    used = M * K // 2 + meta_nibbles(M, K) // 4  # buffer-only launch (its own tile sizes): the same words
    assert torch.equal(relu2_prune_compress(y1).compressed.view(-1).view(torch.int16)[:used], ours.compressed.view(-1).view(torch.int16)[:used])
    if M % 64 == 0 and K % 32 == 0:  # no padding: the whole metadata area
        nw = M * K // 16
        assert torch.equal(ours.compressed.view(-1).view(torch.int16)[M * K // 2:][:nw], theirs.view(-1).view(torch.int16)[M * K // 2:][:nw])


@pytest.mark.parametrize('M,K', [(128, 256), (96, 2112), (4096, 4160), (200, 520), (256, 96), (192, 1376), (160, 80)])
def test_layout_decodes_cslt_compress(M, K):
    "Our decoder reads cuSPARSELt's buffers, zeros and all, on odd shapes too."
    y2 = prune24(relu2(torch.randn(M, K, device=DEV, dtype=torch.bfloat16)))
    theirs = cslt(torch._cslt_compress, y2)
    same(decompress24_ref(theirs, M, K), y2)
    same(decompress24(theirs, M, K), y2)


@pytest.mark.parametrize('T,F,N', [(1024, 2048, 256), (96, 2112, 128), (4160, 4160, 512), (200, 520, 64), (16384, 8192, 512)])
def test_sparse_mm_on_our_buffer(T, F, N):
    "cuSPARSELt multiplies our buffer like a dense GEMM of the masked input, and exactly like its own buffer."
    W = torch.randn(N, F, device=DEV, dtype=torch.bfloat16) / F ** 0.5
    y1 = torch.randn(T, F, device=DEV, dtype=torch.bfloat16)
    res = relu2_prune_compress(y1, dense=True)
    y2 = prune24(relu2(y1))
    same(res.dense, y2)
    got = cslt(torch._cslt_sparse_mm, res.compressed, W.t()).double()
    ref = y2.double() @ W.double().t()
    assert ((got - ref).norm() / ref.norm()).item() < 1e-2
    y1 = torch.rand(T, F, device=DEV).add_(0.5).to(torch.bfloat16)  # tie-free: the two buffers are the same
    res = relu2_prune_compress(y1, dense=True)
    same(torch._cslt_sparse_mm(res.compressed, W.t()), torch._cslt_sparse_mm(torch._cslt_compress(res.dense), W.t()))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float32])
def test_dense_counts_and_round_trip(dtype):
    T, F = 8192, 4160
    y1 = torch.randn(T, F, device=DEV).to(dtype)
    y1[:, :64] = y1[:, :64].round()  # ties and zeros
    y1[0, :4] = torch.tensor([float('nan'), float('inf'), 1e-20, -float('inf')])  # NaN ties +inf; tiny squares: subnormal
    res = relu2_prune_compress(y1, dense=True, counts=True)
    od = res.compressed.dtype
    y2 = prune24(relu2(y1.float()).to(od))
    same(res.dense, y2)
    assert torch.equal(res.counts, (y2 != 0).sum(0).int())
    same(decompress24(res.compressed, T, F), y2)
    ref = compress24_ref(y2)
    same(res.compressed.view(-1)[:T * F // 2], ref.view(-1)[:T * F // 2])
    assert torch.equal(res.compressed.view(-1).view(torch.int16)[T * F // 2:], ref.view(-1).view(torch.int16)[T * F // 2:])


@pytest.mark.parametrize('T,F,r', [(4096, 4160, 256), (200, 520, 72), (8192, 8192, 512)])
def test_fused_gemm(T, F, r):
    # small integers: the float32 accumulation is exact, so the result is bit-exact against the two-step path
    h1 = torch.randint(-3, 4, (T, r), device=DEV).to(torch.bfloat16)
    M1 = torch.randint(-3, 4, (F, r), device=DEV).to(torch.bfloat16)
    res = lowrank_up_relu2_prune_compress(h1, M1, dense=True, counts=True)
    y2 = prune24(relu2(h1.float() @ M1.float().t()).to(torch.bfloat16))
    same(res.dense, y2)
    assert torch.equal(res.counts, (y2 != 0).sum(0).int())
    same(decompress24(res.compressed, T, F), y2)
    # random data: the GEMM rounds differently from cuBLAS, so compare the product through cuSPARSELt
    h1, M1 = torch.randn(T, r, device=DEV, dtype=torch.bfloat16), torch.randn(F, r, device=DEV, dtype=torch.bfloat16) / r ** 0.5
    W = torch.randn(256, F, device=DEV, dtype=torch.bfloat16) / F ** 0.5
    got = cslt(torch._cslt_sparse_mm, lowrank_up_relu2_prune_compress(h1, M1).compressed, W.t()).double()
    ref = prune24(relu2(h1.double() @ M1.double().t())) @ W.double().t()
    assert ((got - ref).norm() / ref.norm()).item() < 2e-2
