"""Property tests of the 2:4 mask and its variants against a brute force over the 6 patterns; the GEMM budget against
PyTorch's FLOP counter on the built model."""
import dataclasses, itertools, math
import pytest, torch
from hypothesis import given, settings, strategies as st
from torch.utils.flop_counter import FlopCounterMode
from elas_nb.config import VARIANTS, model_config
from elas_nb.sparse24 import mask24, prune24, mvue24, soft_threshold24, sparse24_ste, energy_kept, magnitude, gemm_budget

PATTERNS = list(itertools.combinations(range(4), 2))
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def brute_mask(x):
    "The best of the 6 patterns per group: largest kept magnitudes first, then the lowest positions."
    groups = magnitude(x.reshape(-1, 4)).tolist()
    out = torch.zeros(len(groups), 4, dtype=torch.bool)
    for q, grp in enumerate(groups):
        best = min(PATTERNS, key=lambda p: (sorted((-grp[i] for i in p)), p))
        out[q, list(best)] = True
    return out.reshape(x.shape)


values = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 2.0, -2.0, 0.5]),  # ties and zeros
                   st.floats(-100, 100, allow_nan=False, width=16))


@st.composite
def tensors(draw):
    rows = draw(st.integers(1, 5))
    groups = draw(st.integers(1, 6))
    data = draw(st.lists(values, min_size=rows * groups * 4, max_size=rows * groups * 4))
    dtype = draw(st.sampled_from(DTYPES))
    return torch.tensor(data, dtype=torch.float64).reshape(rows, groups * 4).to(dtype)


@settings(max_examples=150, deadline=None)
@given(tensors())
def test_mask_is_brute_force_best(x):
    assert torch.equal(mask24(x), brute_mask(x))


@settings(max_examples=100, deadline=None)
@given(tensors())
def test_group_properties(x):
    m, p, g = mask24(x).reshape(-1, 4), prune24(x).reshape(-1, 4), x.reshape(-1, 4)
    assert (m.sum(-1) == 2).all()
    assert torch.equal((p != 0).sum(-1), (g != 0).sum(-1).clamp(max=2))
    kept = torch.where(m, g.abs().double(), math.inf).amin(-1)
    dropped = torch.where(m, -math.inf, g.abs().double()).amax(-1)
    assert (kept >= dropped).all()
    assert 0.0 <= energy_kept(x) <= 1.0 + 1e-12


@settings(max_examples=50, deadline=None)
@given(tensors(), st.integers(0, 2**31 - 1))
def test_variants_are_24(x, seed):
    for out in (mvue24(x, torch.Generator().manual_seed(seed)), soft_threshold24(x)):
        assert out.shape == x.shape and out.dtype == x.dtype
        assert ((out.reshape(-1, 4) != 0).sum(-1) <= 2).all()


def test_batched_shapes_and_ste_gradient():
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64, requires_grad=True)
    y = sparse24_ste(x)
    assert torch.equal(y, prune24(x.detach()))
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(x.grad, g)  # straight through: not masked


def test_nan_is_kept_and_propagates():
    x = torch.tensor([[float('nan'), 5.0, 6.0, 7.0]])
    assert mask24(x).tolist() == [[True, False, False, True]]  # NaN counts as the largest, then 7
    assert torch.isnan(prune24(x)).any()


def counted_flops(cfg, backward:bool) -> float:
    "FLOPs per token that FlopCounterMode sees in the built model (meta device: nothing is computed)."
    from elas_nb.convert import build_model  # a later module: only this test needs it
    with torch.device('meta'): model = build_model(cfg)
    idx = torch.zeros(1, cfg.max_seq_len, dtype=torch.long, device='meta')
    with FlopCounterMode(display=False) as counter:
        loss = model(idx, idx)  # with targets the model returns the loss alone
        if backward: loss.backward()
    return counter.get_total_flops() / cfg.max_seq_len


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('backward', [False, True])
def test_gemm_budget_of_one_block_matches_flop_counter(variant, backward):
    # two blocks minus one block: the embedding and the LM head cancel, however the model computes them
    cfg = model_config('60m', variant, max_seq_len=64)
    one, two = (counted_flops(dataclasses.replace(cfg, n_layers=n), backward) for n in (1, 2))
    rows = gemm_budget(dataclasses.replace(cfg, n_layers=1))
    expected = sum(r['flops'] for r in rows if r['part'] != 'head' and (backward or r['pass'] == 'forward'))
    assert two - one == expected
