"""GPU checks of the trainer's fast path (skipped without CUDA): the compiled step against the eager one for every variant,
before and after the 2:4 switch; compiled training against eager training; exact resume of a compiled run.

Run on the GPU machine: `PYTHONPATH=$PWD python -m pytest -q -s tests/test_train_gpu.py` (prints the differences).
"""
import pytest, torch

import elas_nb.train as T
import elas_nb.sparse_gemm as sg
from elas_nb.config import VARIANTS, model_config, recipe
from elas_nb.convert import build_model
from elas_nb.sparse24 import set_sparse24
from elas_nb.runlog import read_log
from elas_nb.train import prepare_model, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def rel_err(a, b): return ((a.double() - b.double()).norm() / b.double().norm()).item()


def loss_and_grads(model, runner, idx, tgt):
    model.zero_grad(set_to_none=True)
    loss = runner(idx, tgt)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


CASES = [(s, v, False) for s in ('tiny', '60m') for v in VARIANTS] + [(s, 'elas', True) for s in ('tiny', '60m')]


@pytest.mark.parametrize('size,variant,masked', CASES, ids=lambda x: str(x))
def test_compiled_step_matches_eager(size, variant, masked):
    "One forward and backward of the compiled blocks against the eager model, same weights and batch, in bf16."
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = model_config(size, variant)
    eager = build_model(cfg).cuda().bfloat16()
    fast = build_model(cfg).cuda().bfloat16(); fast.load_state_dict(eager.state_dict())
    for m in (eager, fast): set_sparse24(m, masked)
    runner = prepare_model(fast, compile=True)
    idx = torch.randint(0, cfg.vocab_size, (8, cfg.max_seq_len), device='cuda')
    tgt = torch.randint(0, cfg.vocab_size, (8, cfg.max_seq_len), device='cuda')
    (l0, g0), (l1, g1) = loss_and_grads(eager, eager, idx, tgt), loss_and_grads(fast, runner, idx, tgt)
    worst = max(g0, key=lambda n: rel_err(g1[n], g0[n]))
    print(f'\n{size} {variant} masked={masked}: loss {l0.item():.4f} vs {l1.item():.4f}, worst gradient {worst} '
          f'{rel_err(g1[worst], g0[worst]):.1e}')
    assert abs(l0.item() - l1.item()) < 1e-2 * abs(l0.item())
    assert rel_err(g1[worst], g0[worst]) < 5e-2  # bf16: fused kernels round differently
    if masked: assert fast.layers[0].ffn.sparse_path(torch.zeros(16, cfg.rank, device='cuda', dtype=torch.bfloat16))


def short_run(tmp_path, compile, steps=12, cuda_graph=None):
    rec = recipe('60m', 'elas', steps=steps, batch_size=64, micro_batch=32, sparse_warmup=steps // 2, eval_every=steps,
                 eval_tokens=100_000, kernel='sparse')  # kernel='sparse': a fallback to the dense simulation raises
    torch._dynamo.reset()
    return train(rec, out=tmp_path/f'compile-{compile}-graph-{cuda_graph}', compile=compile, cuda_graph=cuda_graph,
                 progress=False, log_every=4)


def test_compiled_training_tracks_eager(tmp_path):
    "12 steps of 60m ELAS (the mask switches on at step 6), compiled and eager: the same losses to bf16 noise; the sparse GEMM ran."
    sg._ALGS.clear()
    fast, eager = short_run(tmp_path, True), short_run(tmp_path, False)
    diffs = [abs(fast['losses'][s] - eager['losses'][s]) / eager['losses'][s] for s in range(1, 13)]
    print('\ncompiled vs eager, relative loss difference per step:', [f'{d:.1e}' for d in diffs])
    assert max(diffs) < 3e-2
    assert fast['losses'][12] < fast['losses'][1] - 1
    assert any(key[1] == 32 * 256 for key in sg._ALGS), 'the sparse tensor-core GEMM never ran'  # (device, M = tokens, ...)
    rows = read_log(fast['log'])
    print(f"compiled: {float(rows[-1]['tok_per_s']):,.0f} tok/s, MFU {float(rows[-1]['mfu']):.1%}")


def test_graphed_training_equals_compiled(tmp_path):
    "The same 12 steps with each micro-batch replayed as a CUDA graph (the default) and without: the same kernels, the same losses."
    graphed, plain = short_run(tmp_path, True), short_run(tmp_path, True, cuda_graph=False)
    diffs = [abs(graphed['losses'][s] - plain['losses'][s]) / plain['losses'][s] for s in range(1, 13)]
    print('\ngraphed vs not, relative loss difference per step:', [f'{d:.1e}' for d in diffs])
    assert max(diffs) < 1e-3


def test_compiled_resume_is_exact(tmp_path, monkeypatch):
    "A compiled bf16 run stopped after step 6 and resumed from its step-6 checkpoint gives the uninterrupted run's losses."
    rec = recipe('60m', 'elas', steps=12, batch_size=32, micro_batch=16, sparse_warmup=4, eval_every=6, eval_tokens=50_000)
    torch._dynamo.reset()
    full = train(rec, out=tmp_path/'full', progress=False)
    real, calls = T.accumulate_gradients, [0]
    def stop_after_6(*a, **k):
        calls[0] += 1
        if calls[0] > 6: raise RuntimeError('simulated crash')
        return real(*a, **k)
    with monkeypatch.context() as m:
        m.setattr(T, 'accumulate_gradients', stop_after_6)
        with pytest.raises(RuntimeError, match='simulated crash'): train(rec, out=tmp_path/'cut', progress=False)
    resumed = train(rec, out=tmp_path/'cut', resume=True, progress=False)
    diffs = [abs(resumed['losses'][s] - full['losses'][s]) for s in range(7, 13)]
    print('\nresume |loss difference| per step:', [f'{d:.1e}' for d in diffs])
    assert max(diffs) < 1e-2
