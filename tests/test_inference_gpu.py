"""GPU tests of the inference paths (skipped without CUDA): ElasFFN's padding of a token count that is not a multiple of 16 on
the sparse path, and bench/inference.py's graphed prefill and decode against the same steps run eagerly."""
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

from elas_nb.ffn import ElasFFN
from elas_nb.sparse24 import set_sparse24

sys.path.append(str(Path(__file__).resolve().parent.parent/'bench'))  # appended: bench/ must not shadow anything
import inference  # noqa: E402  (bench/inference.py)


def rel_err(got, want): return ((got.double() - want.double()).norm() / want.double().norm()).item()


@pytest.mark.parametrize('tokens', [1, 15, 33])
def test_elas_ffn_pads_to_16_rows(tokens):
    "A token count that is not a multiple of 16 runs on the sparse path (padded) and matches the dense simulation, forward and backward."
    torch.manual_seed(0)
    sparse, dense = (ElasFFN(512, 2112, 128, kernel=k).cuda().bfloat16() for k in ('sparse', 'dense'))
    dense.load_state_dict(sparse.state_dict()); set_sparse24(sparse, True); set_sparse24(dense, True)
    x = torch.randn(tokens, 512, device='cuda', dtype=torch.bfloat16)
    outs = []
    for ffn in (sparse, dense):
        xi = x.clone().requires_grad_(); out = ffn(xi); out.float().square().sum().backward()
        outs.append([out.detach(), xi.grad] + [p.grad for p in ffn.parameters()])
    assert sparse.sparse_path(sparse.pad_rows(x @ sparse.up.N))  # padded to 16 rows, the sparse tensor cores take it
    for a, b in zip(*outs): assert rel_err(a, b) < 2e-2


@pytest.mark.parametrize('variant', ['loro-relu2', 'elas'])
def test_graphed_decode_replays_the_eager_steps(variant):
    "The decoding step captured once as a CUDA graph gives the tokens of the same step run eagerly, at batch 1 (ELAS padded) and 32."
    torch.manual_seed(0)
    model = inference.build('tiny', variant, torch.device('cuda'), 48)
    for batch in (1, 32):
        prompt = torch.randint(1, model.config.vocab_size, (batch, 32), device='cuda')
        with torch.no_grad():
            eager = inference.generate_static(model, prompt, 16, graph=False)
            replayed = inference.generate_static(model, prompt, 16, graph=True)
        assert torch.equal(replayed, eager), (variant, batch)


def test_graphed_prefill_equals_eager():
    "The prefill's forward captured as a CUDA graph gives the eager forward's last logits."
    torch.manual_seed(0)
    model = inference.build('tiny', 'elas', torch.device('cuda'), 64)
    idx = torch.randint(1, model.config.vocab_size, (4, 64), device='cuda')
    with torch.no_grad():
        eager = inference.last_logits(model, idx)
        out = torch.zeros_like(eager)
        replay = inference.graphed(lambda: out.copy_(inference.last_logits(model, idx)), reset=out.zero_, warmups=2)
        replay()
    assert torch.equal(out, eager)
