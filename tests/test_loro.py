"""Property and regression tests of `elas_nb.loro` against independent float64 references."""
import copy, io, math

import pytest
import torch
from torch import nn
from hypothesis import assume, given, settings, strategies as st

from elas_nb.lowrank import LowRankLinear
from elas_nb.loro import (LOROAdamW, adamw, cosine_restart_schedule, cosine_schedule,
                          loro_exact_update)

f64 = torch.float64


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


@settings(max_examples=150, deadline=None)
@given(m=st.integers(2, 12), n=st.integers(2, 12), data=st.data(), seed=st.integers(0, 2**31 - 1),
       lr=st.floats(1e-3, 2.0))
def test_exact_step_is_truncated_svd_of_projected_step(m, n, data, seed, lr):
    r = data.draw(st.integers(1, min(m, n) - 1), label='r')
    g = torch.Generator().manual_seed(seed)
    M, N, G = (torch.randn(*s, generator=g, dtype=f64) for s in [(m, r), (n, r), (m, n)])
    assume(torch.linalg.cond(M) < 1e4 and torch.linalg.cond(N) < 1e4)
    want, gap = dense_exact_step(M, N, G, lr)
    assume(gap > 1e-4)  # the rank-r truncation is well defined
    M1, N1 = loro_exact_update(M, N, G @ N, G.T @ M, lr)
    assert M1.dtype == N1.dtype == f64 and M1.shape == M.shape and N1.shape == N.shape
    torch.testing.assert_close(M1 @ N1.T, want, atol=1e-8, rtol=0)
    torch.testing.assert_close(M1.T @ M1, N1.T @ N1, atol=1e-8, rtol=0)  # balanced: both equal Σ_r


def test_exact_step_at_full_rank_and_zero_lr():
    g = torch.Generator().manual_seed(0)
    M, N, G = (torch.randn(*s, generator=g, dtype=f64) for s in [(5, 5), (7, 5), (5, 7)])
    M1, N1 = loro_exact_update(M, N, G @ N, G.T @ M, 0.5)
    torch.testing.assert_close(M1 @ N1.T, M @ N.T - 0.5 * G, atol=1e-9, rtol=0)  # P_T is the identity at r = m
    M0, N0 = loro_exact_update(M[:, :3], N[:, :3], G @ N[:, :3], G.T @ M[:, :3], 0.0)
    torch.testing.assert_close(M0 @ N0.T, M[:, :3] @ N[:, :3].T, atol=1e-10, rtol=0)


class Tiny(nn.Module):
    def __init__(self, dtype=f64):
        super().__init__()
        self.norm = nn.LayerNorm(8, dtype=dtype)
        self.low = LowRankLinear(8, 6, 2, dtype=dtype)
        self.head = nn.Linear(6, 3, dtype=dtype)

    def forward(self, x): return self.head(self.low(self.norm(x)))


def backward(model, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 8, generator=g).to(model.head.weight.dtype)
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


@pytest.mark.parametrize('dtype', [f64, torch.float32, torch.bfloat16])
def test_state_dict_round_trip(dtype):
    torch.manual_seed(0)
    a = Tiny(dtype)
    opt_a = LOROAdamW(a, lr=1e-2, d_model=8, exact_every=4)
    for t in range(6): backward(a, t); opt_a.step()
    b = copy.deepcopy(a)
    opt_b = LOROAdamW(b, lr=1e-2, d_model=8, exact_every=4)
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
