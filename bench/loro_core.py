"""The core of LORO's exact step alone: the rank-r balanced factors of a batch of 2r×2r cores C, at the 1B shapes (r = 512, the
1B model's three groups of factor pairs, so one call per group as `loro_exact_update` makes them) and the 60M shapes (r = 128).
Today's `eigh` of CᵀC (cuSOLVER, which loops syevd over the batch) against: the same with MAGMA, torch's SVD drivers, the batch
split over CUDA streams, the cores decomposed on the CPU by LAPACK (float64 batched, float64 or fp32 a thread per chunk), and subspace
iteration started from [I; 0] plus an r×r eigh (see `subspace_factors`). Every variant is timed on the cores of every group
(CUDA events, median) and checked: the largest relative error of its rank-r product A·Bᵀ = P_r·Σ_r·Q_rᵀ against float64 SVD,
over a few cores per group; subspace variants also report the largest relative residual ‖CᵀC·q − λ·q‖/λ of their vectors.
One failing variant is recorded (its error string) and the script goes on. Writes bench/results/loro_core.json, prints a table.

    python bench/loro_core.py                         # both sizes, every variant (about a minute on an H200)
    python bench/loro_core.py --sizes 60m --variants eigh subspace1
    python bench/loro_core.py --device cpu --sizes tiny --out /tmp/core.json   # a smoke test without a GPU
"""
import argparse, json, math, os, statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import torch
from elas_nb.loro import core_factors, ieee_fp32_matmul, thin_qr
from elas_nb.config import LORO_TABLE

sys.path.insert(0, str(Path(__file__).parent))
from common import meta  # noqa: E402
from loro_exact import make_group, median_ms, pair_groups, record_failure, timer  # noqa: E402  the same factors and timing as the whole-step benchmark

VARIANTS = ['eigh', 'eigh-magma', 'eigh-streams2', 'eigh-streams4', 'eigh-streams8', 'cpu-f64', 'cpu-f64-pool', 'cpu-f32-pool',
            'subspace1', 'subspace2', 'subspace-f64', 'svd', 'gesvdj', 'gesvda', 'gesvd']


def cores(M, N, D_M, D_N, lr):
    "The (L, 2r, 2r) cores that `loro_exact_update` decomposes, built the same way (Cholesky-QR2, fp32)."
    with ieee_fp32_matmul():
        U, R_M, R_M_inv = thin_qr(M)
        V, R_N, R_N_inv = thin_qr(N)
        GV, GtU = D_M @ R_N_inv, D_N @ R_M_inv
        K0 = GtU.mT @ V
        K_M = thin_qr(GV - U @ (U.mT @ GV), inverse=False)[1]
        K_N = thin_qr(GtU - V @ K0.mT, inverse=False)[1]
        return torch.cat([torch.cat([R_M @ R_N.mT - lr * K0, -lr * K_N.mT], -1), torch.cat([-lr * K_M, torch.zeros_like(K_M)], -1)], -2)


def subspace_factors(C, r, iters=1, residual=None):
    """Top-r balanced factors of each core by subspace iteration on H = CᵀC from Z = [I; 0], then Rayleigh–Ritz (an r×r eigh).
    C = [[S − ηK0, −ηK_Nᵀ], [−ηK_M, 0]]: for small η its top right singular space is [I; 0] up to O(η‖K‖/σ_r), and the
    error shrinks by (σ_{r+1}/σ_r)² per iteration, σ_{r+1} = O(η²‖K‖²/σ_r). Exact only where that gap is wide: hence the check."""
    with ieee_fp32_matmul():
        H = C.mT @ C                                                   # (L, 2r, 2r)
        Z = H[..., :r]                                                 # H·[I; 0]: the first iteration for free
        for i in range(iters):
            Z = thin_qr(Z, inverse=False)[0]                           # Cholesky-QR2, Householder where it fails
            if i + 1 < iters: Z = H @ Z
        w, X = torch.linalg.eigh(Z.mT @ H @ Z)                         # Ritz values and vectors, (L, r), (L, r, r)
        Q = Z @ X.flip(-1)                                             # (L, 2r, r) top r right singular vectors
        if residual is not None:                                       # ‖H·q − λ·q‖/λ₁, the worst column
            res = torch.linalg.vector_norm(H @ Q - Q * w.flip(-1).unsqueeze(-2), dim=-2) / w[..., -1:]
            residual.append(res.max().item())
        CQ = C @ Q
        root = torch.linalg.vector_norm(CQ, dim=-2).sqrt().unsqueeze(-2)
        return CQ / root.clamp_min(torch.finfo(C.dtype).tiny), Q * root


