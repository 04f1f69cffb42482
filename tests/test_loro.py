"""Property and regression tests of `elas_nb.loro` against independent float64 references.

The fused AdamW kernel runs on CUDA where there is one, else in Triton's interpreter on the CPU (conftest sets it)."""
import copy, io, math, os

import pytest
import torch
from torch import nn
from hypothesis import assume, given, settings, strategies as st

from elas_nb.lowrank import LowRankLinear
from elas_nb.loro import (LOROAdamW, adamw, cosine_restart_schedule, cosine_schedule, loro_exact_update, loro_exact_update_ref,
                          loro_exact_step_, thin_qr, cholesky_qr2, core_factors, ieee_fp32_matmul, adamw_fused_, adam_update_, QR_METHODS)

f64 = torch.float64
DEV = 'cuda' if torch.cuda.is_available() and os.environ.get('TRITON_INTERPRET') != '1' else 'cpu'  # where the kernel runs
METHODS = [(q, s) for q in QR_METHODS for s in ('eigh', 'svd')]  # the other SVD methods are cuSOLVER drivers: 'svd' on the CPU


def dense_exact_step(M, N, G, lr):
    "W⁺ = rank-r truncated SVD of M·Nᵀ − lr·P_T(G), everything formed densely; also the relative gap σ_r − σ_{r+1}."
    r = M.shape[1]
    U, _, _ = torch.linalg.svd(M, full_matrices=False)
    V, _, _ = torch.linalg.svd(N, full_matrices=False)
    PU, PV = U @ U.T, V @ V.T
    A = M @ N.T - lr * (PU @ G + G @ PV - PU @ G @ PV)
    Ua, S, Vha = torch.linalg.svd(A)
    gap = (S[r - 1] - (S[r] if len(S) > r else 0)) / S[0]
    return Ua[:, :r] @ torch.diag(S[:r]) @ Vha[:r], gap


@pytest.mark.parametrize('method', ['ref'] + METHODS)
@settings(max_examples=100, deadline=None)
@given(m=st.integers(2, 12), n=st.integers(2, 12), data=st.data(), seed=st.integers(0, 2**31 - 1),
       lr=st.floats(1e-3, 2.0))
def test_exact_step_is_truncated_svd_of_projected_step(method, m, n, data, seed, lr):
    r = data.draw(st.integers(1, min(m, n) - 1), label='r')
    g = torch.Generator().manual_seed(seed)
    M, N, G = (torch.randn(*s, generator=g, dtype=f64) for s in [(m, r), (n, r), (m, n)])
    assume(torch.linalg.cond(M) < 1e4 and torch.linalg.cond(N) < 1e4)
    want, gap = dense_exact_step(M, N, G, lr)
    assume(gap > 1e-4)  # the rank-r truncation is well defined
    if method == 'ref': M1, N1 = loro_exact_update_ref(M, N, G @ N, G.T @ M, lr)
    else: M1, N1 = loro_exact_update(M, N, G @ N, G.T @ M, lr, *method)
    assert M1.dtype == N1.dtype == f64 and M1.shape == M.shape and N1.shape == N.shape
    torch.testing.assert_close(M1 @ N1.T, want, atol=1e-8, rtol=0)
    torch.testing.assert_close(M1.T @ M1, N1.T @ N1, atol=1e-8, rtol=0)  # balanced: both equal Σ_r


def batch(L, m, n, r, dtype=f64, seed=0, spread=1.0):
    "L pairs of factors with singular values over `spread` decades, and bounded dense (Adam-like) directions."
    g = torch.Generator().manual_seed(seed)
    def factor(rows):
        Q = torch.linalg.qr(torch.randn(L, rows, r, generator=g, dtype=f64))[0]
        O = torch.linalg.qr(torch.randn(L, r, r, generator=g, dtype=f64))[0]
        return Q * torch.logspace(0, -spread, r, dtype=f64) @ O
    D = [torch.randn(L, k, r, generator=g, dtype=f64).tanh() for k in (m, n)]
    return [t.to(dtype) for t in (factor(m), factor(n), *D)]


