"""The conversions against independent references: dense outputs at full rank, the truncated SVD at rank r, the analytic
parameter counts, Hugging Face's names (a real `LlamaForCausalLM` when `transformers` is installed), refusals, and the ELAS
FFN's fallback warning."""
import copy, dataclasses, warnings
import pytest, torch
from torch import nn
from hypothesis import assume, given, settings, strategies as st
import elas_nb.sparse_gemm as sg
from elas_nb.config import VARIANTS, ModelConfig, count_params, model_config
from elas_nb.lowrank import LowRankLinear
from elas_nb.ffn import ElasFFN, ReLU2FFN
from elas_nb.model import Llama, count_parameters
from elas_nb.sparse24 import set_sparse24
from elas_nb.convert import LLAMA_LINEARS, build_model, to_elas_ffn_, to_lowrank_, to_relu2_ffn_


@st.composite
def dense_configs(draw):
    "A small dense ModelConfig whose FFN width suits 2:4."
    heads, head_dim = draw(st.integers(1, 3)), 2 * draw(st.integers(1, 4))
    return ModelConfig(d_model=heads * head_dim, n_layers=draw(st.integers(1, 2)), n_heads=heads, ffn_width=4 * draw(st.integers(1, 6)),
                       vocab_size=draw(st.integers(2, 40)), max_seq_len=12)


def dense_model(cfg, seed=0):
    torch.manual_seed(seed)
    return Llama(cfg).double()


@settings(max_examples=20, deadline=None)
@given(dense_configs(), st.integers(2, 12))
def test_full_rank_reproduces_dense(cfg, T):
    "At rank d (full rank for every linear when I >= d), the LORO model from the SVD computes the dense model's logits (float64)."
    assume(cfg.ffn_width >= cfg.d_model)
    dense = dense_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, T))
    loro = to_lowrank_(copy.deepcopy(dense), rank=cfg.d_model)
    with torch.no_grad(): assert torch.allclose(loro(idx), dense(idx), atol=1e-9, rtol=1e-9)


@settings(max_examples=20, deadline=None)
@given(dense_configs(), st.data())
def test_factors_are_the_truncated_svd(cfg, data):
    "Every factor pair of a rank-r conversion is U_r Σ_r V_rᵀ of its dense weight; its error is the spectral tail."
    dense = dense_model(cfg)
    r = data.draw(st.integers(1, min(cfg.d_model, cfg.ffn_width)))
    kind = data.draw(st.sampled_from(['loro', 'cola']))
    converted = to_lowrank_(copy.deepcopy(dense), rank=r, kind=kind)
    names = [n for n, m in dense.named_modules() if n.split('.')[-1] in LLAMA_LINEARS]
    assert len(names) == 7 * cfg.n_layers
    for name in names:
        W, f = dense.get_submodule(name).weight.detach(), converted.get_submodule(name)
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        approx = f.M @ f.N.T if kind == 'loro' else f.B @ f.A.T
        assert torch.allclose(approx, U[:, :r] @ torch.diag(S[:r]) @ Vh[:r], atol=1e-10)
        assert torch.isclose(torch.linalg.norm(W - approx) ** 2, (S[r:] ** 2).sum(), atol=1e-9)
    assert torch.equal(converted.head.weight, dense.head.weight) and torch.equal(converted.embed.weight, dense.embed.weight)


@settings(max_examples=20, deadline=None)
@given(dense_configs(), st.sampled_from(list(VARIANTS)), st.data())
def test_counts_match_analytic(cfg, variant, data):
    "Converting a dense model by hand and `build_model` both hold `count_params` of the variant's config, in the same modules."
    width = cfg.ffn_width if VARIANTS[variant][1] == 'swiglu' else 4 * data.draw(st.integers(1, 6))
    rank = data.draw(st.integers(1, min(cfg.d_model, width)))
    want = dataclasses.replace(cfg, variant=variant, ffn_width=width, rank=rank)
    model = dense_model(cfg)
    linears, ffn = VARIANTS[variant]
    if ffn != 'swiglu': to_relu2_ffn_(model, width)
    if linears != 'dense': to_lowrank_(model, rank, linears)
    if ffn == 'elas': to_elas_ffn_(model)
    assert count_parameters(model) == count_params(want)
    built = build_model(want)
    assert [(n, type(m)) for n, m in built.named_modules()] == [(n, type(m)) for n, m in model.named_modules()]
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


class MLP(nn.Module):
    "Hugging Face's LlamaMLP, by its names: gate_proj, up_proj, down_proj and act_fn."
    def __init__(self, d, I):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(d, I, bias=False), nn.Linear(d, I, bias=False), nn.Linear(I, d, bias=False)
        self.act_fn = nn.SiLU()
    def forward(self, x): return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def hf_named_tree(d=16, I=40, layers=2):
    "A module tree with Hugging Face LLaMA's names: model.layers[i].self_attn.{q,k,v,o}_proj and model.layers[i].mlp."
    layer = lambda: nn.ModuleDict(dict(self_attn=nn.ModuleDict({n: nn.Linear(d, d, bias=False) for n in ('q_proj', 'k_proj', 'v_proj', 'o_proj')}),
                                       mlp=MLP(d, I)))
    return nn.ModuleDict(dict(model=nn.ModuleDict(dict(layers=nn.ModuleList(layer() for _ in range(layers)))), lm_head=nn.Linear(d, 50, bias=False)))


