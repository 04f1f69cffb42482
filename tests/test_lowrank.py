"""Property tests of the factorised layers and the analytic counts."""
import pytest, torch
from hypothesis import given, settings, strategies as st
from elas_nb.lowrank import LowRankLinear, CoLALinear, best_rank_r, check_rank
from elas_nb.config import model_config, count_params, SIZES, VARIANTS


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.data())
def test_layers_match_dense_float64(n_in, n_out, data):
    r = data.draw(st.integers(1, min(n_in, n_out)))
    x = torch.randn(3, n_in, dtype=torch.float64)
    lr = LowRankLinear(n_in, n_out, r, dtype=torch.float64)
    assert torch.allclose(lr(x), x @ (lr.M @ lr.N.T).T, atol=1e-12)
    cola = CoLALinear(n_in, n_out, r, dtype=torch.float64)
    assert torch.allclose(cola(x), torch.nn.functional.silu(x @ cola.A) @ cola.B.T, atol=1e-12)
    assert sum(p.numel() for p in lr.parameters()) == r * (n_in + n_out)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 16), st.integers(2, 16), st.data())
def test_best_rank_r_is_optimal(m, n, data):
    r = data.draw(st.integers(1, min(m, n)))
    W = torch.randn(m, n, dtype=torch.float64)
    M, N = best_rank_r(W, r)
    S = torch.linalg.svdvals(W)
    assert torch.isclose(torch.linalg.norm(W - M @ N.T) ** 2, (S[r:] ** 2).sum(), atol=1e-9)


@pytest.mark.parametrize('rank', [0, -1, 17])
def test_bad_rank(rank):
    with pytest.raises(ValueError, match='rank='): check_rank(rank, 16, 32)


@pytest.mark.parametrize('size', list(SIZES))
@pytest.mark.parametrize('variant', VARIANTS)
def test_counts_are_consistent(size, variant):
    p = count_params(model_config(size, variant))
    assert p['total'] == p['embedding'] + p['non_embedding'] > 0