def rel_err(a, b): return ((a - b).norm(dim=(-2, -1)) / b.norm(dim=(-2, -1))).max().item()


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('m,n,r', [(40, 24, 6), (24, 40, 6), (9, 13, 5), (7, 7, 7), (30, 30, 1)])
def test_batched_exact_step_equals_per_pair(method, m, n, r):
    "Leading dims (2, 3): each pair as the reference alone would step it (products and singular values; factor signs may differ)."
    M, N, D_M, D_N = (t.reshape(2, 3, *t.shape[1:]) for t in batch(6, m, n, r, seed=m * n + r))
    M1, N1 = loro_exact_update(M, N, D_M, D_N, 0.05, *method)
    assert M1.shape == M.shape and N1.shape == N.shape
    for i in range(2):
        for j in range(3):
            A, B = loro_exact_update_ref(M[i, j], N[i, j], D_M[i, j], D_N[i, j], 0.05)
            torch.testing.assert_close(M1[i, j] @ N1[i, j].T, A @ B.T, atol=1e-10, rtol=0)
            torch.testing.assert_close(torch.linalg.svdvals(M1[i, j] @ N1[i, j].T)[:r], torch.linalg.svdvals(A @ B.T)[:r],
                                       atol=1e-10, rtol=0)


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('spread', [0.5, 2.0])
def test_fp32_exact_step_close_to_float64(method, spread):
    "fp32 against the float64 step: relative error of M⁺N⁺ᵀ well under 1e-4, also with factors of condition number 100."
    M, N, D_M, D_N = batch(3, 256, 96, 32, spread=spread, seed=1)
    want = loro_exact_update_ref(M[0], N[0], D_M[0], D_N[0], 1e-2)
    M1, N1 = loro_exact_update(*(t.float() for t in (M, N, D_M, D_N)), 1e-2, *method)
    assert M1.dtype == torch.float32
    assert rel_err((M1[0] @ N1[0].T).double(), want[0] @ want[1].T) < 1e-5


def test_cholesky_qr_falls_back_to_householder():
    "fp32 Cholesky-QR2 fails on κ = 1e5 and on a rank-deficient matrix; thin_qr still returns orthonormal Q with QR = X."
    X = batch(3, 200, 10, 10, dtype=torch.float32, spread=5.0)[0]
    X[0] = batch(1, 200, 10, 10, dtype=torch.float32, spread=0.5, seed=3)[0][0]
    X[2, :, 3] = X[2, :, 4]
    assert cholesky_qr2(X)[3].tolist() == [True, False, False]
    Q, R, R_inv = thin_qr(X)
    torch.testing.assert_close(Q @ R, X, atol=1e-5, rtol=0)
    torch.testing.assert_close(Q.mT @ Q, torch.eye(10).expand(3, 10, 10), atol=1e-5, rtol=0)
    torch.testing.assert_close(R[0] @ R_inv[0], torch.eye(10), atol=1e-4, rtol=0)
    assert thin_qr(X, inverse=False)[2] is None
    with pytest.raises(ValueError, match='method must be one of'): thin_qr(X, 'gram')
    with pytest.raises(ValueError, match='method must be one of'): core_factors(X[:, :10], 3, 'lapack')


def test_exact_step_keeps_fp32_matmul_precision():
    "The step runs in full fp32 and gives the caller's setting back, after an error too."
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision('medium')
        loro_exact_update(*batch(2, 12, 10, 3, dtype=torch.float32), 0.1)
        assert torch.get_float32_matmul_precision() == 'medium'
        with pytest.raises(RuntimeError), ieee_fp32_matmul():
            assert torch.get_float32_matmul_precision() == 'highest'
            raise RuntimeError('boom')
        assert torch.get_float32_matmul_precision() == 'medium'
    finally: torch.set_float32_matmul_precision(before)