def test_hf_names_without_transformers():
    "The three conversions find Hugging Face's names; the LM head stays; the MLP at full rank keeps its function."
    torch.manual_seed(0)
    tree = hf_named_tree().double()
    x = torch.randn(3, 16, dtype=torch.float64)
    mlp = tree.model.layers[0].mlp
    assert torch.allclose(to_lowrank_(copy.deepcopy(mlp), rank=16)(x), mlp(x), atol=1e-10)
    to_elas_ffn_(to_lowrank_(to_relu2_ffn_(tree), rank=8))
    first = tree.model.layers[0]
    assert type(first.mlp) is ElasFFN and first.mlp.up.out_features == 64  # 1.5 × 40 rounded up to 64
    assert all(type(l) is LowRankLinear for l in first.self_attn.values()) and type(tree.lm_head) is nn.Linear
    assert set_sparse24(tree, True) == 2


def test_hf_llama_for_causal_lm():
    "A small `LlamaForCausalLM`: at full rank its logits are unchanged; converted to ELAS it runs, masks, and holds the counted parameters."
    transformers = pytest.importorskip('transformers')
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=4, max_position_embeddings=32)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).double().eval()
    idx = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        want = hf(idx).logits
        assert torch.allclose(to_lowrank_(copy.deepcopy(hf), rank=32)(idx).logits, want, atol=1e-8)
    elas = to_elas_ffn_(to_lowrank_(to_relu2_ffn_(copy.deepcopy(hf)), rank=8), kernel='dense')
    assert set_sparse24(elas, True) == 2
    with torch.no_grad(): assert elas(idx).logits.shape == want.shape
    d, F, r, L, V = 32, 128, 8, 2, 64  # F: 1.5 × 64 rounded up to 64
    blocks = L * (4 * r * 2 * d + 2 * r * (d + F) + 2 * d)
    assert sum(p.numel() for p in elas.parameters()) == blocks + d + 2 * V * d


def test_refusals_change_nothing():
    "Bad input to a conversion is refused with the reason, before any module is replaced."
    dense = dense_model(model_config('tiny', 'full', vocab_size=32))
    types = lambda m: [type(x) for x in m.modules()]
    before = types(dense)
    for call, message in [(lambda: to_lowrank_(dense, 129), 'rank=129 must satisfy 0 < rank <= min(in_features, out_features) = 128'),
                          (lambda: to_lowrank_(dense, 0), 'rank=0'),
                          (lambda: to_lowrank_(dense, 8, kind='lora'), "kind must be one of loro, cola"),
                          (lambda: to_lowrank_(dense, 8, init='zeros'), "init must be 'svd' or 'fresh'"),
                          (lambda: to_elas_ffn_(dense), 'has no ReLU² FFN'),
                          (lambda: to_relu2_ffn_(nn.Sequential(nn.Linear(4, 4))), 'Sequential has no SwiGLU FFN'),
                          (lambda: to_lowrank_(nn.Sequential(nn.Linear(4, 4)), 2), 'Sequential has no dense nn.Linear named q, k')]:
        with pytest.raises(ValueError, match=None) as e: call()
        assert message in str(e.value), str(e.value)
    assert types(dense) == before
    with pytest.raises(ValueError, match='has a bias'): to_lowrank_(nn.ModuleDict(dict(up=nn.Linear(8, 8))), 4)
    relu2 = to_relu2_ffn_(copy.deepcopy(dense), width=30)
    with pytest.raises(ValueError, match='has dense linears; ELAS prunes between LORO factors'): to_elas_ffn_(relu2)
    to_lowrank_(relu2, 8)
    with pytest.raises(ValueError, match='ffn_width=30 must be divisible by 4'): to_elas_ffn_(relu2)
    assert type(relu2.layers[0].ffn) is ReLU2FFN
    with pytest.raises(ValueError, match="build a 'elas' model with build_model"): Llama(model_config('tiny', 'elas'))


def test_fallback_warns_once_with_reason(monkeypatch):
    "kernel='auto' on a CPU: the dense simulation runs, and one warning says why, however many forwards; 'sparse' raises the reason."
    monkeypatch.setattr(sg, '_WARNED', set())
    model = build_model(model_config('tiny', 'elas', vocab_size=64, n_layers=2))
    set_sparse24(model, True)
    idx = torch.randint(0, 64, (2, 16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(3): model(idx)
    fallback = [str(w.message) for w in caught if 'ElasFFN' in str(w.message)]
    assert fallback == ['ElasFFN runs the dense 2:4 simulation instead of the sparse tensor cores: h1 is on cpu: relu2_sparse24_down '
                        "runs on the GPU's sparse tensor cores; use relu2_sparse24_down_ref elsewhere"]
    strict = build_model(model_config('tiny', 'elas', vocab_size=64, kernel='sparse'))
    set_sparse24(strict, True)
    with pytest.raises(ValueError, match="kernel='sparse'\\) cannot use the sparse tensor cores: h1 is on cpu"): strict(idx)