def on_streams(fn, C, streams):
    "fn on `streams` chunks of the batch, each on its own CUDA stream and host thread (cuSOLVER calls may block their thread)."
    main, pool = torch.cuda.current_stream(), [torch.cuda.Stream() for _ in range(streams)]
    def work(k, chunk):
        s = pool[k]
        s.wait_stream(main)
        with torch.cuda.stream(s): out = fn(chunk)
        for t in out: t.record_stream(main)
        return out
    with ThreadPoolExecutor(streams) as ex: outs = list(ex.map(work, range(streams), C.chunk(streams)))
    for s in pool: main.wait_stream(s)
    return tuple(torch.cat(o) for o in zip(*outs))


def on_cpu(C, r, pool, dtype=torch.float64):
    "LAPACK on the host: batched (torch's intra-op threads inside each call) or one thread per chunk (`pool` workers)."
    X = C.to('cpu', dtype)
    if not pool: out = core_factors(X, r, 'eigh')
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one LAPACK thread per worker
        try:
            with ThreadPoolExecutor(pool) as ex: parts = list(ex.map(lambda c: core_factors(c, r, 'eigh'), X.chunk(pool)))
        finally: torch.set_num_threads(threads)
        out = tuple(torch.cat(p) for p in zip(*parts))
    return tuple(t.to(C.device, C.dtype) for t in out)


def variant_fn(name, r, residual=None):
    "The callable C ↦ (A, B) that variant `name` runs on one group's cores."
    if name in ('eigh', 'svd', 'gesvdj', 'gesvda', 'gesvd'): return lambda C: core_factors(C, r, name)
    if name == 'eigh-magma':
        def magma(C):
            before = torch.backends.cuda.preferred_linalg_library()
            torch.backends.cuda.preferred_linalg_library('magma')
            try: return core_factors(C, r, 'eigh')
            finally: torch.backends.cuda.preferred_linalg_library(before)
        return magma
    if name.startswith('eigh-streams'): return lambda C: on_streams(lambda c: core_factors(c, r, 'eigh'), C, int(name[len('eigh-streams'):]))
    if name == 'cpu-f64': return lambda C: on_cpu(C, r, 0)
    if name == 'cpu-f64-pool': return lambda C: on_cpu(C, r, os.cpu_count() or 1)
    if name == 'cpu-f32-pool': return lambda C: on_cpu(C, r, os.cpu_count() or 1, torch.float32)
    if name == 'subspace-f64': return lambda C: tuple(t.float() for t in subspace_factors(C.double(), r, 1, residual))
    if name.startswith('subspace'): return lambda C: subspace_factors(C, r, int(name[len('subspace'):]), residual)
    raise ValueError(f"unknown variant {name!r}")


def rank_r_products(A, B): return A.double() @ B.double().mT  # (L, 2r, 2r) the truncation P_r·Σ_r·Q_rᵀ


def reference(C, r, check):
    "Float64 rank-r truncations of the first `check` cores (LAPACK SVD on the host)."
    P, S, Qh = torch.linalg.svd(C[:check].double().cpu())
    return (P[..., :r] * S[..., None, :r]) @ Qh[..., :r, :]


