"""LORO on the GPU: the compiled fused AdamW kernel against float64 and the foreach path, every exact-step method (cuSOLVER
drivers included) against float64, TF32 kept out of the exact step, and a bf16 LLaMA trained through exact steps
(skipped without CUDA). A cuSOLVER driver that this build refuses is reported as a skip, not a failure."""
import math

import pytest
import torch
from elas_nb.lowrank import LowRankLinear
from elas_nb.config import model_config
from elas_nb.convert import build_model
from elas_nb.loro import (LOROAdamW, QR_METHODS, SVD_METHODS, adam_update_, adamw_fused_, fusable, loro_exact_update,
                          loro_exact_update_ref, _zero_moments)

from test_loro import adamw_step_f64  # the float64 reference, shared with the CPU tests

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
DEV, f64 = 'cuda', torch.float64




SHAPES = [(1,), (1000,), (4097,), (33, 65), (2048, 512), (3, 5, 7)]


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('decay', [0.0, 1e-2])
@pytest.mark.parametrize('aligned', [True, False])
def test_fused_kernel_equals_float64(dtype, decay, aligned):
    "Every shape in one launch, four steps, each checked from the kernel's own state: moments to fp32 rounding, parameters to their"
    " dtype's rounding. Unaligned: every tensor a view one element into its storage, so the kernel runs without vector loads."
    g = torch.Generator(device=DEV).manual_seed(0)
    def new(shape, dt):
        n = math.prod(shape)
        return torch.empty(n + (not aligned), device=DEV, dtype=dt)[(not aligned):].view(shape)
    ps = [new(s, dtype).copy_(torch.randn(s, generator=g, device=DEV)) for s in SHAPES]
    ms, vs = [new(s, torch.float32).zero_() for s in SHAPES], [new(s, torch.float32).zero_() for s in SHAPES]
    betas, eps, sizes = (0.9, 0.999), 1e-6, [3e-3 * (1 + k) for k in range(len(SHAPES))]
    for t in range(1, 5):
        grads = [(torch.randn(s, generator=g, device=DEV) * 10 ** torch.randint(-3, 2, s, generator=g, device=DEV)).to(dtype) for s in SHAPES]
        want = [adamw_step_f64(p, gr, m, v, t, lr, betas, eps, decay) for p, gr, m, v, lr in zip(ps, grads, ms, vs, sizes)]
        before = [(m.double().abs() + gr.double().abs(), p.double()) for m, gr, p in zip(ms, grads, ps)]
        adamw_fused_(ps, grads, ms, vs, [t] * len(ps), sizes, betas, eps, decay)
        for p, m, v, (want_p, want_m, want_v), (scale_m, p_old), lr in zip(ps, ms, vs, want, before, sizes):
            assert ((m.double() - want_m).abs() <= 1e-6 * scale_m).all()
            assert ((v.double() - want_v).abs() <= 1e-6 * want_v + 1e-30).all()
            update = (want_p - p_old * (1 - decay)).abs()
            denom = want_v.sqrt() / math.sqrt(1 - betas[1] ** t) + eps
            slack = 1e-6 * (p_old.abs() + update) + 1e-6 * lr / (1 - betas[0] ** t) * scale_m / denom
            rounding = {torch.float32: 0.0, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}[dtype] * want_p.abs()
            assert ((p.double() - want_p).abs() <= rounding + slack + (6e-8 if dtype == torch.float16 else 0)).all()


def test_update_paths_agree_on_a_model():
    "adam_update_ on a bf16 LLaMA's parameters: the fused kernel and the foreach path, three steps."
    torch.manual_seed(0)
    params = [p.detach() for p in build_model(model_config('tiny', 'loro')).to(DEV, torch.bfloat16).parameters()]
    twins = [p.clone() for p in params]
    st, st_twin = [{} for _ in params], [{} for _ in params]
    assert all(fusable(p, p, *(_zero_moments(p)[k] for k in ('exp_avg', 'exp_avg_sq'))) for p in params)
    for _ in range(3):
        for p, q in zip(params, twins): p.grad = torch.randn_like(p); q.grad = p.grad.clone()
        sizes = [1e-2 if p.ndim == 1 else 2.5e-3 for p in params]
        adam_update_(params, st, sizes, decay=1e-3)
        adam_update_(twins, st_twin, sizes, decay=1e-3, fused=False)
    for p, q in zip(params, twins): torch.testing.assert_close(p, q, atol=1e-2, rtol=2 ** -7)


