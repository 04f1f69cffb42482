"""Property tests of `elas_nb.data`: the shipped corpus matches its build script, batches shard and resume exactly, local
files read back what was written, errors name the file, and the token cache returns what encoding does."""
import bz2, gzip, importlib.util, json, lzma, re
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer, models

from elas_nb.data import (Batches, StreamBatches, asset_path, build_data, embedded_documents, encode_stream, load_tokenizer,
                          model_vocab_size, read_documents)

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


# Reading local files, the token stream, its cache, and the errors that name the file.

COMPRESS = {'': open, '.gz': gzip.open, '.xz': lzma.open, '.bz2': bz2.open}


def write(path:Path, data:bytes) -> Path:
    with COMPRESS.get(path.suffix, open)(path, 'wb') as f: f.write(data)
    return path


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=6).filter(any), ext=st.sampled_from(['.jsonl', '.json']),
       comp=st.sampled_from(list(COMPRESS)), ascii_only=st.booleans(), blank=st.integers(0, 6))
def test_json_lines_round_trip(tmp_path_factory, texts, ext, comp, ascii_only, blank):
    "Any texts (newlines, U+2028, non-ASCII) written as JSON lines, compressed or not, read back the same; blank lines skipped."
    lines = [json.dumps({'text': t, 'n': i}, ensure_ascii=ascii_only) for i, t in enumerate(texts)]
    lines.insert(min(blank, len(lines)), '')
    p = write(tmp_path_factory.mktemp('j')/f'docs{ext}{comp}', '\n'.join(lines).encode())
    assert read_documents(p) == texts


@settings(max_examples=25, deadline=None)
@given(texts=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=4), comp=st.sampled_from(list(COMPRESS)))
def test_any_other_file_is_one_document(tmp_path_factory, texts, comp):
    d = tmp_path_factory.mktemp('t')
    for i, t in enumerate(texts): write(d/f'f{i}.md{comp}', t.encode())  # any extension
    assert read_documents(d/'*') == texts


@settings(max_examples=30, deadline=None)
@given(good=st.lists(st.text(max_size=20), min_size=1, max_size=5),
       bad_line=st.integers(0, 4), kind=st.sampled_from(['json', 'no text', 'utf-8']), comp=st.sampled_from(list(COMPRESS)))
def test_errors_name_the_file_and_the_line_or_byte(tmp_path_factory, good, bad_line, kind, comp):
    lines = [json.dumps({'text': t}, ensure_ascii=False).encode() + b'\n' for t in good]
    n = min(bad_line, len(lines))
    bad = {'json': b'{"text": "cut\n', 'no text': b'{"title": "t", "url": "u"}\n', 'utf-8': b'{"text": "\xff"}\n'}[kind]
    lines.insert(n, bad)
    d = tmp_path_factory.mktemp('e')
    p = write(d/f'shard-7.jsonl{comp}', b''.join(lines))
    offset = sum(map(len, lines[:n])) + bad.index(b'\xff') if kind == 'utf-8' else None
    match = {'json': f'shard-7.jsonl{comp}, line {n + 1}: not valid JSON',
             'no text': f"shard-7.jsonl{comp}, line {n + 1}: the object has no 'text' field; its fields are ['title', 'url']",
             'utf-8': f'shard-7.jsonl{comp} is not UTF-8 text: the byte at offset {offset}'}[kind]
    with pytest.raises(ValueError, match=re.escape(match)): read_documents(p)
    (d/'a.txt').write_text('A training file of a few words.')  # read first, and fine
    with pytest.raises(ValueError, match=re.escape(match)): build_data(d/'*', seq_len=4)
    with pytest.raises(ValueError, match=re.escape(match)): build_data(d/'a.txt', seq_len=4, valid=p)


