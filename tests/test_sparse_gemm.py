"""CPU tests of elas_nb.sparse_gemm: the cost model, the availability check, input validation, and the math of the fast
operators with their two GPU-only pieces (the compression kernel and the cuSPARSELt GEMM) replaced by dense float64
equivalents, so that the forward and every gradient must match the reference to rounding."""
import warnings
from typing import NamedTuple

import pytest
import torch
from hypothesis import given, settings, strategies as st

import elas_nb.sparse_gemm as sg
from elas_nb.relu2 import relu2
from elas_nb.sparse24 import prune24


def test_down_gemm_cost():
    c, s = sg.down_gemm_cost(65536, 8192, 512), sg.down_gemm_cost(65536, 8192, 512, sparse=True)
    assert c['flop'] == s['flop'] == 2 * 65536 * 8192 * 512
    assert s['bytes'] < c['bytes'] and s['compute_ms'] == pytest.approx(c['compute_ms'] / 2)
    assert c['floor_ms'] == max(c['compute_ms'], c['memory_ms'])
    small_r = sg.down_gemm_cost(65536, 2112, 128)  # intensity ≈ r FLOP/B: below the ridge point, so memory-bound
    assert small_r['memory_ms'] > small_r['compute_ms']


@pytest.mark.parametrize('device', ['cpu', 'meta'])
def test_sparse24_available_warns_once(device):
    sg._PROBLEMS.pop(torch.device(device), None); sg._WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert sg.sparse24_available(device) is False
        assert sg.sparse24_available(torch.device(device)) is False
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert 'not a CUDA device' in msg and 'dense path is used' in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the answer on a machine without CUDA')
def test_sparse24_available_without_cuda():
    sg._PROBLEMS.pop(torch.device('cuda'), None); sg._WARNED.clear()
    with pytest.warns(UserWarning, match='CUDA is not available'):
        assert sg.sparse24_available() is False


def test_sparse_mm_validation():
    with pytest.raises(TypeError, match='b must be a torch.Tensor'): sg.sparse_mm(torch.zeros(16, 16), None)
    with pytest.raises(ValueError, match='compressed must be on a CUDA device'): sg.sparse_mm(torch.zeros(16, 16), torch.zeros(16, 8))


@settings(max_examples=10, deadline=None)
@given(T=st.integers(1, 40), groups=st.integers(1, 80), masked=st.booleans(), seed=st.integers(0, 2**16))
def test_relu2_prune_grad_matches_torch(T, groups, masked, seed):
    "The fused backward pass (interpreted on a CPU: its fp32 → bf16 cast truncates, so up to one ulp apart) against plain PyTorch."
    g = torch.Generator().manual_seed(seed)
    y, d = torch.randn(T, 4 * groups, generator=g).bfloat16(), torch.randn(T, 4 * groups, generator=g).bfloat16()
    want_y2 = prune24(relu2(y))
    want = (y.relu() * d).masked_fill(want_y2 == 0, 0).float() if masked else (y.relu() * d).float()
    y2, got = sg.relu2_prune_grad(y, d, masked)
    assert torch.equal(y2, want_y2)
    assert ((got.float() - want).abs() <= want.abs() / 128).all()
    _, in_place = sg.relu2_prune_grad(y, dc := d.clone(), masked, out=dc)
    assert in_place is dc and torch.equal(dc, got)
    y64, d64 = y.double(), d.double()
    y2_64, got64 = sg.relu2_prune_grad(y64, d64, masked)  # float64 stays exact
    want64 = y64.relu() * d64
    assert torch.equal(y2_64, prune24(relu2(y64))) and torch.equal(got64, want64.masked_fill(y2_64 == 0, 0) if masked else want64)


def test_relu2_prune_grad_validation():
    with pytest.raises(ValueError, match='one shape and dtype'): sg.relu2_prune_grad(torch.zeros(4, 4), torch.zeros(4, 4).half())
    with pytest.raises(ValueError, match='contiguous'): sg.relu2_prune_grad(torch.zeros(4, 4), torch.zeros(4, 4).T)
    with pytest.raises(ValueError, match='divisible by 4'): sg.relu2_prune_grad(torch.zeros(4, 6), torch.zeros(4, 6))


def test_relu2_sparse24_down_validation():
    x, w = torch.randn(16, 8, dtype=torch.bfloat16), torch.randn(32, 8, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match='use relu2_sparse24_down_ref'): sg.relu2_sparse24_down(x, w, w)
    with pytest.raises(ValueError, match='M1 must be a 2-D tensor'): sg.relu2_sparse24_down(x, w[0], w)
    with pytest.raises(ValueError, match=r'need h1 \(T, r\)'): sg.relu2_sparse24_down(x, w, w[:16])
    assert sg.sparse24_down_problem(x, w, w).startswith('h1 is on cpu')  # the device first: no CPU input passes


