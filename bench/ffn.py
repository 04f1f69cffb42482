"""The ELAS FFN core h1 → h2 = prune24(relu(h1 M1ᵀ)²) N2, forward and backward, CUDA-graphed, with activation memory:
plain LORO-ReLU² (no mask) eager, compiled and with y1 recomputed in the backward (activation checkpointing); the dense masked
reference (the paper's simulation of 2:4) eager and compiled; the fast 2:4 path saving y1 and recomputing it; and the forward
alone of the fused up-projection kernel.

Run on a GPU from the repository root: `python bench/ffn.py [--out bench/results/ffn.json]`.
"""
import argparse, json, time
from pathlib import Path

import torch

from common import graphed, gpu_ms, meta

from elas_nb.config import SIZES, relu2_width
from elas_nb.relu2 import relu2
from elas_nb.kernels import lowrank_up_relu2_prune_compress
from elas_nb.sparse_gemm import relu2_sparse24_down, relu2_sparse24_down_ref, sparse24_available, sparse_mm
from torch.utils.checkpoint import checkpoint

TOKENS = (16384, 65536)
MODEL_SIZES = ('60m', '130m', '350m', '1b')
def loro_relu2(h1, M1, N2): return relu2(h1 @ M1.T) @ N2

VARIANTS = {'loro-relu2': loro_relu2,
            'loro-relu2-compiled': torch.compile(loro_relu2),
            'loro-relu2-recompute': lambda h1, M1, N2: checkpoint(loro_relu2, h1, M1, N2, use_reentrant=False),
            'elas-ref': relu2_sparse24_down_ref,
            'elas-ref-compiled': torch.compile(relu2_sparse24_down_ref),
            'elas': relu2_sparse24_down,
            'elas-recompute': lambda h1, M1, N2: relu2_sparse24_down(h1, M1, N2, recompute=True)}
FUSED_FORWARD = lambda h1, M1, N2: sparse_mm(lowrank_up_relu2_prune_compress(h1, M1).compressed, N2, search=True)


def eager_ms(fn, n:int=10) -> float:
    "Time per call of `n` back-to-back eager calls, host overhead included."
    fn(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e3


def rel_err(got, want) -> float: return ((got.double() - want.double()).norm() / want.double().norm()).item()


def run(f, h1, M1, N2, g):
    "Output and gradients of one forward and backward, from fresh leaves as in a training step."
    h1, M1, N2 = (t.detach().requires_grad_() for t in (h1, M1, N2))
    out = f(h1, M1, N2)
    return (out,) + torch.autograd.grad(out, (h1, M1, N2), g)


def memory_mb(f, h1, M1, N2, g) -> tuple:
    "(held between forward and backward, output excluded; peak of forward + backward), MB above what existed before."
    run(f, h1, M1, N2, g)  # warm-up: kernel compilation, algorithm search
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    h1, M1, N2 = (t.detach().requires_grad_() for t in (h1, M1, N2))
    out = f(h1, M1, N2)
    saved = torch.cuda.memory_allocated() - base - out.numel() * out.element_size()
    res = (out.detach(),) + torch.autograd.grad(out, (h1, M1, N2), g)
    return saved / 2**20, (torch.cuda.max_memory_allocated() - base) / 2**20, res


def bench_shape(T:int, size:str) -> list:
    F, r = relu2_width(SIZES[size].I), SIZES[size].rank
    gen = torch.Generator(device='cuda').manual_seed(0)
    bf16 = dict(device='cuda', dtype=torch.bfloat16)
    h1 = torch.randn(T, r, generator=gen, **bf16)
    M1, N2 = (torch.randn(F, r, generator=gen, **bf16) / r**0.5 for _ in range(2))
    g = torch.randn(T, r, generator=gen, **bf16)
    rows, ref = [], None
    for name, f in VARIANTS.items():
        saved, peak, res = memory_mb(f, h1, M1, N2, g)
        if name == 'elas-ref': ref = res
        errs = dict(zip(('h2', 'dh1', 'dM1', 'dN2'), map(rel_err, res, ref))) if name.startswith('elas') and ref is not res else None
        del res
        step = lambda: run(f, h1, M1, N2, g)
        def fwd():
            with torch.no_grad(): return f(h1, M1, N2)
        rows.append(dict(size=size, T=T, F=F, r=r, variant=name, saved_mb=saved, peak_mb=peak, rel_err=errs,
                         fwd_ms=gpu_ms(graphed(fwd)), fwd_bwd_ms=gpu_ms(graphed(step)), fwd_bwd_eager_ms=eager_ms(step)))
        torch.cuda.empty_cache()
    with torch.no_grad(): fused_err = rel_err(FUSED_FORWARD(h1, M1, N2), ref[0])
    rows.append(dict(size=size, T=T, F=F, r=r, variant='elas-fused-forward', rel_err=dict(h2=fused_err),
                     fwd_ms=gpu_ms(graphed(lambda: FUSED_FORWARD(h1, M1, N2)))))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='bench/results/ffn.json')
    args = ap.parse_args()
    assert sparse24_available(), '2:4 sparse GEMM unavailable on this device'
    rows = [row for T in TOKENS for size in MODEL_SIZES for row in bench_shape(T, size)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(meta=meta(), rows=rows), indent=1))
    print(f"{'size':>5} {'T':>6} {'variant':>20} | {'fwd ms':>7} {'fwd+bwd ms':>10} {'eager':>7} | {'saved MB':>9} {'peak MB':>8} | max rel err vs ref")
    for w in rows:
        err = f"{max(w['rel_err'].values()):.1e}" if w['rel_err'] else ''
        if 'fwd_bwd_ms' not in w: print(f"{w['size']:>5} {w['T']:>6} {w['variant']:>20} | {w['fwd_ms']:7.3f} {'':>38} | {err}"); continue
        print(f"{w['size']:>5} {w['T']:>6} {w['variant']:>20} | {w['fwd_ms']:7.3f} {w['fwd_bwd_ms']:10.3f} {w['fwd_bwd_eager_ms']:7.3f} | "
              f"{w['saved_mb']:9.0f} {w['peak_mb']:8.0f} | {err}")


if __name__ == '__main__': main()