def pairs(L, m, n, r, seed=0):
    "L pairs on the GPU in fp32: factors with singular values over a decade, bounded dense directions; and float64 copies."
    g = torch.Generator(device=DEV).manual_seed(seed)
    def factor(rows):
        O = torch.linalg.qr(torch.randn(L, r, r, generator=g, device=DEV, dtype=f64))[0]
        return torch.randn(L, rows, r, generator=g, device=DEV, dtype=f64) / math.sqrt(rows) * torch.logspace(0, -1, r, device=DEV, dtype=f64) @ O
    t64 = [factor(m), factor(n), torch.randn(L, m, r, generator=g, device=DEV, dtype=f64).tanh(),
           torch.randn(L, n, r, generator=g, device=DEV, dtype=f64).tanh()]
    return [t.float() for t in t64], t64


def rel_err(got, want): return ((got - want).norm(dim=(-2, -1)) / want.norm(dim=(-2, -1))).max().item()


@pytest.mark.parametrize('qr', QR_METHODS)
@pytest.mark.parametrize('svd', SVD_METHODS)
@pytest.mark.parametrize('m,n,r', [(512, 512, 128), (1408, 512, 128), (512, 1408, 128)])
def test_exact_methods_accurate_in_fp32(qr, svd, m, n, r):
    "Every QR × core method in fp32 on 60M shapes: M⁺N⁺ᵀ within 1e-4 (relative) of the float64 reference."
    (M, N, D_M, D_N), t64 = pairs(4, m, n, r, seed=m + n)
    try: M1, N1 = loro_exact_update(M, N, D_M, D_N, 1e-2, qr, svd)
    except RuntimeError as e: pytest.skip(f"{svd} refused by this build: {str(e).splitlines()[0][:120]}")
    want = torch.stack([a @ b.T for a, b in (loro_exact_update_ref(*(t[i] for t in t64), 1e-2) for i in range(4))])
    assert rel_err((M1 @ N1.mT).double(), want) < 1e-4


def test_batched_equals_per_pair_on_gpu():
    "The default batched step against the reference loop, pair by pair, in fp32."
    (M, N, D_M, D_N), _ = pairs(6, 1408, 512, 128, seed=1)
    M1, N1 = loro_exact_update(M, N, D_M, D_N, 1e-2)
    for i in range(6):
        A, B = loro_exact_update_ref(M[i], N[i], D_M[i], D_N[i], 1e-2)
        assert rel_err(M1[i] @ N1[i].T, A @ B.T) < 1e-4


def test_exact_step_ignores_tf32():
    "With TF32 allowed for everything else, the exact step still has fp32 accuracy, and the setting survives it."
    (M, N, D_M, D_N), t64 = pairs(2, 2048, 512, 128, seed=2)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision('high')
        M1, N1 = loro_exact_update(M, N, D_M, D_N, 1e-2)
        assert torch.get_float32_matmul_precision() == 'high'
    finally: torch.set_float32_matmul_precision(before)
    want = torch.stack([a @ b.T for a, b in (loro_exact_update_ref(*(t[i] for t in t64), 1e-2) for i in range(2))])
    assert rel_err((M1 @ N1.mT).double(), want) < 1e-4


def test_bf16_llama_trains_through_exact_steps():
    "A bf16 tiny LLaMA on the GPU, exact every 3 steps: finite, bf16 factors, fp32 moments, the loss goes down."
    torch.manual_seed(0)
    cfg = model_config('tiny', 'loro')
    model = build_model(cfg).to(DEV, torch.bfloat16)
    opt = LOROAdamW(model, lr=1e-2, d_model=cfg.d_model, exact_every=3)
    x = torch.randint(cfg.vocab_size, (8, 65), device=DEV)
    losses = []
    for t in range(1, 10):
        out = model(x[:, :-1], x[:, 1:])
        loss = out[-1] if isinstance(out, tuple) else out
        loss.backward(); opt.step(); opt.zero_grad()
        losses.append(loss.item())
        assert opt.last_step_exact == (t % 3 == 0)
    for p in model.parameters(): assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
    for layer in (m for m in model.modules() if isinstance(m, LowRankLinear)):
        assert opt.state[layer.M]['exp_avg'].dtype == torch.float32
    assert losses[-1] < losses[0]
