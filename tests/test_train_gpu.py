"""GPU checks of the trainer (skipped without CUDA): pure-bf16 training of the 60M ELAS model, eager and compiled.

Run on the GPU machine: `PYTHONPATH=$PWD python -m pytest -q -s tests/test_train_gpu.py` (prints tokens/s, MFU, memory).
"""
import pytest, torch

import elas_nb.train as T
from elas_nb.train import read_log, recipe, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def short_run(tmp_path, compile, variant='elas', steps=40):
    rec = recipe('60m', variant, steps=steps, batch_size=64, micro_batch=32, eval_every=steps, eval_tokens=200_000)
    res = train(rec, out=tmp_path/f'{variant}-{compile}', compile=compile, progress=False, log_every=10)
    rows = read_log(res['log'])
    print(f"\n60m {variant} compile={compile}: loss {res['losses'][1]:.3f} → {res['losses'][steps]:.3f}, val ppl "
          f"{res['val_ppl']:.1f}, {float(rows[-2]['tok_per_s']):,.0f} tok/s, MFU {float(rows[-2]['mfu']):.1%}, "
          f"{float(rows[-1]['mem_gb']):.1f} GB")
    return res


@pytest.mark.parametrize('compile', [False, True])
def test_60m_elas_trains_in_bf16(tmp_path, compile):
    "The loss falls across the 2:4 switch (step 20), the run checkpoints, and MFU/memory are logged."
    res = short_run(tmp_path, compile)
    assert res['losses'][40] < res['losses'][1] - 1
    assert res['checkpoint'].name == 'step_0000040'


def test_resume_on_gpu(tmp_path, monkeypatch):
    "A bf16 run stopped after step 6 and resumed from its step-6 checkpoint gives the uninterrupted run's losses."
    rec = recipe('60m', 'elas', steps=12, batch_size=32, micro_batch=16, eval_every=6, eval_tokens=50_000)
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
