"""Activation memory against batch size, the way the paper reports it (FFN activations) and as the GPU sees it (peak).

    python bench/memory.py [--sizes 1b] [--batches 1,32,128] [--seq 256] [--out bench/results/memory.json]

For each size, variant and batch (sequences of 256 random tokens, bf16 weights, no optimizer state), one eager forward and
backward of the loss after a warm-up pass; the model runs eager because autograd's saved tensors, which the paper counts,
are what eager keeps (a compiled block saves whatever its fused graph needs instead). Per row:

* FFN activation memory: the bytes autograd holds for the FFNs between forward and backward. A `saved_tensors_hooks` pack
  hook sees every tensor saved for backward while a forward pre/post hook pair says that an FFN module is running; each
  storage counts once, parameters not at all: the FFN's input, its hidden activations, its bottlenecks. Tensors computed
  from weights alone (the concatenated gate|up weight of the fused GEMM, a per-call copy) are reported apart as
  `ffn_other_saved_bytes`.
* activations: everything the forward leaves allocated for the backward, all modules (CUDA only; includes the LM head's
  gradients, which the fused cross-entropy computes in the forward);
* peak: `torch.cuda.max_memory_allocated` over forward + backward, weights and gradients included (CUDA only);
* weights: the model's parameter bytes.

Variants: full (SwiGLU at the padded width), loro, loro-relu2, loro-relu2-recompute (each FFN in `torch.utils.checkpoint`,
non-reentrant: only its input is saved, the whole FFN runs again in the backward), elas (2:4 mask on, the sparse path saving
y1), elas-recompute (`ElasFFN.recompute=True`: y1 recomputed in the backward). Where ELAS cannot run the sparse tensor cores
(CPU) it runs the dense 2:4 simulation; the row's `ffn_path` says which ran. GB are 10⁹ bytes, as in bench/train.py.
"""
import argparse, gc, json, os

import torch
from torch.utils.checkpoint import checkpoint
from common import meta

from elas_nb.ffn import ElasFFN
from elas_nb.config import model_config
from elas_nb.convert import build_model
from elas_nb.model import Llama, weight_bytes
from elas_nb.sparse24 import set_sparse24

VARIANTS = ('full', 'loro', 'loro-relu2', 'loro-relu2-recompute', 'elas', 'elas-recompute')
GB = 1e9
# FFN activation memory of the 1B model, LORO → ELAS (GB), seq 256: the paper's figures as a secondary summary reports them.
PAPER_FFN_GB = {'loro': {1: 1.42, 32: 45.43, 128: 181.71}, 'elas': {1: 0.80, 32: 25.44, 128: 101.76}}


def build(size:str, variant:str, device:torch.device) -> Llama:
    "The bf16 model of `variant` on `device`; recompute variants checkpoint each FFN (loro-relu2) or recompute y1 (elas)."
    base = variant.removesuffix('-recompute')
    with device: model = build_model(model_config(size, base)).to(torch.bfloat16)
    if base == 'elas':
        set_sparse24(model, True)
        for m in model.modules():
            if isinstance(m, ElasFFN): m.recompute = variant.endswith('-recompute')
    elif variant.endswith('-recompute'):
        for block in model.layers:  # checkpoint the whole FFN: only its input is saved, everything inside runs again
            f = block.ffn.forward
            block.ffn.forward = lambda x, f=f: checkpoint(f, x, use_reentrant=False)
    return model


def ffn_path(model:Llama, tokens:int) -> str|None:
    "Which path ELAS's FFNs take for `tokens` tokens: 'sparse' (2:4 tensor cores) or 'dense-simulation'; None if no ELAS."
    ffns = [m for m in model.modules() if isinstance(m, ElasFFN)]
    if not ffns: return None
    m = ffns[0]
    return 'sparse' if m.sparse_path(m.up.N.new_empty(tokens, m.up.rank)) else 'dense-simulation'


def from_weights(t:torch.Tensor, depth:int=2) -> bool:
    "Whether `t` was computed from parameters alone within `depth` autograd steps (e.g. `torch.cat` of weights)."
    def leaves(fn, d): return fn is None or type(fn).__name__ == 'AccumulateGrad' or (d > 0 and all(leaves(f, d - 1) for f, _ in fn.next_functions))
    return t.grad_fn is not None and leaves(t.grad_fn, depth)


class FFNSaved:
    "Context: bytes of the storages autograd saves inside the FFNs of `model`, each once; weights and their copies apart."
    def __init__(self, model:Llama):
        self.model = model
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.inside, self.act, self.other = 0, {}, {}

    def pack(self, t):
        if self.inside and t.numel():
            s = t.untyped_storage()
            if s.data_ptr() not in self.params: (self.other if from_weights(t) else self.act)[s.data_ptr()] = s.nbytes()
        return t

    def __enter__(self):
        def enter(*_): self.inside += 1
        def leave(*_): self.inside -= 1
        self.handles = [h for b in self.model.layers for h in (b.ffn.register_forward_pre_hook(enter), b.ffn.register_forward_hook(leave))]
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)
        for h in self.handles: h.remove()
        self.act_bytes, self.other_bytes = sum(self.act.values()), sum(self.other.values())
        self.act, self.other = {}, {}  # keep no pointers to freed storages


