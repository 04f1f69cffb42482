"""GPU tests of elas_nb.sparse_gemm (skipped without CUDA): the cuSPARSELt GEMM against dense, CUDA-graph capture, and the
fast ELAS down projection against the reference, forward and gradients."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

import elas_nb.sparse_gemm as sg
from elas_nb.kernels import relu2_prune_compress
from elas_nb.relu2 import relu2
from elas_nb.sparse24 import prune24

BF16 = dict(device='cuda', dtype=torch.bfloat16)


def rel_err(got, want): return ((got.double() - want.double()).norm() / want.double().norm()).item()


def test_available():
    assert sg.sparse24_available()
    assert sg.sparse24_available('cuda:0') and sg.sparse24_available(torch.device('cuda', 0))


def test_unavailable_when_layout_disagrees(monkeypatch):
    dev = torch.device('cuda', 0)
    monkeypatch.setattr(sg, '_PROBLEMS', {}); monkeypatch.setattr(sg, '_WARNED', set())
    monkeypatch.setattr(sg, '_layout_error', lambda device: 1.0)
    with pytest.warns(UserWarning, match='layout disagrees.*dense path is used'): assert not sg.sparse24_available(dev)


@pytest.mark.parametrize('M,K,N', [(128, 256, 64), (96, 512, 128), (1024, 1376, 128), (4096, 2112, 256), (16, 16, 8),
                                   (2048, 8192, 512)])
def test_sparse_mm_matches_dense(M, K, N):
    y1 = torch.randn(M, K, **BF16)
    y2, b = prune24(relu2(y1)), torch.randn(K, N, **BF16)
    want = y2.double() @ b.double()
    for c in (torch._cslt_compress(y2), relu2_prune_compress(y1).compressed):
        for bb in (b, b.t().contiguous().t()):
            assert rel_err(sg.sparse_mm(c, bb), want) < 1e-2
    assert rel_err(sg.sparse_mm(c, b, search=True), want) < 1e-2
    assert rel_err(sg.sparse_mm(c, b), want) < 1e-2  # now with the cached algorithm


def test_sparse_mm_non_contiguous_b():
    y1, b = torch.randn(64, 128, **BF16), torch.randn(128, 64, **BF16)
    c = relu2_prune_compress(y1).compressed
    assert rel_err(sg.sparse_mm(c, b[:, ::2]), prune24(relu2(y1)).double() @ b[:, ::2].double()) < 1e-2


def test_sparse_mm_validation():
    z = lambda *s, dtype=torch.bfloat16: torch.zeros(*s, device='cuda', dtype=dtype)
    with pytest.raises(TypeError, match='must both be bfloat16 or both float16'): sg.sparse_mm(z(16, 16, dtype=torch.float32), z(16, 8, dtype=torch.float32))
    with pytest.raises(TypeError, match='must both be bfloat16 or both float16'): sg.sparse_mm(z(16, 16), z(16, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match='multiples of 16'): sg.sparse_mm(z(24, 16), z(16, 8))
    with pytest.raises(ValueError, match='multiples of 16'): sg.sparse_mm(z(16, 16), z(16, 12))
    with pytest.raises(ValueError, match='too few'): sg.sparse_mm(z(16, 16), z(64, 8))
    with pytest.raises(ValueError, match='2-D'): sg.sparse_mm(z(16, 16), z(16))


def test_sparse_mm_graph_capture():
    y1, b = torch.randn(1024, 2112, **BF16), torch.randn(2112, 128, **BF16)
    c = relu2_prune_compress(y1).compressed
    eager = sg.sparse_mm(c, b)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph): out = sg.sparse_mm(c, b)
    graph.replay()
    assert torch.equal(out, eager)
    y1.copy_(torch.randn_like(y1)); c.copy_(relu2_prune_compress(y1).compressed)
    graph.replay()
    assert rel_err(out, prune24(relu2(y1)).double() @ b.double()) < 1e-2


def ffn_inputs(T, F, r, seed=0):
    g = torch.Generator(device='cuda').manual_seed(seed)
    return (torch.randn(T, r, generator=g, **BF16), torch.randn(F, r, generator=g, **BF16) / r**0.5,
            torch.randn(F, r, generator=g, **BF16) / r**0.5, torch.randn(T, r, generator=g, **BF16))


def grads(f, h1, M1, N2, g):
    h1, M1, N2 = (t.detach().requires_grad_() for t in (h1, M1, N2))
    out = f(h1, M1, N2)
    return (out,) + torch.autograd.grad(out, (h1, M1, N2), g)


SHAPES = [(4096, 2112, 128), (2064, 3072, 256), (1024, 4160, 256), (512, 8192, 512), (16, 64, 16)]


@pytest.mark.parametrize('recompute', [False, True])
@pytest.mark.parametrize('T,F,r', SHAPES)
def test_fast_matches_reference(T, F, r, recompute):
    args = ffn_inputs(T, F, r)
    fast = grads(lambda *a: sg.relu2_sparse24_down(*a, recompute=recompute), *args)
    for name, a, b in zip(('h2', 'dh1', 'dM1', 'dN2'), fast, grads(sg.relu2_sparse24_down_ref, *args)):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert rel_err(a, b) < 1e-2, (name, rel_err(a, b))


def test_fast_forward_uses_the_reference_mask():
    "Same mask as prune24: the forward equals the dense masked product to bf16 output rounding."
    h1, M1, N2, _ = ffn_inputs(2048, 2112, 128, seed=1)
    want = prune24(relu2(h1 @ M1.T)).double() @ N2.double()
    assert rel_err(sg.relu2_sparse24_down(h1, M1, N2), want) < 5e-3


@pytest.mark.parametrize('recompute', [False, True])
def test_fast_saves_y1_or_nothing(recompute):
    T, F, r = 8192, 4160, 256
    h1, M1, N2, g = ffn_inputs(T, F, r)
    h1, M1, N2 = (t.requires_grad_() for t in (h1, M1, N2))
    sg.relu2_sparse24_down(h1, M1, N2, recompute=recompute).sum().backward()  # warm-up: algorithm search, kernel compilation
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    out = sg.relu2_sparse24_down(h1, M1, N2, recompute=recompute)
    held = torch.cuda.memory_allocated() - base - out.numel() * out.element_size()
    want = 0 if recompute else T * F * 2  # y1 alone (bf16) survives the forward, or nothing of size T×F
    assert want <= held < want + 0.05 * T * F * 2, held  # (plus about 1 MB: cuSPARSELt's algorithm search keeps a buffer)
    out.backward(g)


@pytest.mark.parametrize('recompute', [False, True])
def test_fast_graph_capture(recompute):
    T, F, r = 4096, 3072, 256
    static = ffn_inputs(T, F, r)
    f = lambda *a: sg.relu2_sparse24_down(*a, recompute=recompute)
    side = torch.cuda.Stream(); side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side): grads(f, *static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph): outs = grads(f, *static)
    for t, new in zip(static, ffn_inputs(T, F, r, seed=7)): t.copy_(new)
    graph.replay()
    for name, a, b in zip(('h2', 'dh1', 'dM1', 'dN2'), outs, grads(sg.relu2_sparse24_down_ref, *static)):
        assert rel_err(a, b) < 1e-2, name


@pytest.mark.parametrize('recompute', [False, True])
def test_fast_compiles_without_graph_break(recompute):
    "torch.compile(fullgraph=True) traces through the custom operators; compiled and eager agree, forward and backward."
    args = ffn_inputs(2048, 2112, 128)
    f = lambda h1, M1, N2: sg.relu2_sparse24_down(h1, M1, N2, recompute=recompute).float().square()
    g = lambda h1, M1, N2: f(h1, M1, N2).sum()
    compiled = torch.compile(g, fullgraph=True)
    for a, b in zip(grads(compiled, *args[:3], torch.ones((), **BF16).float()), grads(g, *args[:3], torch.ones((), **BF16).float())):
        assert rel_err(a, b) < 1e-3


def test_fast_rejects_bad_shapes_on_gpu():
    h1, M1, N2, _ = ffn_inputs(64, 128, 16)
    with pytest.raises(ValueError, match=r'need h1 \(T, r\)'): sg.relu2_sparse24_down(h1, M1, N2[:64])
    with pytest.raises(ValueError, match='T and F multiples of 16'): sg.relu2_sparse24_down(h1[:40], M1, N2)
    with pytest.raises(ValueError, match='r of 8'): sg.relu2_sparse24_down(h1[:, :4], M1[:, :4], N2[:, :4])
    with pytest.raises(TypeError, match='all be bfloat16 or all float16'): sg.relu2_sparse24_down(h1, M1.half(), N2)
    assert sg.sparse24_down_problem(h1, M1, N2) is None and 'multiples of 16' in sg.sparse24_down_problem(h1[:40], M1, N2)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('shape', [(1, 4), (33, 4100), (2064, 3072)])
@pytest.mark.parametrize('masked', [False, True])
def test_relu2_prune_grad_bit_exact(shape, dtype, masked):
    y, d = torch.randn(*shape, device='cuda', dtype=dtype), torch.randn(*shape, device='cuda', dtype=dtype)
    y2, got = sg.relu2_prune_grad(y, d, masked)
    want_y2 = prune24(relu2(y))
    assert torch.equal(y2, want_y2)
    want = y.clone().relu_().mul_(d)
    assert torch.equal(got, want.masked_fill_(want_y2 == 0, 0) if masked else want)
