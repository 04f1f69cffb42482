"""Training-step throughput of every variant on one GPU: tokens/s, MFU and peak memory, eager and with the
forward+backward captured in a CUDA graph, ELAS with the sparse tensor-core path and with the paper's dense
simulation (mask, then a dense GEMM) side by side. Writes bench/results/train_step.json and prints a table.

    python bench/train_step.py --sizes 60m,350m,1b --micro-batch 64
"""
import argparse, json, os, time
import torch
from common import PEAK_TFLOPS, meta
from elas_nb.lowrank import model_config, train_flops_per_token
from elas_nb.sparse24 import set_sparse24
from elas_nb.sparse_gemm import sparse24_available
from elas_nb.ffn import ElasFFN
from elas_nb.model import Llama
from elas_nb.loro import LOROAdamW, adamw



def build(size, variant, padded, sparse_kernel):
    "A bf16 model on the GPU and its optimizer; for elas the mask is on (the post-warm-up regime)."
    name = 'elas' if variant.startswith('elas') else variant
    cfg = model_config(size, name, padded=padded)
    model = Llama(cfg).cuda().to(torch.bfloat16)
    if name == 'elas': set_sparse24(model, True)
    ElasFFN.use_kernel = (lambda self, h1: _use_kernel(self, h1)) if sparse_kernel else (lambda self, h1: False)
    opt = adamw(model, lr=1e-3) if name == 'full' else LOROAdamW(model, lr=1e-3, d_model=cfg.d_model, exact_every=10**9)
    return cfg, model, opt

_use_kernel = ElasFFN.use_kernel


def step_fn(model, opt, idx, tgt, graph):
    "A callable running one training step (forward, backward, optimizer), the first two in a CUDA graph if `graph`."
    def fwd_bwd():
        _, loss = model(idx, tgt)
        loss.backward()
        return loss
    if not graph:
        def step():
            opt.zero_grad(set_to_none=True); fwd_bwd(); opt.step()
        return step
    for p in model.parameters(): p.grad = torch.zeros_like(p)
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): fwd_bwd()  # warm up kernels, autotuning and cuSPARSELt plans outside the capture
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    for p in model.parameters(): p.grad.zero_()
    with torch.cuda.graph(g): fwd_bwd()
    def step():
        g.replay(); opt.step()
        for p in model.parameters(): p.grad.zero_()
    return step


def measure(size, variant, micro_batch, seq, steps, graph, padded=False):
    "One row: tokens/s, MFU and peak memory of `variant` at `size`."
    torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    cfg, model, opt = build(size, variant, padded, sparse_kernel=(variant == 'elas'))
    idx = torch.randint(cfg.vocab_size, (micro_batch, seq), device='cuda')
    tgt = torch.randint(cfg.vocab_size, (micro_batch, seq), device='cuda')
    step = step_fn(model, opt, idx, tgt, graph)
    for _ in range(3): step()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(steps): step()
    torch.cuda.synchronize(); dt = (time.perf_counter() - t0) / steps
    tokens = micro_batch * seq
    row = dict(size=size, variant=variant, ffn_width=cfg.ffn_width, micro_batch=micro_batch, seq=seq,
               graph=graph, step_ms=dt * 1e3, tokens_per_s=tokens / dt,
               mfu=train_flops_per_token(cfg, seq) * tokens / dt / (PEAK_TFLOPS * 1e12),
               peak_gb=torch.cuda.max_memory_allocated() / 1e9)
    del model, opt, step
    return row


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', default='60m,130m,350m,1b')
    ap.add_argument('--variants', default='full,loro,loro-relu2,elas-sim,elas')
    ap.add_argument('--micro-batch', type=int, default=64)
    ap.add_argument('--seq', type=int, default=256)
    ap.add_argument('--steps', type=int, default=8)
    ap.add_argument('--modes', default='eager,graph', help='eager, graph or both')
    ap.add_argument('--out', default='bench/results/train_step.json')
    a = ap.parse_args()
    print(f"sparse tensor cores usable: {sparse24_available()}")
    rows, run_meta = [], meta(peak_tflops=PEAK_TFLOPS)
    for size in a.sizes.split(','):
        runs = [(v, False) for v in a.variants.split(',')] + ([('full', True)] if size == '1b' else [])
        for variant, padded in runs:
            for mode in a.modes.split(','):
                try: r = measure(size, variant, a.micro_batch, a.seq, a.steps, mode == 'graph', padded)
                except torch.cuda.OutOfMemoryError: r = dict(size=size, variant=variant, graph=mode == 'graph', error='OOM')
                if padded: r['variant'] = 'full (padded 5504)'
                rows.append(r); print(r, flush=True)
                os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
                json.dump(dict(meta=run_meta, rows=rows), open(a.out, 'w'), indent=1)  # after every row: a time-out keeps what was measured
    print(f"\n{'size':5} {'variant':20} {'mode':5} {'tok/s':>10} {'MFU':>5} {'ms':>7} {'GB':>6}")
    for r in rows:
        if 'error' in r: print(f"{r['size']:5} {r['variant']:20} {'graph' if r['graph'] else 'eager':5} {r['error']}"); continue
        print(f"{r['size']:5} {r['variant']:20} {'graph' if r['graph'] else 'eager':5} {r['tokens_per_s']:10.0f} {r['mfu']:5.2f} {r['step_ms']:7.2f} {r['peak_gb']:6.1f}")
