"""Inference speed: prefill tokens/s (eager, compiled, graphed) and greedy decode tokens/s with a minimal KV cache (eager,
graphed), 1B model.

    python bench/inference.py [--size 1b] [--variants full,loro-relu2,elas] [--out bench/results/inference.json]

Random bf16 weights under `torch.no_grad`, random prompts; ELAS has its 2:4 mask on. Times are medians of CUDA-event
timings after a warm-up (wall-clock on CPU).

* prefill: one batch of 32 × 256 = 8192 tokens through the decoder, eager, with each block compiled
  (`prepare_model(compile=True)`), and compiled with the whole forward captured as one CUDA graph (graphed: no host work per
  call, so cuSPARSELt's per-call planning on the CPU disappears, as in training); the LM head computes the logits of the last
  position only (the next-token logits a generation needs), not all 8192 × 32000.
* decode: greedy generation of 128 tokens after a 256-token prompt, batch 1 and 32; tokens/s = batch × 128 / the time of
  the 128 one-token steps (the prompt's prefill is not timed). The library's model has no KV cache, so this script adds a
  minimal one: each block's keys and values go to a preallocated (batch, heads, 384, head) buffer and every step runs the
  model's own modules (fused q|k|v linears, rotary, FFN) on the new token only. Eager: at batch 1 a step is mostly kernel
  launches. Graphed: every step has one shape (the new token's position is a tensor on the GPU, attention reads the whole
  cache with later positions masked), captured once per generation and replayed. The rotary table has 256 + 128 positions.

ELAS's sparse 2:4 GEMM takes token counts in multiples of 16; `ElasFFN` pads a batch-1 step's one row with 15 zero rows. Each
row records the path (`ElasFFN.sparse_path`).
"""
import argparse, gc, json, os, statistics, time

import torch
import torch.nn.functional as F
from common import graphed, meta

from elas_nb.ffn import ElasFFN, fused_linears
from elas_nb.config import model_config
from elas_nb.convert import build_model
from elas_nb.model import Llama, apply_rope
from elas_nb.sparse24 import set_sparse24
from elas_nb.train import prepare_model


def build(size:str, variant:str, device:torch.device, max_seq_len:int, dtype=torch.bfloat16) -> Llama:
    "The model of `variant` in `dtype` on `device`, ELAS with its mask on."
    with device: model = build_model(model_config(size, variant, max_seq_len=max_seq_len)).to(dtype).eval()
    set_sparse24(model, True)
    return model


def ffn_path(model:Llama, tokens:int) -> str|None:
    "The path ELAS's FFNs take for `tokens` tokens: 'sparse' (2:4 tensor cores) or 'dense-simulation'; None if no ELAS."
    m = next((m for m in model.modules() if isinstance(m, ElasFFN)), None)
    if m is None: return None
    return 'sparse' if m.sparse_path(m.pad_rows(m.up.N.new_empty(tokens, m.up.rank))) else 'dense-simulation'


def last_logits(model:Llama, idx:torch.Tensor) -> torch.Tensor:
    "Prefill: logits (B, V) of the last position of `idx` (B, T), every block run on the whole sequence."
    T = idx.shape[1]
    x = model.embed(idx)
    for block in model.layers: x = block(x, model.rope_cos[:T], model.rope_sin[:T])
    return model.head(model.norm(x[:, -1]))


def new_cache(model:Llama, batch:int, length:int) -> list:
    """Zeroed (keys, values) buffers (B, H, length, h) for every block (zeros: a masked position still enters the product with
    weight 0, and 0 × a NaN left in uninitialised memory would be NaN)."""
    c, w = model.config, model.embed.weight
    return [tuple(w.new_zeros(batch, c.n_heads, length, c.head_dim) for _ in range(2)) for _ in model.layers]


def cached_attention(attn, x:torch.Tensor, cos, sin, keys:torch.Tensor, values:torch.Tensor, pos:int|torch.Tensor) -> torch.Tensor:
    """The block's attention on the new tokens x (B, T, d) at positions pos…pos+T-1, their keys and values stored in the cache.
    `pos` is an int, or a 0-d tensor for one new token: then the whole cache is read with the later positions masked, so that no
    shape depends on the position and one CUDA graph serves every step."""
    B, T, d = x.shape
    q, k, v = (t.view(B, T, attn.n_heads, -1).transpose(1, 2) for t in fused_linears((attn.q, attn.k, attn.v), x))
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if isinstance(pos, int):
        keys[:, :, pos:pos + T], values[:, :, pos:pos + T] = k, v
        y = F.scaled_dot_product_attention(q, keys[:, :, :pos + T], values[:, :, :pos + T],
                                           is_causal=pos == 0)  # the prompt: causal; one new token sees every cached one
    else:
        keys.index_copy_(2, pos.view(1), k); values.index_copy_(2, pos.view(1), v)
        visible = (torch.arange(keys.shape[2], device=pos.device) <= pos).view(1, -1)  # (new token, cached position)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
    return attn.o(y.transpose(1, 2).reshape(B, T, d))


