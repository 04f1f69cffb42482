"""Property tests of the FFNs and the LLaMA model over random small configurations."""
import pytest, torch
from hypothesis import given, settings, strategies as st
from elas_nb.config import VARIANTS, ModelConfig, count_params, train_flops_per_token
from elas_nb.sparse24 import set_sparse24
from elas_nb.ffn import ElasFFN
from elas_nb.model import count_parameters, measured_train_flops, load_model_state
from elas_nb.convert import build_model


@st.composite
def configs(draw, variant=None):
    "A small valid ModelConfig of any variant."
    variant = variant or draw(st.sampled_from(list(VARIANTS)))
    heads, head_dim = draw(st.integers(1, 3)), 2 * draw(st.integers(1, 4))
    d = heads * head_dim
    ffn_width = 4 * draw(st.integers(1, 8))
    rank = draw(st.integers(1, min(d, ffn_width)))
    return ModelConfig(variant=variant, d_model=d, n_layers=draw(st.integers(1, 2)), n_heads=heads, ffn_width=ffn_width,
                       rank=rank, vocab_size=draw(st.integers(2, 50)), max_seq_len=16)


@settings(max_examples=30, deadline=None)
@given(configs())
def test_built_counts_match_analytic(cfg):
    with torch.device('meta'): model = build_model(cfg)
    assert count_parameters(model) == count_params(cfg)
    norms = sum(p.numel() for n, p in model.named_parameters() if 'norm' in n)
    assert measured_train_flops(model) == train_flops_per_token(cfg) - 6 * norms


@settings(max_examples=25, deadline=None)
@given(configs(), st.integers(2, 16), st.data(), st.booleans())
def test_causal(cfg, T, data, masked):
    "Logits before position t do not depend on tokens from t on, with the ELAS mask on or off."
    torch.manual_seed(0)
    model = build_model(cfg).double()
    set_sparse24(model, masked)
    t = data.draw(st.integers(1, T - 1))
    idx = torch.randint(0, cfg.vocab_size, (2, T))
    idx2 = idx.clone(); idx2[:, t:] = torch.randint(0, cfg.vocab_size, (2, T - t))
    with torch.no_grad(): a, b = model(idx), model(idx2)
    assert torch.allclose(a[:, :t], b[:, :t], atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(configs(), configs())
def test_load_model_state_all_or_nothing(cfg, other):
    "Loading another model's state either fits every key and shape, or raises and changes nothing."
    torch.manual_seed(0)
    model, source = build_model(cfg), build_model(other)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fits = {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in source.state_dict().items()}
    if fits:
        load_model_state(model, source.state_dict())
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    else:
        with pytest.raises(ValueError, match='nothing loaded'): load_model_state(model, source.state_dict())
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def mask24_bruteforce(y):
    "2:4 mask of the last dim by sorting each group of 4 (larger |y| first, lower index first among equals)."
    mask = torch.zeros(y.numel(), dtype=torch.bool)
    flat = y.flatten().tolist()
    for g in range(0, len(flat), 4):
        for j in sorted(range(g, g + 4), key=lambda j: (-abs(flat[j]), j))[:2]: mask[j] = True
    return mask.view_as(y)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.lists(st.integers(1, 3), min_size=1, max_size=2), st.data())
def test_elas_ffn_active_is_masked_dense(d, groups, lead, data):
    "Active, the ELAS FFN equals down(y2 · brute-force 2:4 mask) for any leading shape; inactive, down(y2)."
    rank = data.draw(st.integers(1, min(d, 4 * groups)))
    ffn = ElasFFN(d, 4 * groups, rank).double()
    x = torch.randn(*lead, d, dtype=torch.float64)
    with torch.no_grad():
        y2 = torch.relu(ffn.up(x)) ** 2
        assert torch.allclose(ffn(x), ffn.down(y2), atol=1e-12)
        ffn.sparse24_active = True
        assert torch.allclose(ffn(x), ffn.down(y2 * mask24_bruteforce(y2)), atol=1e-12)
