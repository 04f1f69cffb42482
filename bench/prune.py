"""Benchmark the fused ReLU² + 2:4 prune + compress kernel on a GPU; writes bench/results/prune.json and prints a table.

For every (T, F) it times, with `triton.testing.do_bench` medians: the kernel, a device-to-device copy of y1 (the bandwidth
ceiling), `torch._cslt_compress` of the pruned tensor, and ReLU² + a topk-based 2:4 mask in plain PyTorch. It also records the
buffer shapes `torch._cslt_compress` returns for odd shapes (the rule `compressed_shape` encodes), a small sweep of tile
configurations, and the GEMM-fused kernel against cuBLAS GEMM + the kernel.

    python bench/prune.py [--out bench/results/prune.json]
"""
import argparse, json, os
import torch
from triton.testing import do_bench
from common import meta
from elas_nb.kernels import (relu2_prune_compress, lowrank_up_relu2_prune_compress, prune_bytes, compressed_shape,
                             decompress24)

SHAPES = [(T, F) for T in (16384, 65536) for F in (2112, 3072, 4160, 8192)]
SWEEP_SHAPES = [(65536, 8192), (16384, 4160)]
SWEEP = [dict(block_m=128, block_k=64, num_warps=8), dict(block_m=64, block_k=64, num_warps=4),
         dict(block_m=128, block_k=128, num_warps=16), dict(block_m=256, block_k=64, num_warps=16),
         dict(block_m=128, block_k=32, num_warps=4), dict(block_m=256, block_k=32, num_warps=8)]
FUSED_SHAPES = [(65536, 4160, 256), (65536, 8192, 512)]
FUSED_SWEEP = [dict(block_m=128, block_k=128, block_r=64, num_warps=8, num_stages=3),
               dict(block_m=128, block_k=256, block_r=64, num_warps=8, num_stages=3),
               dict(block_m=128, block_k=128, block_r=64, num_warps=8, num_stages=4)]
SHAPE_PROBES = ([(M, K) for M in (64, 96, 100, 128, 200, 1000) for K in (32, 40, 48, 64, 72, 96, 136, 1376, 2112)]
                + [(M, K) for M in (16, 48, 80, 160, 2064) for K in (16, 80, 112, 144, 2080)])


def ms(fn, **kw):
    "Median time of fn in ms."
    return do_bench(fn, return_mode='median', **kw)


def torch_prune(y1):
    "ReLU², then a topk-based 2:4 mask and prune in plain PyTorch: the unfused baseline."
    y = torch.relu(y1).square()
    g = y.view(-1, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(2, dim=-1).indices, True)
    return (g * keep).view_as(y1)


def shape_rows():
    "What `torch._cslt_compress` returns for odd shapes, next to `compressed_shape`."
    rows = []
    for dtype in (torch.bfloat16, torch.float16):
        for M, K in SHAPE_PROBES:
            x = torch.zeros(M, K, device='cuda', dtype=dtype)
            x[:, ::2] = 1  # 2:4
            try: got = list(torch._cslt_compress(x).shape)
            except RuntimeError as e: got = str(e).splitlines()[0][:120]
            rows.append(dict(M=M, K=K, dtype=str(dtype), cslt=got, ours=list(compressed_shape(M, K, dtype))))
    return rows


def bench_row(T, F):
    y1 = torch.randn(T, F, device='cuda', dtype=torch.bfloat16)
    res = relu2_prune_compress(y1, dense=True)
    y2 = res.dense
    kernel = ms(lambda: relu2_prune_compress(y1))
    dense_only = ms(lambda: relu2_prune_compress(y1, dense=True))
    dense_counts = ms(lambda: relu2_prune_compress(y1, dense=True, counts=True))
    dst = torch.empty_like(y1)
    copy = ms(lambda: dst.copy_(y1))
    cslt = ms(lambda: torch._cslt_compress(y2))
    tmask = ms(lambda: torch_prune(y1), warmup=1, rep=1)
    nbytes = prune_bytes(T, F)
    copy_bw, kernel_bw = 2 * y1.numel() * 2 / copy * 1e-9, nbytes / kernel * 1e-9  # TB/s
    return dict(T=T, F=F, kernel_ms=kernel, copy_ms=copy, bandwidth_fraction=kernel_bw / copy_bw,
                cslt_compress_ms=cslt, speedup_vs_cslt_compress=cslt / kernel, torch_mask_ms=tmask,
                kernel_bytes=nbytes, kernel_TBps=kernel_bw, copy_TBps=copy_bw, dense_ms=dense_only, dense_counts_ms=dense_counts)