def measure(model:Llama, variant:str, size:str, batch:int, seq:int) -> dict:
    "One row: FFN activation bytes, all activations and the peak of one forward + backward at `batch` × `seq` tokens."
    dev, cfg = model.embed.weight.device, model.config
    cuda = dev.type == 'cuda'
    idx = torch.randint(1, cfg.vocab_size, (batch, seq + 1), device=dev)
    x, y = idx[:, :-1], idx[:, 1:]
    model(x, y).backward()  # warm-up: kernel compilation, cuSPARSELt's algorithm search
    model.zero_grad(set_to_none=True)
    if cuda: torch.cuda.synchronize(); gc.collect(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    with FFNSaved(model) as saved: loss = model(x, y)
    held = torch.cuda.memory_allocated() - base if cuda else None
    loss.backward()
    peak = torch.cuda.max_memory_allocated() if cuda else None
    model.zero_grad(set_to_none=True)
    del loss
    return dict(size=size, variant=variant, ffn_width=cfg.ffn_width, rank=cfg.rank if cfg.lowrank else None, batch=batch,
                seq_len=seq, tokens=batch * seq, ffn_path=ffn_path(model, batch * seq),
                ffn_saved_gb=saved.act_bytes / GB, ffn_saved_bytes_per_token_layer=saved.act_bytes / (batch * seq * cfg.n_layers),
                ffn_other_saved_bytes=saved.other_bytes, activations_gb=held / GB if cuda else None,
                peak_gb=peak / GB if cuda else None, weights_gb=weight_bytes(model) / GB,
                paper_ffn_gb=PAPER_FFN_GB.get(variant, {}).get(batch) if size == '1b' and seq == 256 else None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', default='1b')
    ap.add_argument('--variants', default=','.join(VARIANTS))
    ap.add_argument('--batches', default='1,32,128')
    ap.add_argument('--seq', type=int, default=256)
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--out', default='bench/results/memory.json')
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    run_meta = meta(mode='eager', dtype='bfloat16', seq_len=a.seq, gb=GB,
                    ffn_activations='storages autograd saves inside the FFN modules between forward and backward, each once, '
                                    'the FFN input included, parameters and tensors computed from weights alone excluded',
                    paper=dict(ffn_activation_gb=PAPER_FFN_GB, model='1b', seq_len=256,
                               source="the paper's figures (LORO → ELAS) as a secondary summary reports them "
                                      "(a secondary summary of the paper); not read from the paper itself"))
    rows = []
    for size in a.sizes.split(','):
        for variant in a.variants.split(','):
            model = build(size, variant, dev)
            for batch in map(int, a.batches.split(',')):
                try: r = measure(model, variant, size, batch, a.seq)
                except torch.cuda.OutOfMemoryError:
                    r = dict(size=size, variant=variant, batch=batch, seq_len=a.seq, error='OOM')
                    model.zero_grad(set_to_none=True)
                rows.append(r); print(json.dumps(r), flush=True)
                os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
                json.dump(dict(meta=run_meta, rows=rows), open(a.out, 'w'), indent=1)  # after every row: a time-out keeps what was measured
                if dev.type == 'cuda': gc.collect(); torch.cuda.empty_cache()
            del model; gc.collect()
            if dev.type == 'cuda': torch.cuda.empty_cache()
    print(f"\n{'size':5} {'variant':21} {'width':>5} {'batch':>5} {'path':7} | {'FFN act GB':>10} {'B/tok/layer':>11} {'paper GB':>8} {'vs loro':>7} | "
          f"{'act GB':>7} {'peak GB':>7} {'weights':>7}")
    fmt = lambda v, f: format(v, f) if v is not None else '-'
    loro = {(r['size'], r['batch']): r['ffn_saved_gb'] for r in rows if r['variant'] == 'loro' and 'error' not in r}
    for r in rows:
        if 'error' in r: print(f"{r['size']:5} {r['variant']:21} {'':>5} {r['batch']:5} {r['error']}"); continue
        ref = loro.get((r['size'], r['batch']))
        print(f"{r['size']:5} {r['variant']:21} {r['ffn_width']:5} {r['batch']:5} {(r['ffn_path'] or '-').removesuffix('-simulation'):7} | "
              f"{r['ffn_saved_gb']:10.3f} {r['ffn_saved_bytes_per_token_layer']:11.0f} {fmt(r['paper_ffn_gb'], '8.2f'):>8} {fmt(ref and r['ffn_saved_gb'] / ref, '7.2f'):>7} | "
              f"{fmt(r['activations_gb'], '7.2f'):>7} {fmt(r['peak_gb'], '7.2f'):>7} {r['weights_gb']:7.2f}")
    print("paper: the paper's FFN activation memory (secondary summary), LORO → ELAS at 1B; its ratio is 0.56 at every batch")


if __name__ == '__main__': main()
