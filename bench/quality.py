"""Quality at equal tokens: train variants of one size on an offline corpus with `elas_nb.train.train` and record the final
validation loss and perplexity, throughput and wall time in bench/results/quality.json, and each run's log.csv (with the
per-layer ReLU² zero fractions) under bench/results/quality_logs/.

    python bench/quality.py --corpus code --dir /tmp/corpora/code --variants elas,loro-relu2,full --tokens 150e6

The corpus folder is built first if it does not exist (`bench/corpora.py`; for `english`, give --src, the english-mix
folder). The recipes are the paper's, scaled to the run at its fractions: learning-rate warm-up 10 % of the steps, ELAS's
dense 2:4 warm-up 10 % (`--sparse-warmup`), LORO's exact step every steps/20. Every run uses seed 0 (`--seed` repeats a run with another seed, to see the noise): the same initialisation
where shapes agree and the same data order.
"""
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path
import torch
from common import meta
from elas_nb.config import recipe
from elas_nb.runlog import read_log
from elas_nb.train import train

RESULTS = Path('bench/results')


def run(a, variant:str) -> dict:
    "Train one variant on the corpus; its row of quality.json."
    steps = round(a.tokens / (512 * 256))
    elas = variant == 'elas'
    rec = recipe(a.size, variant, steps=steps, warmup=steps // 10, sparse_warmup=round(a.sparse_warmup * steps),
                 exact_every=max(1, steps // 20), eval_every=max(1, steps // 4), eval_tokens=None,
                 sparsifier=a.sparsifier if elas else 'top2', mask_grad=a.mask_grad if elas else 'ste')
    name = f'{a.corpus}-{a.size}-{variant}' + (f'-seed{a.seed}' if a.seed else '') + ''.join(f'-{k}{v:g}' if isinstance(v, float) else f'-{v}' for k, v, default in
                                                      (('warmup', a.sparse_warmup, 0.1), ('', a.sparsifier, 'top2'), ('', a.mask_grad, 'ste'))
                                                      if elas and v != default)
    out = Path(a.work)/name
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    res = train(rec, data=a.dir, out=out, cache_dir=Path(a.dir)/'cache', log_every=a.log_every, save=False, progress=False, seed=a.seed,
                cuda_graph=False if a.no_cuda_graph else None)
    wall = time.perf_counter() - t
    rows = read_log(res['log'])
    (RESULTS/'quality_logs').mkdir(parents=True, exist_ok=True)
    shutil.copy(res['log'], RESULTS/'quality_logs'/f'{name}.csv')
    timed = [float(r['tok_per_s']) for r in rows[1:] if r['tok_per_s']]
    return dict(size=a.size, variant=variant, corpus=a.corpus, tokens=steps * rec.tokens_per_step,
                epochs=steps * rec.tokens_per_step / res['train_tokens'], steps=steps, warmup_frac=a.sparse_warmup if elas else None,
                sparsifier=rec.sparsifier if elas else None, mask_grad=rec.mask_grad if elas else None,
                seed=a.seed, val_loss=res['val_loss'], val_ppl=res['val_ppl'], tokens_per_s=sum(timed) / len(timed), wall_s=wall,
                log=f'quality_logs/{name}.csv')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--corpus', choices=('code', 'english'), default='code')
    ap.add_argument('--dir', required=True, help='the corpus folder (built if missing)')
    ap.add_argument('--src', help='english: the english-mix folder')
    ap.add_argument('--size', default='60m')
    ap.add_argument('--variants', default='elas,loro-relu2,full')
    ap.add_argument('--tokens', type=float, default=150e6)
    ap.add_argument('--sparse-warmup', type=float, default=0.1, help='ELAS dense warm-up, fraction of the steps')
    ap.add_argument('--sparsifier', default='top2', help='ELAS: top2, mvue or soft-threshold')
    ap.add_argument('--mask-grad', default='ste', help='ELAS: ste or masked')
    ap.add_argument('--log-every', type=int, default=20)
    ap.add_argument('--seed', type=int, default=0, help='model initialisation and data order')
    ap.add_argument('--no-cuda-graph', action='store_true', help='compiled blocks without CUDA graphs')
    ap.add_argument('--deadline', type=float, default=float('inf'), help='seconds: start no run after this')
    ap.add_argument('--work', default='/tmp/quality_runs')
    ap.add_argument('--out', default=str(RESULTS/'quality.json'))
    a = ap.parse_args()
    t0 = time.perf_counter()
    if not (Path(a.dir)/'corpus.json').exists():
        cmd = [sys.executable, 'bench/corpora.py', a.corpus, a.dir] + (['--src', a.src] if a.src else [])
        subprocess.run(cmd, check=True)
    stats = json.loads((Path(a.dir)/'corpus.json').read_text())
    results = json.loads(Path(a.out).read_text()) if Path(a.out).exists() else dict(meta=meta(), corpora={}, rows=[])
    results['corpora'][a.corpus] = stats
    for variant in a.variants.split(','):
        if time.perf_counter() - t0 > a.deadline: print(f'deadline: {variant} not run', flush=True); continue
        row = dict(run(a, variant), commit=meta()['commit'])
        print(json.dumps(row), flush=True)
        key = lambda r: (r['size'], r['variant'], r['corpus'], r['tokens'], r['warmup_frac'], r['sparsifier'], r['mask_grad'], r.get('seed') or 0)  # rows from before --seed hold None
        results['rows'] = [r for r in results['rows'] if key(r) != key(row)] + [row]
        results['meta'] = meta()
        Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"\n{'size':5} {'variant':11} {'corpus':8} {'tokens':>8} {'epochs':>6} {'val ppl':>8} {'tok/s':>9} {'wall s':>7}")
    for r in results['rows']:
        print(f"{r['size']:5} {r['variant']:11} {r['corpus']:8} {r['tokens'] / 1e6:7.0f}M {r['epochs']:6.2f} {r['val_ppl']:8.2f} "
              f"{r['tokens_per_s']:9.0f} {r['wall_s']:7.0f}")


if __name__ == '__main__': main()