def cached_step(model:Llama, idx:torch.Tensor, cache:list, pos:int|torch.Tensor) -> torch.Tensor:
    "Logits (B, V) after the new tokens idx (B, T) at positions pos…, with `cache` holding the earlier positions (see `cached_attention`)."
    T = idx.shape[1]
    if isinstance(pos, int): cos, sin = model.rope_cos[pos:pos + T], model.rope_sin[pos:pos + T]
    else: cos, sin = (t.index_select(0, pos.view(1)) for t in (model.rope_cos, model.rope_sin))
    x = model.embed(idx)
    for block, (keys, values) in zip(model.layers, cache):
        x = x + cached_attention(block.attn, block.attn_norm(x), cos, sin, keys, values, pos)
        x = x + block.ffn(block.ffn_norm(x))
    return model.head(model.norm(x[:, -1]))


def generate(model:Llama, prompt:torch.Tensor, new_tokens:int, clock=None) -> torch.Tensor:
    "Greedy generation: the prompt's prefill, then `new_tokens` one-token steps; returns the new tokens (B, new_tokens)."
    B, T = prompt.shape
    cache = new_cache(model, B, T + new_tokens)
    tok = cached_step(model, prompt, cache, 0).argmax(-1, keepdim=True)
    out = []
    if clock: clock.start()
    for i in range(new_tokens):
        out.append(tok)
        tok = cached_step(model, tok, cache, T + i).argmax(-1, keepdim=True)
    if clock: clock.stop()
    return torch.cat(out, 1)


def generate_static(model:Llama, prompt:torch.Tensor, new_tokens:int, clock=None, graph:bool=True) -> torch.Tensor:
    "`generate` with every one-token step of one shape (`cached_step` at a tensor position), replayed as one CUDA graph if `graph`."
    B, T = prompt.shape
    cache = new_cache(model, B, T + new_tokens)
    first = cached_step(model, prompt, cache, 0).argmax(-1, keepdim=True)
    tok, pos, out = first.clone(), torch.tensor(T, device=prompt.device), first.new_zeros(B, new_tokens)
    def step():
        out.index_copy_(1, pos.view(1) - T, tok)
        tok.copy_(cached_step(model, tok, cache, pos).argmax(-1, keepdim=True)); pos.add_(1)
    if graph: step = graphed(step, reset=lambda: (tok.copy_(first), pos.fill_(T)), warmups=2)
    if clock: clock.start()
    for _ in range(new_tokens): step()
    if clock: clock.stop()
    return out


class Clock:
    "Milliseconds between start() and stop(): CUDA events on a GPU, wall-clock on a CPU."
    def __init__(self, device:torch.device): self.cuda = device.type == 'cuda'
    def start(self):
        if self.cuda:  # synchronize first: the host gets no head start from work queued before
            torch.cuda.synchronize()
            self.a, self.b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True); self.a.record()
        else: self.t = time.perf_counter()
    def stop(self):
        if self.cuda: self.b.record()
        else: self.t = time.perf_counter() - self.t
    def ms(self) -> float:
        if self.cuda: torch.cuda.synchronize(); return self.a.elapsed_time(self.b)
        return self.t * 1e3


def median_ms(fn, device, warmup:int, reps:int) -> float:
    "Median time of `fn()` over `reps` calls after `warmup` calls."
    for _ in range(warmup): fn()
    times = []
    for _ in range(reps):
        clock = Clock(device); clock.start(); fn(); clock.stop(); times.append(clock.ms())
    return statistics.median(times)


def prefill_row(model, size, variant, mode, batch, seq, reps) -> dict:
    dev, V = model.embed.weight.device, model.config.vocab_size
    idx = torch.randint(1, V, (batch, seq), device=dev)
    t = time.perf_counter()
    run = lambda: last_logits(model, idx)
    if mode == 'graphed': run = graphed(run, warmups=2)
    else: run()  # the first call: compiles in compiled mode
    if dev.type == 'cuda': torch.cuda.synchronize()
    first_s = time.perf_counter() - t
    ms = median_ms(run, dev, warmup=2, reps=reps)
    return dict(phase='prefill', size=size, variant=variant, ffn_width=model.config.ffn_width, mode=mode, batch=batch,
                seq_len=seq, tokens=batch * seq, head='last position only', ms=ms, tokens_per_s=batch * seq / ms * 1e3,
                first_call_s=first_s, ffn_path=ffn_path(model, batch * seq))


