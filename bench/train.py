"""Training throughput as users get it: `elas_nb.train.train`'s own step, eager and fast (compiled), for every size and
variant on one GPU, plus LORO's exact step timed on its own. Writes bench/results/train.json and prints a table.

    python bench/train.py --sizes 60m,130m,350m,1b --variants full,loro,loro-relu2,elas --modes fast,eager

Each row is one call of `train()` with the recipe's batch (512 sequences of 256 tokens, gradient accumulation over the recipe's
micro-batch) on random tokens (vocabulary 32000), checkpoints and evaluation off; tokens/s, MFU and peak memory are read from
the run's own log rows, leaving out the first row (warm-up; in fast mode the first step, which compiles, is reported apart).
ELAS runs with its mask on from the start (the regime after the dense warm-up). MFU counts 6 FLOPs per weight plus attention
against 989 TFLOP/s, the dense bf16 peak of the H100/H200 datasheet.
"""
import argparse, gc, json, os, tempfile, time
import torch
from torch.profiler import ProfilerActivity, profile
from common import meta

from elas_nb.data import Batches, Data, eval_batches
from elas_nb.config import model_config, recipe, train_flops_per_token
from elas_nb.convert import build_model
from elas_nb.runlog import read_log
from elas_nb.train import make_optimizer, train, train_dtype

LOG_EVERY = {'60m': 5, '130m': 4, '350m': 3, '1b': 2}  # steps per log row: three rows per run, the last two timed


def random_data(seq_len:int, micro_batch:int, vocab:int=32000, n:int=8192) -> Data:
    "Random token sequences (no id 0, the padding id) as a `Data` that `train` accepts."
    seqs = torch.randint(1, vocab, (n, seq_len + 1), dtype=torch.int32)
    return Data('random', Batches(seqs, micro_batch), lambda: eval_batches(seqs[:micro_batch], micro_batch), None, vocab, 0)


