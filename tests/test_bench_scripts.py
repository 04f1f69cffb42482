"""The benchmark scripts bench/memory.py, bench/inference.py and bench/paper_speedup.py run end to end on the CPU with tiny
shapes (ELAS falls back to its dense 2:4 simulation there) and write the JSON the results chapter reads."""
import json, os, subprocess, sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT/'bench'))  # appended, not prepended: bench/train.py and bench/ffn.py must not shadow anything
import inference  # noqa: E402  (bench/inference.py)


def run(script:str, tmp_path:Path, *args, env:dict|None=None) -> tuple[dict, str]:
    "Run bench/`script`.py in a subprocess from the repository root; its JSON and stdout."
    out = tmp_path/f'{script}.json'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])),
           'OMP_NUM_THREADS': '1', **(env or {})}
    r = subprocess.run([sys.executable, f'bench/{script}.py', *args, '--out', str(out)], cwd=ROOT, capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(out.read_text()), r.stdout


def test_memory(tmp_path):
    "Six variants × two batches; the FFN bytes per token are what the saved tensors add up to, recompute saves only the input."
    res, stdout = run('memory', tmp_path, '--device', 'cpu', '--sizes', 'tiny', '--batches', '1,2', '--seq', '32')
    rows = {(r['variant'], r['batch']): r for r in res['rows']}
    assert len(rows) == 12 and {v for v, _ in rows} == {'full', 'loro', 'loro-relu2', 'loro-relu2-recompute', 'elas', 'elas-recompute'}
    for r in res['rows']:
        assert {'ffn_width', 'tokens', 'ffn_saved_gb', 'ffn_saved_bytes_per_token_layer', 'ffn_other_saved_bytes',
                'activations_gb', 'peak_gb', 'weights_gb', 'paper_ffn_gb', 'ffn_path'} <= r.keys()
        assert r['ffn_saved_gb'] > 0 and r['weights_gb'] > 0 and r['peak_gb'] is None  # no CUDA: no peak
        assert r['ffn_path'] == ('dense-simulation' if r['variant'].startswith('elas') else None)
        assert r['ffn_saved_bytes_per_token_layer'] == rows[r['variant'], 1]['ffn_saved_bytes_per_token_layer']  # linear in batch
    per_token = lambda v: rows[v, 1]['ffn_saved_bytes_per_token_layer']
    d, r, F = 128, 32, 576  # tiny: bf16 input x, h1 = x N1, y1 = relu(...) (relu and square share it), y2, h2 = y2 N2
    assert per_token('loro-relu2') == 2 * (d + r + F + F + r)
    assert per_token('loro-relu2-recompute') == 2 * d  # the checkpoint keeps the FFN's input only
    assert per_token('elas') == per_token('loro-relu2')  # the dense simulation saves y2 like LORO-ReLU²
    assert per_token('full') == 2 * (d + 2 * 384 + 384 + 384) and rows['full', 1]['ffn_other_saved_bytes'] > 0  # + gate|up weight
    assert res['meta']['paper']['ffn_activation_gb']['elas']['128'] == 101.76 and 'secondary' in res['meta']['paper']['source']
    assert 'loro-relu2-recompute' in stdout and 'paper GB' in stdout


def test_inference(tmp_path):
    "Prefill eager and 'compiled' (dynamo disabled: the script's path, not Inductor, which takes a minute on a CPU) and decode."
    res, stdout = run('inference', tmp_path, '--device', 'cpu', '--size', 'tiny', '--prefill-batch', '2', '--seq', '16',
                      '--decode-batches', '1,2', '--new-tokens', '4', '--prefill-reps', '2', '--decode-reps', '2',
                      '--modes', 'eager,compiled', '--decode-modes', 'eager',
                      env={'TORCHDYNAMO_DISABLE': '1'})
    rows = res['rows']
    assert [(r['variant'], r['phase'], r['mode'], r['batch']) for r in rows] == [
        (v, p, m, b) for v in ('full', 'loro-relu2', 'elas')
        for p, m, b in (('prefill', 'eager', 2), ('decode', 'eager', 1), ('decode', 'eager', 2), ('prefill', 'compiled', 2))]
    for r in rows:
        assert r['tokens_per_s'] > 0 and r['ms'] > 0
        assert r['ffn_path'] == ('dense-simulation' if r['variant'] == 'elas' else None)
        if r['phase'] == 'prefill': assert r['tokens'] == 32 and r['head'] == 'last position only'
        else: assert r['kv_cache'] and r['new_tokens'] == 4 and r['prompt'] == 16
    assert 'decode' in res['meta'] and 'tokens/s' in stdout


def test_kv_cache_decode_matches_full_forwards():
    "The script's KV-cache greedy decode gives the tokens and logits of running the model on the whole sequence each time."
    torch.manual_seed(0)
    for variant in ('full', 'loro-relu2', 'elas'):
        model = inference.build('tiny', variant, torch.device('cpu'), 24, torch.float32)
        prompt = torch.randint(1, model.config.vocab_size, (2, 16))
        with torch.no_grad():
            got = inference.generate(model, prompt, 8)
            seq = prompt
            for _ in range(8): seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
            cache = inference.new_cache(model, 2, 24)
            first, second = inference.cached_step(model, prompt, cache, 0), inference.cached_step(model, seq[:, 16:17], cache, 16)
            full = model(seq[:, :17])
        assert torch.equal(got, seq[:, 16:]), variant
        torch.testing.assert_close(first, full[:, 15]); torch.testing.assert_close(second, full[:, 16])
        torch.testing.assert_close(inference.last_logits(model, seq), model(seq)[:, -1])
        with torch.no_grad(): static = inference.generate_static(model, prompt, 8, graph=False)  # one shape for every step
        assert torch.equal(static, got), variant


def test_paper_speedup(tmp_path):
    "Ratios from a small train.json; what is missing or failed reads 'not measured'."
    rows = [dict(size='1b', variant='full', ffn_width=5504, paper_width=False, mode='fast', tokens_per_s=100.),
            dict(size='1b', variant='full', ffn_width=5461, paper_width=True, mode='fast', tokens_per_s=80.),
            dict(size='1b', variant='loro-relu2', ffn_width=8192, paper_width=False, mode='fast', tokens_per_s=210.),
            dict(size='1b', variant='elas', ffn_width=8192, paper_width=False, mode='fast', tokens_per_s=200.),
            dict(size='130m', variant='full', ffn_width=2048, paper_width=False, mode='eager', tokens_per_s=50.),
            dict(size='130m', variant='elas', paper_width=False, mode='eager', error='OOM')]
    train = tmp_path/'train.json'
    train.write_text(json.dumps(dict(meta=dict(gpu='test'), rows=rows)))
    res, stdout = run('paper_speedup', tmp_path, '--train', str(train))
    got = {(r['size'], r['mode']): r for r in res['rows']}
    assert len(got) == 8  # 4 sizes × eager, fast
    one = got['1b', 'fast']
    assert one['elas_speedup'] == 2.0 and one['elas_speedup_paper_width'] == 2.5 and one['paper_speedup'] == 2.75
    assert abs(one['elas_over_loro_relu2'] - 200 / 210) < 1e-12 and one['loro_speedup'] is None and one['not_measured'] == ['loro']
    assert got['130m', 'eager']['elas_speedup'] is None and 'elas' in got['130m', 'eager']['not_measured']  # OOM row
    assert got['130m', 'eager']['full_paper_width_tokens_per_s'] == 50.  # 2048: the padded width is the paper's
    assert got['60m', 'eager']['paper_speedup'] == 1.75 and res['meta']['source_meta'] == dict(gpu='test')
    assert 'not measured' in stdout and '2.00×' in stdout


def test_loro_core(tmp_path):
    "The core benchmark on the tiny model's cores: exact variants agree with float64, a CUDA-only one is recorded as an error, not a crash."
    res, stdout = run('loro_core', tmp_path, '--device', 'cpu', '--sizes', 'tiny', '--variants', 'eigh', 'cpu-f64', 'subspace1', 'gesvd')
    rows = {r['variant']: r for r in res['rows']}
    assert list(rows) == ['eigh', 'cpu-f64', 'subspace1', 'gesvd'] and res['meta']['commit']
    assert rows['eigh']['rel_err'] < 1e-4 and rows['cpu-f64']['rel_err'] < 1e-6 and rows['eigh']['ms'] > 0
    assert 'residual' in rows['subspace1'] and rows['gesvd']['error'] == 'RuntimeError: needs CUDA'
    assert rows['eigh']['sigma_r'] >= rows['eigh']['sigma_r1'] and 'vs eigh' in stdout


def test_step_trace(tmp_path):
    "bench/train.py's profile reading: the union of GPU intervals against brute force, and a real profile of a tiny CPU `train()`."
    import importlib.util
    from torch.profiler import ProfilerActivity, profile
    from elas_nb.config import recipe
    from elas_nb.train import train
    spec = importlib.util.spec_from_file_location('bench_train', ROOT/'bench'/'train.py')
    bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
    intervals = [(0, 5), (3, 9), (12, 13), (12.5, 12.7), (20, 20)]
    covered = sum(any(a <= t / 10 < b for a, b in intervals) for t in range(0, 300))  # 0.1 µs grid
    assert abs(bench.merged_ms(intervals) * 1e3 - covered / 10) < 1e-9
    rec = recipe('tiny', 'elas', steps=6, eval_tokens=0, batch_size=4, micro_batch=2, seq_len=16)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(rec, data=bench.random_data(rec.seq_len, rec.micro_batch, vocab=4096), out=tmp_path/'run', device='cpu',
              log_every=3, save=False, progress=False)
    t = bench.step_trace(prof, skip=2)
    assert t['steps'] == 3 and t['step_ms'] > 0 and t['gpu_busy_share'] == 0  # no CUDA kernels on a CPU
    assert any(name.startswith('aten::') for name, _ in t['host_ms_per_step'])
