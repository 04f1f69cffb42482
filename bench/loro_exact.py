"""LORO's exact step over every factor pair of a model, on one GPU: the per-pair loop (the reference as written) against the
batched step and its alternatives: Householder or Cholesky-QR2 for the QRs; the 2r×2r core through torch's default SVD, the
cuSOLVER drivers gesvd, gesvdj, gesvda, or eigh of CᵀC; chunks of each shape group on several CUDA streams. Each variant is
timed whole (CUDA events, after a warm-up, median) and, for some, piece by piece (QRs of the factors, the products and solves,
QRs of the tangent parts, the core, the final products), with its accuracy against float64: the largest relative error of
M⁺N⁺ᵀ over a few pairs of every group. Then the regular/lazy AdamW update of the whole bf16 model, fused kernel against the
foreach path, in GB/s. Writes bench/results/loro_exact.json and prints a table last.

    python bench/loro_exact.py                                   # all sizes and variants (a few minutes on an H200)
    python bench/loro_exact.py --sizes 60m 1b --variants loop cholesky+eigh
    python bench/loro_exact.py --device cpu --sizes tiny --out /tmp/x.json   # a smoke test without a GPU
"""
import argparse, datetime, json, math, statistics, sys, time, traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import torch
from elas_nb.lowrank import LowRankLinear
from elas_nb.config import LORO_TABLE, model_config
from elas_nb.convert import build_model
from elas_nb.loro import (adam_update_, core_factors, ieee_fp32_matmul, loro_exact_update, loro_exact_update_ref, thin_qr,
                          _zero_moments)

VARIANTS = ['cholesky+eigh', 'householder+svd', 'loop', 'cholesky+svd', 'cholesky+gesvdj', 'householder+eigh',
            'cholesky+eigh+streams4', 'cholesky+gesvda', 'cholesky+gesvd']
PIECES = ['loop', 'householder+svd', 'cholesky+eigh', 'cholesky+gesvdj']
UPDATE_BYTES = 22  # per bf16 parameter: read p, g (2 + 2), read and write m, v (16), write p (2)


def pair_groups(size:str) -> Counter:
    "{(M shape, N shape): number of pairs} of the LORO model of `size`, read off a model on the meta device."
    with torch.device('meta'): model = build_model(model_config(size, 'loro'))
    return Counter((tuple(m.M.shape), tuple(m.N.shape)) for m in model.modules() if isinstance(m, LowRankLinear))


def make_group(L, m, n, r, device, seed):
    "L pairs: factors with singular values over a decade (times a random rotation), bounded dense Adam-like directions; fp32."
    g = torch.Generator(device=device).manual_seed(seed)
    def factor(rows):
        O = torch.linalg.qr(torch.randn(L, r, r, generator=g, device=device))[0]
        return torch.randn(L, rows, r, generator=g, device=device) / math.sqrt(rows) * torch.logspace(0, -1, r, device=device) @ O
    return factor(m), factor(n), torch.randn(L, m, r, generator=g, device=device).tanh(), torch.randn(L, n, r, generator=g, device=device).tanh()