def test_missing_and_empty_files_are_named(tmp_path):
    (tmp_path/'empty.jsonl').write_text('\n\n')
    (tmp_path/'blank.txt').write_text('')
    with pytest.raises(ValueError, match=r'no text in 2 file\(s\) \(.*blank.txt, .*empty.jsonl\)'): build_data(tmp_path/'*')
    with pytest.raises(FileNotFoundError, match=r"valid='.*nothing-\*.jsonl' matches no file"):
        build_data(asset_path('embedded_valid.jsonl'), valid=tmp_path/'nothing-*.jsonl')
    with pytest.raises(FileNotFoundError, match="folder without train.jsonl"): build_data(tmp_path)


@settings(max_examples=25, deadline=None)
@given(texts=st.lists(st.text(max_size=60), min_size=0, max_size=9), chunk=st.integers(1, 4))
def test_encode_stream_matches_one_document_at_a_time(texts, chunk):
    tok = load_tokenizer()
    ids, ends = encode_stream(tok, texts, chunk=chunk)
    ref = [tok.encode(t, add_special_tokens=False).ids + [1] for t in texts]
    assert ids.dtype == np.int32 and ids.tolist() == sum(ref, [])
    assert ends.tolist() == np.cumsum([len(r) for r in ref]).tolist()


@settings(max_examples=25, deadline=None)
@given(words=st.integers(4, 40), sentinels=st.integers(0, 5), middle=st.booleans())
def test_model_vocab_drops_only_the_sentinels_at_the_top(words, sentinels, middle):
    pieces = ['<pad>', '</s>', '<unk>'] + [f'w{i}' for i in range(words)]
    if middle: pieces.insert(5, '<extra_id_50>')  # not at the top: part of the model vocabulary
    tok = Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces + [f'<extra_id_{i}>' for i in range(sentinels)])},
                                     unk_token='<unk>'))
    assert model_vocab_size(tok) == len(pieces)


def test_build_data_cache_is_exact_and_invalidated(tmp_path):
    docs = embedded_documents('valid')
    for i in range(3): (tmp_path/f'part{i}.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in docs[i::3]))
    kw = dict(source=tmp_path/'part[01].jsonl', valid=tmp_path/'part2.jsonl', seq_len=32, batch_size=4,
              cache_dir=tmp_path/'cache')
    fresh, cached = build_data(**{**kw, 'cache_dir': None}), build_data(**kw)
    with patch('elas_nb.data.encode_stream', side_effect=AssertionError('tokenized again')):
        again = build_data(**kw)
    for d in (cached, again):
        assert torch.equal(d.train.seqs, fresh.train.seqs) and d.train.seqs.dtype == torch.int32
        assert all(torch.equal(a, b) for a, b in zip(d.valid(), fresh.valid(), strict=True))
    (tmp_path/'part2.jsonl').write_text(json.dumps({'text': docs[0]}) + '\n')
    changed = build_data(**kw)
    assert torch.equal(changed.train.seqs, fresh.train.seqs) and changed.valid_tokens != fresh.valid_tokens
    assert len(list((tmp_path/'cache').glob('tokens-*.npz'))) == 3 and not list((tmp_path/'cache').glob('*.tmp'))


@settings(max_examples=20, deadline=None)
@given(before=st.text(max_size=30), after=st.text(max_size=10), comp=st.sampled_from(list(COMPRESS)))
def test_text_file_not_utf8_names_the_byte(tmp_path_factory, before, after, comp):
    p = write(tmp_path_factory.mktemp('u')/f'notes.rst{comp}', before.encode() + b'\xe9' + after.encode())
    where = ' of the decompressed text' if comp else ''
    match = re.escape(f"notes.rst{comp} is not UTF-8 text: the byte at offset {len(before.encode())}{where}")
    with pytest.raises(ValueError, match=match): read_documents(p)


def test_source_names_win_over_folders_of_that_name(tmp_path, monkeypatch):
    "C4 shards downloaded into ./c4/ must not turn data='c4' into a corpus folder (nor ./embedded/ data='embedded')."
    monkeypatch.chdir(tmp_path)
    (tmp_path/'c4').mkdir(); (tmp_path/'embedded').mkdir()
    assert build_data('embedded', seq_len=64).vocab_size == 4096
    assert isinstance(build_data('c4', tokenizer='embedded').train, StreamBatches)  # streamed lazily: nothing is read here