def test_exact_step_groups_pairs_by_shape():
    "Mixed shapes and dtypes, weight decay: every pair ends where the reference takes it; bf16 factors are written back in bf16."
    shapes = [(10, 6, 3), (6, 10, 3), (10, 6, 3), (10, 6, 2), (10, 6, 3)]
    pairs, dirs, want = [], [], []
    for k, (m, n, r) in enumerate(shapes):
        M, N, D_M, D_N = (t[0] for t in batch(1, m, n, r, seed=k))
        if k == 4: M, N = M.bfloat16(), N.bfloat16()
        dt = f64 if M.dtype == f64 else torch.float32
        want.append(loro_exact_update_ref(M.to(dt) * 0.9, N.to(dt) * 0.9, D_M.to(dt), D_N.to(dt), 0.1))
        pairs.append((M, N)); dirs.append((D_M.to(dt), D_N.to(dt)))
    loro_exact_step_(pairs, dirs, 0.1, decay=0.1)
    for (M, N), (A, B) in zip(pairs, want):
        tol = 1e-12 if M.dtype == f64 else 5e-2
        torch.testing.assert_close((M.to(A.dtype) @ N.to(A.dtype).T), A @ B.T, atol=tol, rtol=0)
    assert pairs[4][0].dtype == torch.bfloat16


def adamw_step_f64(p, g, m, v, t, lr, betas, eps, decay):
    "One AdamW step in float64 from the given state: (p, m, v)."
    b1, b2 = betas
    p, g, m, v = (x.double() for x in (p, g, m, v))
    m = m + (1 - b1) * (g - m)
    v = b2 * v + (1 - b2) * g * g
    p = p * (1 - decay) - lr / (1 - b1 ** t) * m / (v.sqrt() / math.sqrt(1 - b2 ** t) + eps)
    return p, m, v


@settings(max_examples=40, deadline=None)
@given(numels=st.lists(st.integers(1, 700), min_size=1, max_size=5), dtypes=st.data(), decay=st.sampled_from([0.0, 1e-2]),
       steps=st.integers(1, 4), block=st.sampled_from([64, 256, None]), tiles=st.sampled_from([1, 3]),
       lrs=st.data(), seed=st.integers(0, 2**31 - 1))