def exact_step_ms(rec, repeats:int=3) -> float:
    "Median time of one LORO exact step of the model `rec` builds, gradients random, on the GPU."
    cfg = model_config(rec.size, rec.variant, paper_width=rec.paper_width)
    model = build_model(cfg).cuda().to(train_dtype(torch.device('cuda')))
    opt, _ = make_optimizer(model, rec)
    for p in model.parameters(): p.grad = torch.randn_like(p) * 1e-3
    times = []
    for _ in range(repeats + 1):
        opt.n_steps = rec.exact_every - 1  # the next step is exact
        torch.cuda.synchronize(); t = time.perf_counter()
        opt.step()
        torch.cuda.synchronize(); times.append((time.perf_counter() - t) * 1e3)
    assert opt.last_step_exact
    del model, opt
    return sorted(times[1:])[len(times[1:]) // 2]


def merged_ms(intervals:list) -> float:
    "Length of the union of (start, end) intervals, in ms (the profiler's times are µs)."
    total, end = 0.0, float('-inf')
    for a, b in sorted(intervals):
        if b > end: total += b - max(a, end); end = b
    return total / 1e3


def step_trace(prof, skip:int) -> dict:
    """From a profile of a whole `train()`: over its optimizer steps after the first `skip`, the wall time per step, the share of it the
    GPU was busy, and the host's top operations by their own CPU time per step (what keeps the CPU from running ahead of the GPU)."""
    events = prof.events()
    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    starts = sorted(e.time_range.start for e in events if e.device_type == cpu and e.name.startswith('Optimizer.step'))
    t0, t1, n = starts[skip], starts[-1], len(starts) - 1 - skip
    inside = [e for e in events if t0 <= e.time_range.start < t1]
    gpu = [(e.time_range.start, e.time_range.end) for e in inside  # kernels and copies; not the GPU-side copies of annotations
           if e.device_type == cuda and not e.is_user_annotation]
    host = {}
    for e in inside:
        if e.device_type == cpu: host[e.name] = host.get(e.name, 0.0) + e.self_cpu_time_total / 1e3 / n
    step_ms = (t1 - t0) / 1e3 / n
    return dict(steps=n, step_ms=round(step_ms, 3), gpu_busy_share=round(merged_ms(gpu) / n / step_ms, 3),
                host_ms_per_step=[(k[:80], round(v, 3)) for k, v in sorted(host.items(), key=lambda x: -x[1])[:15]])


def measure(size:str, variant:str, mode:str, paper_width:bool=False, exact:bool=True, trace:bool=False) -> dict:
    "One row: `train()` on random tokens, read back from its log; with `trace`, one more run under the profiler (`step_trace`)."
    torch._dynamo.reset(); gc.collect(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    k = LOG_EVERY[size]
    rec = recipe(size, variant, steps=3 * k, eval_tokens=0, sparse_warmup=0, paper_width=paper_width)
    run = lambda out: train(rec, data=random_data(rec.seq_len, rec.micro_batch), out=out, compile=mode == 'fast', log_every=k,
                            save=False, progress=False)
    with tempfile.TemporaryDirectory() as out:
        res = run(out)
        rows = read_log(res['log'])
    timed = [(int(r['step']) - int(prev['step']), float(r['tok_per_s'])) for prev, r in zip(rows, rows[1:])]  # all but the first row
    tok_s = sum(n for n, _ in timed) / sum(n / t for n, t in timed)
    rows = rows[1:]
    cfg = model_config(size, variant, paper_width=paper_width)
    row = dict(size=size, variant=variant, ffn_width=cfg.ffn_width, paper_width=paper_width, micro_batch=rec.micro_batch,
               batch=rec.batch_size, mode=mode, tokens_per_s=tok_s, mfu=tok_s * train_flops_per_token(cfg, rec.seq_len) / 989e12,
               peak_gb=max(float(r['mem_gb']) for r in rows), first_step_s=res['first_step_s'])
    if exact and rec.optimizer == 'loro' and mode == 'fast': row['exact_step_ms'] = exact_step_ms(rec)
    if trace:
        torch._dynamo.reset()
        with tempfile.TemporaryDirectory() as out, profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof: run(out)
        row['trace'] = step_trace(prof, skip=k)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', default='60m,130m,350m,1b')
    ap.add_argument('--variants', default='full,loro,loro-relu2,elas')
    ap.add_argument('--modes', default='fast,eager')
    ap.add_argument('--paper-width', default='60m,350m,1b', help='sizes at which full and loro also run at the paper\'s SwiGLU width')
    ap.add_argument('--no-exact', action='store_true', help="don't time LORO's exact step")
    ap.add_argument('--trace', default='', help='size:variant rows (comma-separated) also run once under the profiler (step_trace)')
    ap.add_argument('--out', default='bench/results/train.json')
    a = ap.parse_args()
    runs = [(s, v, m, False) for m in a.modes.split(',') for s in a.sizes.split(',') for v in a.variants.split(',')]
    runs += [(s, v, 'fast', True) for s in a.paper_width.split(',') if s for v in ('full', 'loro') if 'fast' in a.modes]
    old = json.load(open(a.out)) if os.path.exists(a.out) else dict(rows=[])
    rows, run_meta = [], meta()
    for size, variant, mode, paper in runs:
        try: r = measure(size, variant, mode, paper, not a.no_exact, f'{size}:{variant}' in a.trace.split(',') and not paper)
        except torch.cuda.OutOfMemoryError: r = dict(size=size, variant=variant, mode=mode, paper_width=paper, error='OOM')
        r['commit'] = run_meta['commit']
        rows.append(r); print(json.dumps(r), flush=True)
        key = lambda x: (x['size'], x['variant'], x['mode'], x.get('paper_width', False))
        kept = [x for x in old['rows'] if key(x) not in {key(y) for y in rows}]  # rows of other sizes/modes from earlier runs stay
        os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
        json.dump(dict(meta=run_meta, rows=kept + rows), open(a.out, 'w'), indent=1)  # after every row: a time-out keeps what was measured
    print(f"\n{'size':5} {'variant':11} {'width':>5} {'mode':5} {'tok/s':>10} {'MFU':>5} {'GB':>6} {'compile s':>9} {'exact ms':>8}")
    for r in rows:
        if 'error' in r: print(f"{r['size']:5} {r['variant']:11} {'':>5} {r['mode']:5} {r['error']}"); continue
        print(f"{r['size']:5} {r['variant']:11} {r['ffn_width']:5} {r['mode']:5} {r['tokens_per_s']:10.0f} {r['mfu']:5.3f} "
              f"{r['peak_gb']:6.1f} {r['first_step_s'] or 0:9.1f} {r.get('exact_step_ms', float('nan')):8.1f}")
    for r in rows:
        if 'trace' in r:
            t = r['trace']
            print(f"\n{r['size']} {r['variant']} {r['mode']}: {t['step_ms']:.1f} ms per step, GPU busy {t['gpu_busy_share']:.2f}; host ms per step: "
                  + ', '.join(f'{k} {v:.2f}' for k, v in t['host_ms_per_step'][:8]))


if __name__ == '__main__': main()