def timer(device):
    "ms of one call of fn, measured with CUDA events (or the wall clock on the CPU)."
    def cuda_ms(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(); start.record(); out = fn(); end.record(); torch.cuda.synchronize()
        return start.elapsed_time(end), out
    def cpu_ms(fn):
        t0 = time.perf_counter(); out = fn(); return 1e3 * (time.perf_counter() - t0), out
    return cuda_ms if device == 'cuda' else cpu_ms


def median_ms(ms_of, fn, budget_ms=1500.0, max_reps=5):
    "Median over repeated calls (at least one, more while they fit in `budget_ms`), and the last call's result."
    times, out = [], None
    while not times or (len(times) < max_reps and sum(times) + times[-1] < budget_ms):
        t, out = ms_of(fn); times.append(t)
    return statistics.median(times), out


def parse(variant):
    "'cholesky+eigh+streams4' -> ('cholesky', 'eigh', 4); 'loop' -> (None, None, 1)."
    if variant == 'loop': return None, None, 1
    parts = variant.split('+')
    streams = int(parts[2][len('streams'):]) if len(parts) > 2 else 1
    return parts[0], parts[1], streams


def run_variant(variant, groups, lr):
    "The exact step of every pair, all groups; returns the new (M, N) stacked per group."
    qr, svd, streams = parse(variant)
    if qr is None:  # the reference, one pair at a time
        return [tuple(torch.stack(x) for x in zip(*(loro_exact_update_ref(M[i], N[i], D_M[i], D_N[i], lr) for i in range(len(M)))))
                for M, N, D_M, D_N in groups]
    if streams == 1: return [loro_exact_update(*g, lr, qr, svd) for g in groups]
    # chunks of every group on `streams` CUDA streams, one host thread each (cuSOLVER calls may block their thread)
    main = torch.cuda.current_stream()
    pool = [torch.cuda.Stream() for _ in range(streams)]
    def work(k, chunk):
        s = pool[k % streams]
        s.wait_stream(main)
        with torch.cuda.stream(s): out = loro_exact_update(*chunk, lr, qr, svd)
        for t in out: t.record_stream(main)  # used on the main stream next: keep the allocator from reusing it early
        return out
    jobs = [(gi, [t.chunk(streams) for t in g]) for gi, g in enumerate(groups)]
    tasks = [(gi, k, tuple(t[k] for t in parts)) for gi, parts in jobs for k in range(len(parts[0]))]
    with ThreadPoolExecutor(streams) as ex: outs = list(ex.map(lambda t: (t[0], work(t[1], t[2])), tasks))
    for s in pool: main.wait_stream(s)
    return [tuple(torch.cat([o[j] for gi2, o in outs if gi2 == gi]) for j in (0, 1)) for gi in range(len(groups))]


def piece_fns(variant, groups, lr):
    "{piece: callable} timing each piece of the step on every group (inputs precomputed once)."
    qr, svd, _ = parse(variant)
    if qr is None:  # per pair, as the reference calls them
        def per_pair(op):
            def run():
                for g in groups:
                    for i in range(len(g[0])): op(*(t[i] for t in g))
            return run
        def solves(M, N, D_M, D_N):
            R_M, R_N = torch.linalg.qr(M)[1], torch.linalg.qr(N)[1]
            return lambda: (torch.linalg.solve_triangular(R_N, D_M, upper=True, left=False),
                            torch.linalg.solve_triangular(R_M.T, D_N.T, upper=False))
        solve_calls = [solves(*(t[i] for t in g)) for g in groups for i in range(len(g[0]))]
        r = groups[0][0].shape[-1]
        cores = [torch.randn(len(g[0]), 2 * r, 2 * r, device=g[0].device) for g in groups]
        return {'qr_factors': per_pair(lambda M, N, *_: (torch.linalg.qr(M), torch.linalg.qr(N))),
                'products': lambda: [f() for f in solve_calls],
                'qr_tangent': per_pair(lambda M, N, D_M, D_N: (torch.linalg.qr(D_M), torch.linalg.qr(D_N))),
                'core': lambda: [torch.linalg.svd(c[i]) for c in cores for i in range(len(c))]}
    inputs = []
    with ieee_fp32_matmul():
        for M, N, D_M, D_N in groups:
            U, R_M, R_M_inv = thin_qr(M, qr)
            V, R_N, R_N_inv = thin_qr(N, qr)
            GV, GtU = D_M @ R_N_inv, D_N @ R_M_inv
            K0 = GtU.mT @ V
            Y_M, Y_N = GV - U @ (U.mT @ GV), GtU - V @ K0.mT
            Q_M, K_M, _ = thin_qr(Y_M, qr, inverse=False)
            Q_N, K_N, _ = thin_qr(Y_N, qr, inverse=False)
            C = torch.cat([torch.cat([R_M @ R_N.mT - lr * K0, -lr * K_N.mT], -1), torch.cat([-lr * K_M, torch.zeros_like(K_M)], -1)], -2)
            A, B = core_factors(C, M.shape[-1], svd)
            inputs.append(dict(M=M, N=N, D_M=D_M, D_N=D_N, U=U, V=V, R_M_inv=R_M_inv, R_N_inv=R_N_inv, Y_M=Y_M, Y_N=Y_N,
                               Q_M=Q_M, Q_N=Q_N, C=C, A=A, B=B))
    r = groups[0][0].shape[-1]
    def each(op):
        def run():
            with ieee_fp32_matmul(): return [op(x) for x in inputs]
        return run
    def products(x):
        GV, GtU = x['D_M'] @ x['R_N_inv'], x['D_N'] @ x['R_M_inv']
        K0 = GtU.mT @ x['V']
        return GV - x['U'] @ (x['U'].mT @ GV), GtU - x['V'] @ K0.mT
    return {'qr_factors': each(lambda x: (thin_qr(x['M'], qr), thin_qr(x['N'], qr))),
            'products': each(products),
            'qr_tangent': each(lambda x: (thin_qr(x['Y_M'], qr, inverse=False), thin_qr(x['Y_N'], qr, inverse=False))),
            'core': each(lambda x: core_factors(x['C'], r, svd)),
            'final': each(lambda x: (torch.baddbmm(x['U'] @ x['A'][:, :r], x['Q_M'], x['A'][:, r:]),
                                     torch.baddbmm(x['V'] @ x['B'][:, :r], x['Q_N'], x['B'][:, r:])))}


def rel_error(outs, refs, check):
    "Largest relative error of M⁺N⁺ᵀ over the checked pairs of every group, against the float64 products."
    err = 0.0
    for (M1, N1), want in zip(outs, refs):
        got = M1[:check].double() @ N1[:check].double().mT
        err = max(err, ((got - want).norm(dim=(-2, -1)) / want.norm(dim=(-2, -1))).max().item())
    return err


def record_failure(row:dict, label:str, e:Exception):
    "Store and print why a variant did not run (time budget, driver, memory); a traceback unless it was the budget."
    if isinstance(e, TimeoutError): row['error'] = str(e); print(f"{label} {e}", flush=True); return
    row['error'] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    print(f"{label} FAILED {row['error']}", flush=True)
    traceback.print_exc(limit=2)


def bench_exact(size, variants, pieces, device, check, deadline, ms_of):
    "Rows for the exact step of `size`."
    lr = LORO_TABLE[size][0]
    shapes = pair_groups(size)
    groups = [make_group(L, sm[0], sn[0], sm[1], device, seed) for seed, ((sm, sn), L) in enumerate(shapes.items())]
    refs = []
    for M, N, D_M, D_N in groups:  # float64 products of the first `check` pairs of every group
        ref = [loro_exact_update_ref(*(t[i].double() for t in (M, N, D_M, D_N)), lr) for i in range(min(check, len(M)))]
        refs.append(torch.stack([a @ b.T for a, b in ref]))
    warm = [tuple(t[:2] for t in g) for g in groups]  # cuSOLVER handles and workspaces, kernels: first calls off the clock
    warm_pairs = sum(len(g[0]) for g in warm)
    desc = ', '.join(f"{L}×(M {sm}, N {sn})" for (sm, sn), L in shapes.items())
    print(f"\n== {size}: {sum(shapes.values())} pairs in {len(shapes)} groups: {desc}; lr {lr:g}", flush=True)
    rows = []
    for variant in variants:
        row = dict(kind='exact', size=size, variant=variant, pairs=sum(shapes.values()),
                   groups=[dict(M=list(sm), N=list(sn), count=L) for (sm, sn), L in shapes.items()])
        if time.monotonic() > deadline:
            row['error'] = 'skipped: out of the time budget'; rows.append(row); print(f"{variant:24s} skipped (time budget)"); continue
        try:
            if parse(variant)[2] > 1 and device != 'cuda': raise RuntimeError('streams need CUDA')
            run_variant(variant, warm, lr)
            estimate = ms_of(lambda: run_variant(variant, warm, lr))[0] / 1e3 * row['pairs'] / warm_pairs  # s, one full step
            if time.monotonic() + estimate * (3 if variant in pieces else 1.5) > deadline:
                raise TimeoutError(f"skipped: about {estimate:.0f} s a step would overrun the time budget")
            row['ms'], outs = median_ms(ms_of, lambda: run_variant(variant, groups, lr))
            row['rel_err'] = rel_error(outs, refs, check)
            del outs
            if variant in pieces:
                row['pieces_ms'] = {name: median_ms(ms_of, fn, budget_ms=1000.0, max_reps=3)[0]
                                    for name, fn in piece_fns(variant, groups, lr).items()}
            print(f"{variant:24s} {row['ms']:9.1f} ms  rel. error {row['rel_err']:.1e}  "
                  + ' '.join(f"{k} {v:.1f}" for k, v in row.get('pieces_ms', {}).items()), flush=True)
        except Exception as e: record_failure(row, f"{variant:24s}", e)  # an unsupported driver, out of memory: report it and go on
        finally:
            if device == 'cuda': torch.cuda.empty_cache()
        rows.append(row)
    return rows


def bench_update(size, device, ms_of):
    "Rows for the regular + lazy AdamW update of the whole bf16 model: the fused kernel against the foreach path."
    cfg = model_config(size, 'loro')
    with torch.device(device): model = build_model(cfg).to(torch.bfloat16)  # initialised where it lives
    params = [p.detach().requires_grad_() for p in model.parameters()]
    for p in params: p.grad = torch.randn_like(p)
    n = sum(p.numel() for p in params)
    sizes = [1e-3 * (cfg.rank / cfg.d_model if p.ndim == 2 and p.shape[1] == cfg.rank else 1.0) for p in params]  # lazy factor steps: η·r/d
    rows = []
    for path, fused in (('fused', None), ('foreach', False)):
        states = [_zero_moments(p) for p in params]
        step = lambda: adam_update_(params, states, sizes, fused=fused)
        with torch.no_grad():
            step()  # compile the kernel, allocate
            if device == 'cuda': torch.cuda.synchronize()
            host = []
            for _ in range(3):  # host time to issue one update (no sync inside): the launch overhead
                t0 = time.perf_counter(); step(); host.append(1e3 * (time.perf_counter() - t0))
                if device == 'cuda': torch.cuda.synchronize()
            ms, _ = median_ms(ms_of, step, budget_ms=500.0, max_reps=10)
        rows.append(dict(kind='update', size=size, path=path, params=n, tensors=len(params), ms=ms, host_ms=statistics.median(host),
                         gb_per_s=UPDATE_BYTES * n / ms / 1e6, bytes_per_param=UPDATE_BYTES))
        print(f"update {size:5s} {path:8s} {ms:7.2f} ms  ({UPDATE_BYTES * n / ms / 1e6:6.0f} GB/s at {UPDATE_BYTES} B/param), "
              f"host {statistics.median(host):.2f} ms for {len(params)} tensors", flush=True)
        del states
    return rows


def metadata(device):
    if device == 'cuda':
        sys.path.insert(0, str(Path(__file__).parent))
        from common import meta
        return meta()
    import triton
    return dict(gpu='none (cpu smoke test)', torch=torch.__version__, triton=triton.__version__,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))