def _grads(f, h1, M1, N2, g):
    h1, M1, N2 = (t.detach().clone().requires_grad_() for t in (h1, M1, N2))
    out = f(h1, M1, N2)
    return (out,) + torch.autograd.grad(out, (h1, M1, N2), g)


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 12), groups=st.integers(1, 8), r=st.integers(1, 6), seed=st.integers(0, 2**16),
       zeros=st.booleans())
def test_reference_matches_hand_written_gradients(T, groups, r, seed, zeros):
    torch.manual_seed(seed)
    F = 4 * groups
    h1, M1, N2, g = (torch.randn(*s, dtype=torch.float64) for s in ((T, r), (F, r), (F, r), (T, r)))
    if zeros: M1[::2] = -M1[::2].abs() - 1; h1 = h1.abs()  # many y1 ≤ 0: many ReLU² zeros and ties between them
    out, dh1, dM1, dN2 = _grads(sg.relu2_sparse24_down_ref, h1, M1, N2, g)
    y1 = h1 @ M1.T
    y2s = prune24(y1.relu() ** 2)
    dy1 = 2 * y1.relu() * (g @ N2.T)  # straight-through: dy2 = g N2ᵀ is not re-masked
    for got, want in ((out, y2s @ N2), (dN2, y2s.T @ g), (dM1, dy1.T @ h1), (dh1, dy1 @ M1)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


class _Pruned(NamedTuple):
    compressed: torch.Tensor
    dense: torch.Tensor | None = None
    counts: torch.Tensor | None = None


def _dense_stand_ins(monkeypatch):
    "Replace the GPU-only kernel and GEMM by dense equivalents: 'compressed' is then the pruned y2 itself."
    monkeypatch.setattr(sg, 'relu2_prune_compress', lambda y1, dense=False: _Pruned(p := prune24(relu2(y1)), p if dense else None))
    monkeypatch.setattr(sg, 'sparse_mm', lambda c, b, search=False: c @ b)


def _fast(keep_y1, masked=False):
    return lambda h1, M1, N2: sg._down_op(h1, M1, N2, keep_y1, masked)[0]


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 12), groups=st.integers(1, 8), r=st.integers(1, 6), seed=st.integers(0, 2**16), keep_y1=st.booleans(),
       masked=st.booleans())
def test_fast_operator_math_matches_reference(T, groups, r, seed, keep_y1, masked):
    with pytest.MonkeyPatch.context() as mp:
        _dense_stand_ins(mp)
        torch.manual_seed(seed)
        F = 4 * groups
        args = [torch.randn(*s, dtype=torch.float64) for s in ((T, r), (F, r), (F, r), (T, r))]
        ref = lambda *a: sg.relu2_sparse24_down_ref(*a, mask_grad='masked' if masked else 'ste')
        for got, want in zip(_grads(_fast(keep_y1, masked), *args), _grads(ref, *args)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('keep_y1', [False, True])
def test_fast_operator_saves_y1_or_nothing_of_size_TF(monkeypatch, keep_y1):
    "Saved for the backward: the inputs, plus y1 (T, F) unless it is to be recomputed."
    _dense_stand_ins(monkeypatch)
    T, F, r = 64, 256, 8
    h1, M1, N2 = (torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((T, r), (F, r), (F, r)))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _fast(keep_y1)(h1, M1, N2)
    assert sorted(tuple(t.shape) for t in saved) == sorted([(T, r), (F, r), (F, r), (T, F) if keep_y1 else (0,)])


def test_fast_operator_gradient_of_one_input(monkeypatch):
    _dense_stand_ins(monkeypatch)
    h1, M1, N2 = torch.randn(8, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    N2.requires_grad_()
    (dN2,) = torch.autograd.grad(_fast(True)(h1, M1, N2).sum(), N2)
    torch.testing.assert_close(dN2, prune24(relu2(h1 @ M1.T)).T @ torch.ones(8, 2, dtype=torch.float64))


@pytest.mark.skipif(torch.cuda.is_available(), reason='the GPU tests cover the real GEMM')
@pytest.mark.parametrize('keep_y1', [False, True])
def test_fast_operator_with_real_kernels_in_the_interpreter(monkeypatch, keep_y1):
    "The real Triton kernels (interpreted on the CPU) with only the cuSPARSELt GEMM emulated by decompress-then-multiply."
    from elas_nb.kernels import decompress24_ref
    monkeypatch.setattr(sg, 'sparse_mm', lambda c, b, search=False: decompress24_ref(c, c.shape[0], b.shape[0]) @ b)
    torch.manual_seed(0)
    T, F, r = 64, 128, 16
    args = [torch.randn(T, r), torch.randn(F, r) / r**0.5, torch.randn(F, r) / r**0.5, torch.randn(T, r)]
    args = [a.to(torch.bfloat16) for a in args]
    for got, want in zip(_grads(_fast(keep_y1), *args), _grads(sg.relu2_sparse24_down_ref, *args)):
        assert ((got.double() - want.double()).norm() / want.double().norm()) < 2e-2
