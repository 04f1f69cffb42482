"""Property tests of `elas_nb.data`: the shipped corpus matches its build script, batches shard and resume exactly."""
import importlib.util, json
from pathlib import Path

import torch
from hypothesis import given, settings, strategies as st

from elas_nb.data import Batches, asset_path, embedded_documents, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def build_assets():
    spec = importlib.util.spec_from_file_location('build_assets', ROOT/'data'/'build_assets.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_botchan_assets_match_build_script():
    "The shipped Botchan documents are exactly what data/build_assets.py extracts (the pydoc part depends on the Python)."
    chapters = build_assets().botchan_chapters()
    shipped = [json.loads(l) for split in ('train', 'valid')
               for l in asset_path(f'embedded_{split}.jsonl').read_text().splitlines()]
    assert [(d['title'], d['text']) for d in shipped if d['source'] == 'botchan'] == chapters
    assert all('gutenberg' not in d['text'].lower() for d in shipped)
    assert len(embedded_documents('valid')) == 10


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=200))
def test_tokenizer_round_trip(text):
    tok = load_tokenizer()
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 23), b=st.integers(1, 5), world=st.integers(1, 4), seed=st.integers(0, 99),
       draws=st.integers(1, 12), resume_at=st.integers(0, 11))
def test_ranks_partition_the_single_process_stream(n, b, world, seed, draws, resume_at):
    seqs = torch.arange(n)[:, None].repeat(1, 3)
    single = Batches(seqs, b * world, seed)
    ranks = [Batches(seqs, b, seed, r, world) for r in range(world)]
    for i in range(draws):
        want = next(single)[:, 0]
        got = torch.cat([next(r)[:, 0] for r in ranks])
        assert sorted(got.tolist()) == sorted(want.tolist())
        if i == resume_at:  # a fresh stream restored from the state continues as the original does
            fresh = Batches(seqs, b * world, seed)
            fresh.load_state_dict(single.state_dict())
            assert torch.equal(next(fresh), next(_advanced(seqs, b * world, seed, i + 1)))


def _advanced(seqs, b, seed, draws):
    "A fresh stream after `draws` draws."
    s = Batches(seqs, b, seed)
    for _ in range(draws): next(s)
    return s