def bench_size(size, variants, device, check, deadline, ms_of):
    "Rows for the cores of the `size` model, one per variant."
    lr = LORO_TABLE[size][0]
    shapes = pair_groups(size)
    r = next(iter(shapes))[0][1]
    Cs = [cores(*make_group(L, sm[0], sn[0], r, device, seed), lr) for seed, ((sm, sn), L) in enumerate(shapes.items())]
    refs = [reference(C, r, check) for C in Cs]
    S = torch.linalg.svdvals(Cs[0][0].double().cpu())
    spectrum = dict(sigma_1=S[0].item(), sigma_r=S[r - 1].item(), sigma_r1=S[r].item())  # the gap subspace iteration relies on
    print(f"\n== {size}: {sum(shapes.values())} cores of {2 * r}×{2 * r} in groups of {list(shapes.values())}; lr {lr:g}; "
          f"first core: σ₁ {S[0]:.3g}, σ_r {S[r - 1]:.3g}, σ_r+1 {S[r]:.3g}", flush=True)
    rows = []
    for name in variants:
        row = dict(size=size, variant=name, r=r, groups=list(shapes.values()), lr=lr, **spectrum)
        residual = []
        try:
            if time.monotonic() > deadline: raise TimeoutError('skipped: out of the time budget')
            if device != 'cuda' and ('streams' in name or name == 'eigh-magma' or name.startswith('ges')):
                raise RuntimeError('needs CUDA')
            fn = variant_fn(name, r, residual)
            run = lambda: [fn(C) for C in Cs]
            probe = ms_of(lambda: fn(Cs[-1][:2]))[0]  # warm-up (handles, workspaces), and an estimate
            estimate = probe / 2 * sum(len(C) for C in Cs) / 1e3
            if time.monotonic() + 2 * estimate > deadline: raise TimeoutError(f"skipped: about {estimate:.1f} s a call would overrun the time budget")
            row['ms'], outs = median_ms(ms_of, run, budget_ms=3000.0, max_reps=5)
            row['rel_err'] = max(((rank_r_products(*(t[:check] for t in o)) - ref).norm(dim=(-2, -1)) / ref.norm(dim=(-2, -1))).max().item()
                                 for o, ref in zip(outs, refs))
            if residual: row['residual'] = max(residual)
            print(f"{name:20s} {row['ms']:9.1f} ms  rel. error {row['rel_err']:.1e}"
                  + (f"  residual {row['residual']:.1e}" if residual else ''), flush=True)
        except Exception as e: record_failure(row, f"{name:20s}", e)  # a driver this build refuses, MAGMA missing, out of memory
        finally:
            if device == 'cuda': torch.cuda.empty_cache()
        rows.append(row)
    return rows


def table(rows):
    "Per size: ms, speed-up over today's eigh, error against float64."
    out = [f"{'size':5s} {'variant':20s} {'ms':>9s} {'vs eigh':>8s} {'rel.err':>8s} {'residual':>8s}"]
    for r in rows:
        if 'ms' not in r: out.append(f"{r['size']:5s} {r['variant']:20s} {r['error']}"); continue
        base = next((x.get('ms') for x in rows if x['size'] == r['size'] and x['variant'] == 'eigh'), None)
        speed = f"{base / r['ms']:7.2f}x" if base else ''
        res = f"{r['residual']:8.1e}" if 'residual' in r else ''
        out.append(f"{r['size']:5s} {r['variant']:20s} {r['ms']:9.1f} {speed:>8s} {r['rel_err']:8.1e} {res:>8s}")
    return '\n'.join(out)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', nargs='+', default=['1b', '60m'])
    ap.add_argument('--variants', nargs='+', default=VARIANTS, help=f"from {VARIANTS}")
    ap.add_argument('--check', type=int, default=2, help='cores per group checked against float64')
    ap.add_argument('--budget', type=float, default=75.0, help='seconds for all variants: one that would overrun is skipped')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'loro_core.json'))
    a = ap.parse_args()
    start = time.monotonic()
    info = meta(cpu_threads=torch.get_num_threads(), cpu_count=os.cpu_count())
    print(f"{info['gpu']}, torch {info['torch']}, {info['cpu_count']} CPUs", flush=True)
    rows = []
    for size in a.sizes: rows += bench_size(size, a.variants, a.device, a.check, start + a.budget, timer(a.device))
    info['seconds'] = round(time.monotonic() - start, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(dict(meta=info, rows=rows), indent=1))
    print(f"\nwrote {a.out} after {info['seconds']} s\n")
    print(table(rows))
