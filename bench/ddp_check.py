"""DDP check: N data-parallel processes must train like 1 process at the same global batch.

    python bench/ddp_check.py                                   # CPU: 1 vs 2 gloo processes, tiny ELAS, < 1 min
    python bench/ddp_check.py --device cuda --nproc 2 --size 60m --steps 20 --seq-len 256 --batch-size 64

Runs `elas_nb.train.train` once with `torchrun --nproc_per_node 1` (micro-batch = the global batch) and once with
`--nproc_per_node N` (micro-batch = global batch / N), on the embedded corpus, then compares the per-step losses. On CPU
(fp32) they agree to ~2e-7 relative; on GPU (bf16, NCCL) they should agree to bf16 noise (default tolerance 2e-2). Writes
`ddp_check.json` (losses, max relative difference, wall times, torch version) into --out and exits non-zero if the
difference exceeds --rtol.
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path


def worker(a):
    "One torchrun process: train and, on rank 0, dump the per-step losses."
    import torch
    from elas_nb.config import recipe
    from elas_nb.train import train
    world = int(os.environ.get('WORLD_SIZE', 1))
    rec = recipe(a.size, a.variant, steps=a.steps, seq_len=a.seq_len, batch_size=a.batch_size, micro_batch=a.batch_size // world,
                 warmup=max(1, a.steps // 5), sparse_warmup=a.steps // 2, exact_every=max(1, a.steps // 3), eval_every=a.steps)
    res = train(rec, data=a.data, out=a.out, device=a.device, progress=False, log_every=a.steps)
    if int(os.environ.get('RANK', 0)) == 0:
        Path(a.out, 'losses.json').write_text(json.dumps(dict(losses=res['losses'], val_loss=res['val_loss'], world=world,
                                                              torch=torch.__version__)))


def launch(a, n):
    "Run the worker under torchrun with n processes; its losses and wall time."
    out = Path(a.out)/f'nproc{n}'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(n), __file__, '--worker',
           '--out', str(out)] + [f'--{k.replace("_", "-")}={v}' for k, v in vars(a).items() if k not in ('out', 'worker', 'nproc', 'rtol')]
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'),
           'PYTHONPATH': os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get('PYTHONPATH', '')])}
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    return json.loads((out/'losses.json').read_text()), time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--nproc', type=int, default=2)
    p.add_argument('--size', default='tiny'); p.add_argument('--variant', default='elas')
    p.add_argument('--data', default='embedded')
    p.add_argument('--steps', type=int, default=6); p.add_argument('--seq-len', type=int, default=64)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--rtol', type=float, default=None, help='default 1e-4 on cpu, 2e-2 on cuda')
    p.add_argument('--out', default='runs/ddp_check')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker: return worker(a)
    rtol = a.rtol or (1e-4 if a.device == 'cpu' else 2e-2)
    (one, t1), (many, tn) = launch(a, 1), launch(a, a.nproc)
    steps = sorted(one['losses'], key=int)
    diff = max(abs(one['losses'][s] - many['losses'][s]) / abs(one['losses'][s]) for s in steps)
    print(f"{'step':>5} {'1 process':>10} {f'{a.nproc} processes':>12}")
    for s in steps: print(f"{s:>5} {one['losses'][s]:10.5f} {many['losses'][s]:12.5f}")
    print(f"val loss {one['val_loss']:.5f} vs {many['val_loss']:.5f}; max relative loss difference {diff:.2e} (rtol {rtol:g}); "
          f"wall {t1:.1f} s vs {tn:.1f} s")
    Path(a.out, 'ddp_check.json').write_text(json.dumps(dict(args=vars(a), one=one, many=many, max_rel_diff=diff, rtol=rtol,
                                                             wall_s=[t1, tn]), indent=1))
    if diff > rtol: sys.exit(f'DDP check failed: {a.nproc} processes differ from 1 by {diff:.2e} > {rtol:g}')


if __name__ == '__main__': main()