def decode_row(model, size, variant, batch, prompt_len, new_tokens, reps, mode='eager') -> dict:
    dev, V = model.embed.weight.device, model.config.vocab_size
    prompt = torch.randint(1, V, (batch, prompt_len), device=dev)
    gen = generate if mode == 'eager' else generate_static  # graphed: each generation captures its step once, then replays it
    gen(model, prompt, new_tokens)  # warm-up (cuSPARSELt's algorithm search for each new shape)
    times = []
    for _ in range(reps):
        clock = Clock(dev); gen(model, prompt, new_tokens, clock); times.append(clock.ms())
    ms = statistics.median(times)
    return dict(phase='decode', size=size, variant=variant, ffn_width=model.config.ffn_width, mode=mode, batch=batch,
                prompt=prompt_len, new_tokens=new_tokens, kv_cache=True, ms=ms, ms_per_step=ms / new_tokens,
                tokens_per_s=batch * new_tokens / ms * 1e3, ffn_path=ffn_path(model, batch),
                prefill_ffn_path=ffn_path(model, batch * prompt_len))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', default='1b')
    ap.add_argument('--variants', default='full,loro-relu2,elas')
    ap.add_argument('--modes', default='eager,compiled,graphed', help='prefill modes (graphed: compiled blocks, the forward as one CUDA graph)')
    ap.add_argument('--decode-modes', default='eager,graphed', help='decode modes (graphed: each one-token step replayed as one CUDA graph)')
    ap.add_argument('--prefill-batch', type=int, default=32)
    ap.add_argument('--seq', type=int, default=256, help='prefill length and decode prompt length')
    ap.add_argument('--decode-batches', default='1,32')
    ap.add_argument('--new-tokens', type=int, default=128)
    ap.add_argument('--prefill-reps', type=int, default=10, help='timed prefills (after two warm-up calls)')
    ap.add_argument('--decode-reps', type=int, default=3, help='timed generations (after one warm-up generation)')
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--out', default='bench/results/inference.json')
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    if dev.type != 'cuda' and 'graphed' in a.modes.split(',') + a.decode_modes.split(','): ap.error('graphed modes need a CUDA device')
    run_meta = meta(dtype='bfloat16', prefill_head='logits of the last position only', decode='greedy, minimal KV cache, eager or graphed',
                    weights='random', elas_mask='on')
    rows = []
    def save(r):
        rows.append(r); print(json.dumps(r), flush=True)
        os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
        json.dump(dict(meta=run_meta, rows=rows), open(a.out, 'w'), indent=1)  # after every row: a time-out keeps what was measured
    for variant in a.variants.split(','):
        model = build(a.size, variant, dev, a.seq + a.new_tokens)
        with torch.no_grad():  # eager rows first, then the blocks are compiled in place for the compiled prefill
            modes = a.modes.split(',')
            if 'eager' in modes: save(prefill_row(model, a.size, variant, 'eager', a.prefill_batch, a.seq, a.prefill_reps))
            for mode in a.decode_modes.split(','):
                for batch in map(int, a.decode_batches.split(',')):
                    save(decode_row(model, a.size, variant, batch, a.seq, a.new_tokens, a.decode_reps, mode))
            if 'compiled' in modes or 'graphed' in modes:
                torch._dynamo.reset(); prepare_model(model, compile=True)
                for mode in ('compiled', 'graphed'):
                    if mode in modes: save(prefill_row(model, a.size, variant, mode, a.prefill_batch, a.seq, a.prefill_reps))
        del model; gc.collect()
        if dev.type == 'cuda': torch.cuda.empty_cache()
    print(f"\n{'phase':7} {'variant':10} {'width':>5} {'mode':8} {'batch':>5} {'tokens/s':>10} {'ms':>8} {'FFN path':16}")
    for r in rows:
        print(f"{r['phase']:7} {r['variant']:10} {r['ffn_width']:5} {r['mode']:8} {r['batch']:5} {r['tokens_per_s']:10.0f} "
              f"{r['ms']:8.2f} {r['ffn_path'] or '-':16}")
    print(f"prefill: one batch of {a.prefill_batch} × {a.seq}, logits of the last position only; "
          f"decode: greedy, {a.new_tokens} one-token steps after a {a.seq}-token prompt, with a KV cache")


if __name__ == '__main__': main()