def test_fused_update_equals_float64_adamw(numels, dtypes, decay, steps, block, tiles, lrs, seed):
    "A list of odd-sized tensors (1 element, ragged tiles and chunks, fp32 and bf16 mixed: several launches), each with its own"
    " step size and step count, step by step from the kernel's own state: moments to fp32 rounding, parameters to their dtype's."
    T = len(numels)
    dts = dtypes.draw(st.lists(st.sampled_from([torch.float32, torch.bfloat16]), min_size=T, max_size=T), label='dtypes')
    sizes = lrs.draw(st.lists(st.floats(1e-4, 1e-1), min_size=T, max_size=T), label='lrs')
    g = torch.Generator().manual_seed(seed)
    shapes = [(n,) if n % 2 else (2, n // 2) for n in numels]  # 2-d where it can be
    ps = [torch.randn(s, generator=g).to(DEV, dt) for s, dt in zip(shapes, dts)]
    ms, vs = [torch.zeros(s, device=DEV) for s in shapes], [torch.zeros(s, device=DEV) for s in shapes]
    offsets = torch.randint(0, 3, (T,), generator=g).tolist()  # tensors at different Adam steps
    betas, eps = (0.9, 0.999), 1e-6
    for t in range(1, steps + 1):
        grads = [(torch.randn(s, generator=g) * 10 ** torch.randint(-3, 2, s, generator=g)).to(DEV, dt) for s, dt in zip(shapes, dts)]
        ts = [t + o for o in offsets]
        want = [adamw_step_f64(*x, ti, lr, betas, eps, decay) for x, ti, lr in zip(zip(ps, grads, ms, vs), ts, sizes)]
        before = [(m.double().abs() + gr.double().abs(), p.double()) for m, gr, p in zip(ms, grads, ps)]
        adamw_fused_(ps, grads, ms, vs, ts, sizes, betas, eps, decay, block=block, tiles=tiles)
        for p, m, v, (want_p, want_m, want_v), (scale_m, p_old), ti, lr in zip(ps, ms, vs, want, before, ts, sizes):
            assert ((m.double() - want_m).abs() <= 1e-6 * scale_m).all()
            assert ((v.double() - want_v).abs() <= 1e-6 * want_v + 1e-30).all()
            # fp32 arithmetic: a few ulps of p, of the update, and of m where it cancels
            update = (want_p - p_old * (1 - decay)).abs()
            denom = want_v.sqrt() / math.sqrt(1 - betas[1] ** ti) + eps
            slack = 1e-6 * (p_old.abs() + update) + 1e-6 * lr / (1 - betas[0] ** ti) * scale_m / denom
            rounding = 2.0 ** -8 * want_p.abs() if p.dtype == torch.bfloat16 else 0.0
            assert ((p.double() - want_p).abs() <= rounding + slack).all()


def test_fused_update_rejects_what_it_cannot_run():
    p = torch.zeros(4, dtype=f64)
    with pytest.raises(ValueError, match='fp32 moments'): adamw_fused_([p], [p], [p], [p], [1], [1e-3])
    q = torch.zeros(4, 4, device=DEV)
    with pytest.raises(ValueError, match='contiguous'): adamw_fused_([q, q.T], [q, q], [q, q], [q, q], [1, 1], [1e-3, 1e-3])
    with pytest.raises(ValueError): adamw_fused_([q], [q], [q], [q], [1, 2], [1e-3])  # lists of different lengths
    z = torch.zeros(0, device=DEV)
    adamw_fused_([z], [z], [z], [z], [1], [1e-3])  # nothing to do


def test_adam_update_launches_once_per_dtype():
    "adam_update_ hands every tensor it can fuse to one kernel launch per (device, parameter dtype, gradient dtype)."
    from unittest.mock import patch
    import elas_nb.loro as loro
    ps = [torch.randn(s, device=DEV, dtype=dt) for s, dt in [((3, 5), torch.float32), ((7,), torch.bfloat16), ((1,), torch.float32),
                                                             ((0,), torch.float32), ((2, 9), torch.bfloat16)]]
    for p in ps: p.grad = torch.randn_like(p)
    twins = [p.clone() for p in ps]
    for p, q in zip(ps, twins): q.grad = p.grad.clone()
    grids, kernel = [], loro._adamw_kernel
    class Counting:
        def __getitem__(self, grid): grids.append(grid); return kernel[grid]
    with patch.object(loro, '_adamw_kernel', Counting()):
        adam_update_(ps, [{} for _ in ps], [1e-2] * len(ps), fused=True)
    assert len(grids) == 2
    adam_update_(twins, [{} for _ in ps], [1e-2] * len(ps), fused=False)
    for p, q in zip(ps, twins): torch.testing.assert_close(p, q, atol=1e-5, rtol=2 ** -7)


class Tiny(nn.Module):
    def __init__(self, dtype=f64):
        super().__init__()
        self.norm = nn.LayerNorm(8, dtype=dtype)
        self.low = LowRankLinear(8, 6, 2, dtype=dtype)
        self.head = nn.Linear(6, 3, dtype=dtype)

    def forward(self, x): return self.head(self.low(self.norm(x)))


def backward(model, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 8, generator=g).to(model.head.weight)
    model.zero_grad()
    (model(x) ** 2).mean().backward()


def hand_adam(grads, betas=(0.9, 0.999), eps=1e-6):
    "Adam direction after the gradients `grads`, counted from a fresh start: float64 loop."
    m = v = 0
    for t, g in enumerate(grads, 1):
        m, v = betas[0] * m + (1 - betas[0]) * g, betas[1] * v + (1 - betas[1]) * g * g
    t = len(grads)
    return (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps)


def test_lazy_steps_match_hand_computation():
    torch.manual_seed(0)
    model = Tiny()
    lr, d, K = 3e-2, 8, 4
    opt = LOROAdamW(model, lr=lr, d_model=d, exact_every=K)
    grads = {'M': [], 'N': []}
    for t in range(1, K):
        backward(model, t)
        before = {k: getattr(model.low, k).detach().clone() for k in 'MN'}
        for k in 'MN': grads[k].append(getattr(model.low, k).grad.clone())
        opt.step()
        assert not opt.last_step_exact
        for k in 'MN':
            want = before[k] - lr * (2 / d) * hand_adam(grads[k])
            torch.testing.assert_close(getattr(model.low, k).detach(), want, atol=1e-14, rtol=0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_optimizer_fused_matches_foreach(dtype):
    "LOROAdamW with the kernel (fused=True) and without it take the same steps, lazy, regular and across an exact step."
    torch.manual_seed(0)
    a = Tiny(dtype).to(DEV)
    b = copy.deepcopy(a)
    opt_a = LOROAdamW(a, lr=1e-2, d_model=8, exact_every=3, weight_decay=0.1, fused=True)
    opt_b = LOROAdamW(b, lr=1e-2, d_model=8, exact_every=3, weight_decay=0.1, fused=False)
    for t in range(5):
        backward(a, t); opt_a.step()
        backward(b, t); opt_b.step()
        tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=2 ** -6)
        for p, q in zip(a.parameters(), b.parameters()): torch.testing.assert_close(p, q, **tol)


def test_lazy_steps_fused_match_hand_computation():
    "The first lazy steps of fp32 factors through the kernel: the float64 hand computation to fp32 accuracy."
    torch.manual_seed(0)
    model = Tiny(torch.float32).to(DEV)
    lr, d, K = 3e-2, 8, 4
    opt = LOROAdamW(model, lr=lr, d_model=d, exact_every=K, fused=True)
    grads = {'M': [], 'N': []}
    for t in range(1, K):
        backward(model, t)
        before = {k: getattr(model.low, k).detach().double().clone() for k in 'MN'}
        for k in 'MN': grads[k].append(getattr(model.low, k).grad.double().clone())
        opt.step()
        for k in 'MN':
            want = before[k] - lr * (2 / d) * hand_adam(grads[k])
            torch.testing.assert_close(getattr(model.low, k).detach().double(), want, atol=1e-6, rtol=0)


def test_exact_step_at_full_rank_and_zero_lr():
    g = torch.Generator().manual_seed(0)
    M, N, G = (torch.randn(*s, generator=g, dtype=f64) for s in [(5, 5), (7, 5), (5, 7)])
    M1, N1 = loro_exact_update(M, N, G @ N, G.T @ M, 0.5)
    torch.testing.assert_close(M1 @ N1.T, M @ N.T - 0.5 * G, atol=1e-9, rtol=0)  # P_T is the identity at r = m
    M0, N0 = loro_exact_update(M[:, :3], N[:, :3], G @ N[:, :3], G.T @ M[:, :3], 0.0)
    torch.testing.assert_close(M0 @ N0.T, M[:, :3] @ N[:, :3].T, atol=1e-10, rtol=0)


def test_regular_group_is_torch_adamw_then_reset_after_exact_step():
    torch.manual_seed(0)
    model = Tiny()
    twin = copy.deepcopy(model)
    K, lr, wd = 5, 1e-2, 0.1
    opt = LOROAdamW(model, lr=lr, d_model=8, exact_every=K, weight_decay=wd)
    regular = [p for n, p in twin.named_parameters() if not n.startswith('low.')]
    ref = torch.optim.AdamW(regular, lr=lr, eps=1e-6, weight_decay=wd, foreach=False)
    for t in range(1, K):
        backward(model, t)
        for p, q in zip(model.parameters(), twin.parameters()): q.grad = p.grad.clone()
        opt.step(); ref.step()
        for (n, p), q in zip(model.named_parameters(), twin.parameters()):
            if not n.startswith('low.'): torch.testing.assert_close(p, q, atol=1e-13, rtol=0)
    backward(model, K)
    opt.step()
    assert opt.last_step_exact and opt.n_steps == K
    assert len(opt.state) == len(list(model.parameters()))
    for s in opt.state.values():
        assert s['step'] == 0 and not s['exp_avg'].any() and not s['exp_avg_sq'].any()
    # the step after a reset is a first Adam step again: factor moves by lr·(r/d)·g/(|g|+ε)
    backward(model, K + 1)
    M0, gM = model.low.M.detach().clone(), model.low.M.grad.clone()
    opt.step()
    want = M0 * (1 - lr * wd) - lr * (2 / 8) * gM / (gM.abs() + 1e-6)
    torch.testing.assert_close(model.low.M.detach(), want, atol=1e-14, rtol=0)


def test_exact_step_uses_adam_directions():
    torch.manual_seed(1)
    model = Tiny()
    opt = LOROAdamW(model, lr=5e-2, d_model=8, exact_every=3)
    grads = {'M': [], 'N': []}
    for t in range(1, 4):
        backward(model, t)
        for k in 'MN': grads[k].append(getattr(model.low, k).grad.clone())
        if t < 3: opt.step()
    M, N = model.low.M.detach().clone(), model.low.N.detach().clone()
    want = loro_exact_update(M, N, hand_adam(grads['M']), hand_adam(grads['N']), 5e-2)
    opt.step()
    assert opt.last_step_exact
    torch.testing.assert_close(model.low.M.detach() @ model.low.N.detach().T, want[0] @ want[1].T, atol=1e-12, rtol=0)


@pytest.mark.parametrize('dtype,fused', [(f64, None), (torch.float32, None), (torch.bfloat16, None),
                                         (torch.float32, True), (torch.bfloat16, True)])
def test_state_dict_round_trip(dtype, fused):
    torch.manual_seed(0)
    a = Tiny(dtype).to(DEV)
    opt_a = LOROAdamW(a, lr=1e-2, d_model=8, exact_every=4, fused=fused)
    for t in range(6): backward(a, t); opt_a.step()
    b = copy.deepcopy(a)
    opt_b = LOROAdamW(b, lr=1e-2, d_model=8, exact_every=4, fused=fused)
    buf = io.BytesIO(); torch.save(opt_a.state_dict(), buf); buf.seek(0)
    opt_b.load_state_dict(torch.load(buf))
    assert opt_b.n_steps == 6
    for p in b.parameters():
        assert opt_b.state[p]['exp_avg'].dtype == torch.promote_types(dtype, torch.float32)
    for t in range(6, 13):
        backward(a, t); opt_a.step()
        backward(b, t); opt_b.step()
        assert opt_a.last_step_exact == opt_b.last_step_exact == ((t + 1) % 4 == 0)
    for p, q in zip(a.parameters(), b.parameters()): assert torch.equal(p, q)


def test_bf16_model_stays_bf16_with_fp32_moments():
    torch.manual_seed(0)
    model = Tiny(torch.bfloat16)
    opt = LOROAdamW(model, lr=1e-2, d_model=8, exact_every=2)
    for t in range(5): backward(model, t); opt.step()
    for p in model.parameters():
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
        assert opt.state[p]['exp_avg'].dtype == torch.float32


def test_unused_pair_is_skipped():
    model = nn.ModuleDict(dict(a=LowRankLinear(4, 4, 2, dtype=f64), b=LowRankLinear(4, 4, 2, dtype=f64)))
    opt = LOROAdamW(model, lr=1e-2, d_model=4, exact_every=1)
    before = model['b'].M.detach().clone()
    model['a'](torch.randn(3, 4, dtype=f64)).sum().backward()
    opt.step()
    assert torch.equal(model['b'].M.detach(), before) and not opt.state[model['b'].M]
    opt.reset_moments()  # tolerates the empty state that lookup created


def test_bad_inputs():
    with pytest.raises(ValueError, match='lr must be > 0'): LOROAdamW(Tiny(), lr=0.0, d_model=8)
    with pytest.raises(ValueError, match='lr must be > 0'): LOROAdamW(Tiny(), lr=float('nan'), d_model=8)
    with pytest.raises(ValueError, match='exact_every must be > 0'): LOROAdamW(Tiny(), lr=1e-3, d_model=8, exact_every=0)
    with pytest.raises(TypeError, match='d_model must be an int'): LOROAdamW(Tiny(), lr=1e-3, d_model=8.0)
    with pytest.raises(ValueError, match='betas'): LOROAdamW(Tiny(), lr=1e-3, d_model=8, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match='no LowRankLinear'): LOROAdamW(nn.Linear(3, 3), lr=1e-3, d_model=3)
    with pytest.raises(ValueError, match='lr must be > 0'): adamw(nn.Linear(3, 3), lr=0)
    with pytest.raises(ValueError, match='warmup_steps'): cosine_schedule(10, 11)
    with pytest.raises(ValueError, match='min_ratio'): cosine_schedule(10, 1, min_ratio=-0.1)
    with pytest.raises(ValueError, match='exact_every'): cosine_restart_schedule(10, 1, 0)
    with pytest.raises(ValueError, match='ramp_floor'): cosine_restart_schedule(10, 1, 2, ramp_floor=2)


def test_adamw_baseline():
    opt = adamw(nn.Linear(3, 3), lr=1e-3, weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults['weight_decay'] == 0.1 and not opt.defaults['fused']


def lrs(multiplier, steps):
    "lr of optimizer steps 1..steps through a real LambdaLR (peak 1), indexed by step."
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, multiplier)
    out = [None]
    for _ in range(steps): out.append(opt.param_groups[0]['lr']); opt.step(); sched.step()
    return out


def test_schedule_values():
    T, W, K, R = 1000, 100, 200, 5
    cos, jag = lrs(cosine_schedule(T, W, 0.1), T), lrs(cosine_restart_schedule(T, W, K, 0.1, R, 1e-6), T)
    assert math.isclose(cos[1], 1 / W) and math.isclose(cos[W // 2], 0.5)
    assert cos[W] == 1.0                                                  # warm-up end
    assert math.isclose(cos[550], 0.1 + 0.9 * 0.5, rel_tol=1e-12)         # halfway through the cosine
    assert math.isclose(cos[T], 0.1, rel_tol=1e-12)                       # last step
    for e in range(K, T, K):
        assert jag[e] == cos[e]                                           # the exact step: unramped
        for i in range(1, R + 1):
            assert math.isclose(jag[e + i], (1e-6 + (1 - 1e-6) * (i - 1) / R) * cos[e + i], rel_tol=1e-12)
        assert jag[e + R + 1] == cos[e + R + 1]
    assert jag[T] == cos[T] and jag[K - 1] == cos[K - 1]
    assert cosine_schedule(T, W)(T + 50) == pytest.approx(0.1)            # past the end: stays at min_ratio


def test_schedule_ramp_during_warmup_and_no_warmup():
    jag = lrs(cosine_restart_schedule(100, 50, 10), 100)
    assert math.isclose(jag[11], 1e-6 * 11 / 50)   # exact step 10 falls in the warm-up; step 11 ramps
    no_warmup = lrs(cosine_schedule(10, 0), 10)
    assert no_warmup[1] == 1.0 and math.isclose(no_warmup[10], 0.1)  # W = 0: the cosine starts at step 1