def table(rows):
    "Short table: every exact-step variant per size, with its speed-up over the per-pair loop."
    out = [f"{'size':5s} {'variant':24s} {'ms':>9s} {'vs loop':>8s} {'rel.err':>8s}  pieces (ms)"]
    order = ['tiny', '60m', '130m', '350m', '1b']
    rows = sorted(rows, key=lambda r: order.index(r['size']) if r['size'] in order else len(order))  # stable: variants keep their order
    for r in rows:
        if r['kind'] != 'exact': continue
        loop = next((x.get('ms') for x in rows if x['kind'] == 'exact' and x['size'] == r['size'] and x['variant'] == 'loop'), None)
        if 'ms' not in r: out.append(f"{r['size']:5s} {r['variant']:24s} {r.get('error', '')}"); continue
        speed = f"{loop / r['ms']:7.1f}x" if loop else ''
        out.append(f"{r['size']:5s} {r['variant']:24s} {r['ms']:9.1f} {speed:>8s} {r['rel_err']:8.1e}  "
                   + ' '.join(f"{k} {v:.1f}" for k, v in r.get('pieces_ms', {}).items()))
    for r in rows:
        if r['kind'] == 'update':
            out.append(f"{r['size']:5s} update {r['path']:17s} {r['ms']:9.2f} ms  {r['gb_per_s']:6.0f} GB/s  host {r['host_ms']:.2f} ms")
    return '\n'.join(out)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', nargs='+', default=['1b', '60m', '350m', '130m'], help='in this order (the goals first, should time run short)')
    ap.add_argument('--variants', nargs='+', default=VARIANTS, help=f"from {VARIANTS} (any QR+SVD[+streamsK] combination works)")
    ap.add_argument('--pieces', nargs='*', default=PIECES, help='variants also timed piece by piece')
    ap.add_argument('--check', type=int, default=2, help='pairs per group checked against float64')
    ap.add_argument('--budget', type=float, default=180.0, help='seconds for the exact-step variants: one that would overrun is skipped')
    ap.add_argument('--no-update', action='store_true', help='skip the fused-update measurement')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'loro_exact.json'))
    a = ap.parse_args()
    start = time.monotonic()
    ms_of = timer(a.device)
    info = metadata(a.device)
    print(f"{info['gpu']}, torch {info['torch']}, triton {info['triton']}", flush=True)
    rows = []
    for size in a.sizes:
        rows += bench_exact(size, a.variants, a.pieces, a.device, a.check, start + a.budget, ms_of)
    if not a.no_update:
        for size in a.sizes:
            try: rows += bench_update(size, a.device, ms_of)
            except Exception as e:
                rows.append(dict(kind='update', size=size, error=f"{type(e).__name__}: {str(e)[:200]}"))
                print(f"update {size} FAILED {rows[-1]['error']}", flush=True)
            if a.device == 'cuda': torch.cuda.empty_cache()
    info['seconds'] = round(time.monotonic() - start, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(dict(meta=info, rows=rows), indent=1))
    print(f"\nwrote {a.out} after {info['seconds']} s\n")
    print(table(rows))
