"""Dense (cuBLAS) against 2:4 (cuSPARSELt) for the ELAS down GEMM y2[T,F] @ N2[F,r], eager and in CUDA graphs.

Run on a GPU from the repository root: `python bench/sparse_gemm.py [--out bench/results/sparse_gemm.json]`.
TFLOP/s count the dense-equivalent 2·T·F·r for both, so they compare directly.
"""
import argparse, json, time
from pathlib import Path

import torch

from common import graphed, gpu_ms, meta

from elas_nb.kernels import relu2_prune_compress
from elas_nb.config import SIZES, relu2_width
from elas_nb.sparse_gemm import _ALGS, down_gemm_cost, sparse24_available, sparse_mm

TOKENS = (16384, 65536)
MODEL_SIZES = ('60m', '130m', '350m', '1b')


def eager_ms(fn, n:int=50) -> float:
    "Time per call of `n` back-to-back eager calls, host overhead included (what a training step pays)."
    fn(); torch.cuda.synchronize()
    best = float('inf')
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n): fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / n * 1e3)
    return best


def rel_err(got, want) -> float: return ((got.double() - want.double()).norm() / want.double().norm()).item()


def bench_shape(T:int, size:str) -> dict:
    F, r = relu2_width(SIZES[size].I), SIZES[size].rank
    gen = torch.Generator(device='cuda').manual_seed(0)
    y1 = torch.randn(T, F, device='cuda', dtype=torch.bfloat16, generator=gen)
    N2 = torch.randn(F, r, device='cuda', dtype=torch.bfloat16, generator=gen) / F**0.5
    p = relu2_prune_compress(y1, dense=True)
    y2, c = p.dense, p.compressed
    N2t = N2.t().contiguous().t()  # the same matrix, column-major
    err = rel_err(sparse_mm(c, N2), y2.double() @ N2.double())
    sparse_mm(c, N2, search=True)  # find and cache the best algorithm for this shape
    alg = _ALGS[(N2.device, T, F, r, N2.dtype, True)]
    dense = lambda: y2 @ N2
    default_alg = lambda: torch._cslt_sparse_mm(c, N2)
    searched = lambda: sparse_mm(c, N2)
    ms = dict(dense_eager=eager_ms(dense), sparse_eager=eager_ms(default_alg),
              dense_graph=gpu_ms(graphed(dense)), sparse_graph=gpu_ms(graphed(default_alg)),
              sparse_graph_search=gpu_ms(graphed(searched)),
              sparse_graph_bt=gpu_ms(graphed(lambda: torch._cslt_sparse_mm(c, N2t))),
              cslt_compress=gpu_ms(lambda: torch._cslt_compress(y2)),
              kernel_compress=gpu_ms(graphed(lambda: relu2_prune_compress(y1))))
    cost, scost = down_gemm_cost(T, F, r), down_gemm_cost(T, F, r, sparse=True)
    tflops = {k: cost['flop'] / v / 1e9 for k, v in ms.items() if 'compress' not in k}
    best_sparse = min(ms['sparse_graph'], ms['sparse_graph_search'])
    return dict(size=size, T=T, F=F, r=r, flop=cost['flop'], rel_err=err, alg=list(alg),
                ms=ms, tflops=tflops, floor_ms=dict(dense=cost['floor_ms'], sparse=scost['floor_ms']),
                ratio_graph=ms['dense_graph'] / best_sparse, ratio_eager=ms['dense_eager'] / ms['sparse_eager'])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='bench/results/sparse_gemm.json')
    args = ap.parse_args()
    assert sparse24_available(), '2:4 sparse GEMM unavailable on this device'
    rows = []
    for T in TOKENS:
        for size in MODEL_SIZES:
            rows.append(bench_shape(T, size))
            torch.cuda.empty_cache()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(meta=meta(), rows=rows), indent=1))
    print(f"{'size':>5} {'T':>6} {'F':>5} {'r':>4} | {'dense eager':>11} {'2:4 eager':>9} | {'dense graph':>11} {'2:4 graph':>9} "
          f"{'2:4 alg*':>8} {'2:4 Bᵀ':>7} | {'floor d/s':>11} | {'ratio':>5} | {'cslt_compress':>13} {'ours':>6} | err")
    for w in rows:
        m = w['ms']
        print(f"{w['size']:>5} {w['T']:>6} {w['F']:>5} {w['r']:>4} | {m['dense_eager']:11.3f} {m['sparse_eager']:9.3f} | "
              f"{m['dense_graph']:11.3f} {m['sparse_graph']:9.3f} {m['sparse_graph_search']:8.3f} {m['sparse_graph_bt']:7.3f} | "
              f"{w['floor_ms']['dense']:5.3f}/{w['floor_ms']['sparse']:5.3f} | {w['ratio_graph']:5.2f} | "
              f"{m['cslt_compress']:13.3f} {m['kernel_compress']:6.3f} | {w['rel_err']:.1e}")
    print('times in ms; ratio = dense graph / best 2:4 graph; alg* = searched algorithm; Bᵀ = N2 column-major')


if __name__ == '__main__': main()