def sweep_rows():
    rows = []
    for T, F in SWEEP_SHAPES:
        y1 = torch.randn(T, F, device='cuda', dtype=torch.bfloat16)
        ref = relu2_prune_compress(y1).compressed
        for cfg in SWEEP:
            same = torch.equal(relu2_prune_compress(y1, **cfg).compressed.view(torch.int16), ref.view(torch.int16))
            rows.append(dict(T=T, F=F, **cfg, same_buffer_as_default=same, kernel_ms=ms(lambda: relu2_prune_compress(y1, **cfg)),
                             dense_counts_ms=ms(lambda: relu2_prune_compress(y1, dense=True, counts=True, **cfg))))
    return rows


def fused_rows():
    rows = []
    for T, F, r in FUSED_SHAPES:
        h1 = torch.randn(T, r, device='cuda', dtype=torch.bfloat16)
        M1 = torch.randn(F, r, device='cuda', dtype=torch.bfloat16) / r ** 0.5
        two_step = relu2_prune_compress(h1 @ M1.T).compressed
        fused = lowrank_up_relu2_prune_compress(h1, M1).compressed
        a, b = decompress24(fused, T, F).float(), decompress24(two_step, T, F).float()  # y1 in fp32 vs rounded to bf16 first
        row = dict(T=T, F=F, r=r, gemm_ms=ms(lambda: h1 @ M1.T), two_step_ms=ms(lambda: relu2_prune_compress(h1 @ M1.T)),
                   rel_diff_to_two_step=((a - b).norm() / b.norm()).item())
        for i, cfg in enumerate(FUSED_SWEEP):
            try: row[f'fused_ms_{i}'] = ms(lambda: lowrank_up_relu2_prune_compress(h1, M1, **cfg))
            except Exception as e: row[f'fused_ms_{i}'] = f'{type(e).__name__}: {str(e)[:100]}'
        row['gemm_TFLOPs'] = 2 * T * F * r / row['gemm_ms'] * 1e-9
        rows.append(row)
    return rows


def main(out):
    result = dict(meta=meta(note='bf16 y1 ~ N(0, 1); kernel_ms: compressed buffer only; bandwidth_fraction = (kernel bytes / kernel_ms) '
                     '/ (copy bytes / copy_ms), copy bytes = read + write of y1; torch_mask_ms: relu2 + topk mask + prune'), rows=[], cslt_shapes=shape_rows(), sweep=[], fused=[],
                  sweep_configs=SWEEP, fused_configs=FUSED_SWEEP)
    for T, F in SHAPES:
        result['rows'].append(bench_row(T, F))
        torch.cuda.empty_cache()
    result['sweep'] = sweep_rows()
    result['fused'] = fused_rows()
    os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
    with open(out, 'w') as f: json.dump(result, f, indent=1)
    print(f"{'T':>6} {'F':>5} {'kernel':>8} {'copy':>8} {'bw frac':>7} {'cslt':>8} {'speedup':>7} {'torch':>9} {'+dense+counts':>13}")
    for r in result['rows']:
        print(f"{r['T']:6d} {r['F']:5d} {r['kernel_ms']:8.4f} {r['copy_ms']:8.4f} {r['bandwidth_fraction']:7.2f} "
              f"{r['cslt_compress_ms']:8.4f} {r['speedup_vs_cslt_compress']:7.1f} {r['torch_mask_ms']:9.3f} {r['dense_counts_ms']:13.4f}")


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'prune.json'))
    main(p.parse_args().out)
