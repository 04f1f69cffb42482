"""Where the training step's GPU time goes: one micro-batch forward + backward as `train()` runs it (`prepare_model`,
`accumulate_gradients`), per size × variant × compile mode, timed and profiled. Writes bench/results/profile_step.json:
per row the wall ms per micro-batch, the GPU's busy ms (kernel time summed) and its share of the wall, and GPU ms per kernel
category (dense GEMM, 2:4 GEMM, our Triton kernels, inductor's fused kernels, attention, copies, the rest); the top kernels
of each profiled row go to the log.

    python bench/profile_step.py --sizes 1b,60m --variants elas,loro-relu2 --modes default,graphed --profile-modes default,graphed
"""
import argparse, gc, json, os, re, time
from collections import defaultdict
import torch
from torch.profiler import ProfilerActivity, profile
from common import meta

from elas_nb.config import model_config, recipe
from elas_nb.convert import build_model
from elas_nb.sparse24 import set_sparse24
from elas_nb.train import GraphedMicroStep, accumulate_gradients, train_dtype

CATEGORIES = (('2:4 gemm', r'sparse|cusparselt|sp_gemm'), ('prune (ours)', r'_relu2_prune_compress|_decompress24'),
              ('prune grad (ours)', r'_relu2_prune_grad'), ('attention', r'flash|fmha|attention'),
              ('dense gemm', r'gemm|nvjet|cutlass|xmma|sm90_|ampere_|_mm_'), ('inductor fused', r'^triton_'),
              ('copies', r'copy|memcpy|memset|fill|cat'), ('other', r''))


def category(kernel:str) -> str: return next(c for c, pat in CATEGORIES if re.search(pat, kernel, re.I))


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def random_batches(micro_batch:int, seq_len:int, vocab:int=32000):
    g = torch.Generator().manual_seed(0)
    while True: yield torch.randint(1, vocab, (micro_batch, seq_len + 1), generator=g)


def build(size:str, variant:str, mode:str, dev:torch.device):
    rec = recipe(size, variant, device=str(dev))
    cfg = model_config(size, variant, vocab_size=32000, max_seq_len=rec.seq_len)
    torch.manual_seed(0)
    model = build_model(cfg).to(dev, train_dtype(dev))
    set_sparse24(model, True)  # ELAS after its dense warm-up
    if mode != 'eager':
        for block in model.layers: block.compile(dynamic=False, mode=mode if mode == 'reduce-overhead' else None)
    return rec, model


def step(model, batches, dev, graphed=None):
    loss = accumulate_gradients(model, batches, 1, 0, dev, graphed=graphed)
    for p in model.parameters():
        if graphed: p.grad.zero_()  # the graph writes into these .grad tensors
        else: p.grad = None
    return loss


def measure(size:str, variant:str, mode:str, n:int, profiled:bool, dev:torch.device) -> dict:
    torch._dynamo.reset(); gc.collect()
    rec, model = build(size, variant, mode, dev)
    batches = random_batches(rec.micro_batch, rec.seq_len)
    graphed = GraphedMicroStep(model) if mode == 'graphed' else None  # train()'s default on one GPU: compiled blocks, CUDA graph
    t = time.perf_counter()
    for _ in range(3): step(model, batches, dev, graphed)
    sync(dev); warm_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(n): step(model, batches, dev, graphed)
    sync(dev); wall_ms = (time.perf_counter() - t) / n * 1e3
    row = dict(size=size, variant=variant, mode=mode, micro_batch=rec.micro_batch, seq_len=rec.seq_len, wall_ms=wall_ms,
               tokens_per_s=rec.micro_batch * rec.seq_len / wall_ms * 1e3, warmup_s=warm_s)
    if graphed is not None:  # the graph alone, replayed back to back: how long its launch holds the CPU, and its GPU time
        sync(dev); t = time.perf_counter(); cpu = 0.0
        for _ in range(n):
            c = time.perf_counter(); graphed.graph.replay(); cpu += time.perf_counter() - c
        sync(dev)
        row.update(replay_ms=(time.perf_counter() - t) / n * 1e3, replay_cpu_ms=cpu / n * 1e3)
    if profiled:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(2): step(model, batches, dev, graphed)
            sync(dev)
        kernels = defaultdict(float)
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA: kernels[e.name] += e.device_time / 2e3  # ms per micro-batch
        cats = defaultdict(float)
        for k, ms in kernels.items(): cats[category(k)] += ms
        row.update(gpu_busy_ms=sum(kernels.values()), busy_share=sum(kernels.values()) / wall_ms,
                   categories={c: round(ms, 3) for c, ms in sorted(cats.items(), key=lambda x: -x[1])})
        top = sorted(kernels.items(), key=lambda x: -x[1])[:25]
        row['top_kernels'] = [(k[:110], round(ms, 3)) for k, ms in top]
        cpu = prof.key_averages()
        syncs = [(e.key, e.count) for e in cpu if re.search(r'Synchronize|cudaMalloc|cudaFree|cudaHostAlloc', e.key)]
        row['host_sync_calls'] = syncs
        row['top_cpu_ms'] = [(e.key[:80], e.count // 2, round(e.self_cpu_time_total / 2e3, 3))  # per micro-batch
                             for e in sorted(cpu, key=lambda e: -e.self_cpu_time_total)[:12]]
    del model; gc.collect()
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', default='1b,60m')
    ap.add_argument('--variants', default='elas,loro-relu2')
    ap.add_argument('--modes', default='default,graphed', help='eager, default (compiled), reduce-overhead, graphed (compiled + GraphedMicroStep)')
    ap.add_argument('--profile-modes', default='default', help='modes whose rows are also profiled')
    ap.add_argument('--n', type=int, default=8)
    ap.add_argument('--device', default='cuda', help='cpu: a smoke test of the script')
    ap.add_argument('--out', default='bench/results/profile_step.json')
    a = ap.parse_args()
    rows = []
    for size in a.sizes.split(','):
        for mode in a.modes.split(','):
            for variant in a.variants.split(','):
                try: row = measure(size, variant, mode, a.n, mode in a.profile_modes.split(','), torch.device(a.device))
                except Exception as e: row = dict(size=size, variant=variant, mode=mode, error=f'{type(e).__name__}: {e}'[:500])
                rows.append(row); print(json.dumps(row), flush=True)
                json.dump(dict(meta=meta(), rows=rows), open(a.out, 'w'), indent=1)
    print(f"\n{'size':5} {'variant':11} {'mode':16} {'ms/mb':>8} {'tok/s':>10} {'busy':>5}  categories (GPU ms per micro-batch)")
    for r in rows:
        if 'error' in r: print(f"{r['size']:5} {r['variant']:11} {r['mode']:16} {r['error'][:80]}"); continue
        cats = ', '.join(f'{c} {ms:.1f}' for c, ms in r.get('categories', {}).items())
        print(f"{r['size']:5} {r['variant']:11} {r['mode']:16} {r['wall_ms']:8.2f} {r['tokens_per_s']:10.0f} "
              f"{r.get('busy_share', float('nan')):5.2f}  {cats}")


if __name__ == '__main__': main()
