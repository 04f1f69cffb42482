"""ELAS's training speed-up over full rank at each size, from bench/results/train.json, beside the paper's maximum speed-ups.

    python bench/paper_speedup.py [--train bench/results/train.json] [--out bench/results/paper_speedup.json]

No GPU: it reads the rows of bench/train.py (tokens/s of `train()` per size, variant, FFN width and mode, eager or fast,
i.e. compiled) and divides. For each size and mode: ELAS over full rank at the padded SwiGLU width (a multiple of 64, e.g.
5504 at 1B) and, where that row was measured, at the paper's width (5461 at 1B; at 130M the padded width, 2048, is the
paper's); and, to attribute the speed-up, LORO and LORO-ReLU² over full rank (padded width) and ELAS over LORO-ReLU² (the
share of 2:4 sparsity). Rows that are missing or
failed read "not measured". The paper's figures (1.75/1.80/1.88/2.75× for 60M…1B) are its maximum speed-ups over full rank
as a secondary summary reports them, from the authors' own setup, not measured here.
"""
import argparse, json, os
from common import meta

from elas_nb.config import SIZES

PAPER = {'60m': 1.75, '130m': 1.80, '350m': 1.88, '1b': 2.75}
MODES = ('eager', 'fast')


def speedups(rows:list, sizes=tuple(PAPER), modes=MODES) -> list:
    "One dict per (size, mode): tokens/s of full, LORO, LORO-ReLU² and ELAS and their ratios; None where not measured."
    def find(size, variant, mode, paper_width=False):
        return next((r for r in rows if (r.get('size'), r.get('variant'), r.get('mode'), bool(r.get('paper_width'))) ==
                     (size, variant, mode, paper_width) and not r.get('error') and r.get('tokens_per_s')), None)
    def ratio(a, b): return a['tokens_per_s'] / b['tokens_per_s'] if a and b else None
    out = []
    for size in sizes:
        for mode in modes:
            full, full_pw = find(size, 'full', mode), find(size, 'full', mode, True)
            if full_pw is None and full and size in SIZES and full.get('ffn_width') == SIZES[size].I: full_pw = full  # 130M: 2048 is both
            loro, relu2, elas = (find(size, v, mode) for v in ('loro', 'loro-relu2', 'elas'))
            got = dict(full=full, full_paper_width=full_pw, loro=loro, loro_relu2=relu2, elas=elas)
            out.append(dict(size=size, mode=mode, **{f'{k}_tokens_per_s': r and r['tokens_per_s'] for k, r in got.items()},
                            full_ffn_width=full and full.get('ffn_width'), full_paper_ffn_width=full_pw and full_pw.get('ffn_width'),
                            elas_speedup=ratio(elas, full), elas_speedup_paper_width=ratio(elas, full_pw),
                            paper_speedup=PAPER.get(size), loro_speedup=ratio(loro, full), loro_relu2_speedup=ratio(relu2, full),
                            elas_over_loro_relu2=ratio(elas, relu2), not_measured=[k for k, r in got.items() if r is None]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--train', default='bench/results/train.json')
    ap.add_argument('--sizes', default=','.join(PAPER))
    ap.add_argument('--out', default='bench/results/paper_speedup.json')
    a = ap.parse_args(argv)
    train = json.load(open(a.train)) if os.path.exists(a.train) else dict(meta=None, rows=[])
    rows = speedups(train['rows'], a.sizes.split(','))
    os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
    json.dump(dict(meta=meta(source=a.train, source_meta=train.get('meta'),
                             paper=dict(speedup=PAPER, source="the paper's maximum training speed-ups over full rank, as a "
                                        "secondary summary reports them; not measured here")),
                   rows=rows), open(a.out, 'w'), indent=1)
    x = lambda v: f'{v:.2f}×' if v is not None else 'not measured'
    print(f"{'size':5} {'mode':5} | {'ELAS / full':>12} {'/ full @paper':>13} {'paper':>6} | "
          f"{'LORO / full':>12} {'ReLU² / full':>12} {'ELAS / ReLU²':>12}")
    for r in rows:
        print(f"{r['size']:5} {r['mode']:5} | {x(r['elas_speedup']):>12} {x(r['elas_speedup_paper_width']):>13} "
              f"{x(r['paper_speedup']):>6} | {x(r['loro_speedup']):>12} {x(r['loro_relu2_speedup']):>12} "
              f"{x(r['elas_over_loro_relu2']):>12}")
    print("full: SwiGLU at the padded width (multiple of 64); @paper: at the paper's width where measured (1B: 5461); "
          "ReLU²: LORO-ReLU²; fast = compiled. Paper: its maximum speed-ups (secondary summary), its own setup.")


if __name__ == '__main__': main()
