"""Tests of `bench/corpora.py`, the offline corpus builder, on a tiny fake site-packages tree and a tiny english-mix folder."""
import hashlib, importlib.util, json, lzma, shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer

from elas_nb.data import asset_path, build_data

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location('corpora', ROOT/'bench'/'corpora.py')
corpora = importlib.util.module_from_spec(spec)
spec.loader.exec_module(corpora)

VOCAB = 300  # the 256 bytes, 3 special tokens and a few merges: trains in milliseconds
MAX_BYTES = 3000


def fake_site_packages(root:Path) -> dict[str, str]:
    "A small tree of packages under `root`; returns the files the code corpus must keep (relative path → text)."
    keep = {}
    for pkg in ('alpha', 'beta', 'gamma'):
        for i in range(6):
            text = (f'"""Module {i} of {pkg}."""\nimport os\n\n\ndef {pkg}_{i}(x):\n    "Return x times {i}."\n'
                    f'    return x * {i} + len(os.sep)  # {"é" * i}\n')
            keep[f'{pkg}/mod{i}.py'] = text
    keep['alpha/sub/deep.py'] = 'class Deep:\n    pass\n'
    for rel, text in keep.items():
        (root/rel).parent.mkdir(parents=True, exist_ok=True)
        (root/rel).write_text(text, encoding='utf-8')
    (root/'alpha'/'__init__.py').write_text('')                                  # empty
    (root/'beta'/'latin1.py').write_bytes('# café\nx = 1\n'.encode('latin-1'))    # not UTF-8
    (root/'beta'/'big.py').write_text('x = 1\n' * (MAX_BYTES // 6 + 1))          # too large
    shutil.copy(root/'alpha'/'mod3.py', root/'gamma'/'vendored.py')               # duplicate of an earlier file
    (root/'gamma'/'README.txt').write_text('not python')                         # not *.py
    return keep


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp('site-packages')
    return root, fake_site_packages(root)


def build(site, out:Path, *args) -> dict:
    return corpora.main(['code', str(out), '--root', str(site[0]), '--vocab-size', str(VOCAB), '--max-file-bytes',
                         str(MAX_BYTES), '--valid-fraction', '0.2', *args])


@pytest.fixture(scope='module')
def corpus(site, tmp_path_factory):
    out = tmp_path_factory.mktemp('code')
    return out, build(site, out)


def rows(path:Path) -> list[dict]: return [json.loads(l) for l in path.read_text(encoding='utf-8').splitlines()]


def test_same_seed_same_files(site, corpus, tmp_path):
    build(site, tmp_path/'again')
    for f in ('train.jsonl', 'valid.jsonl', 'tokenizer.json', 'corpus.json'):
        assert (tmp_path/'again'/f).read_bytes() == (corpus[0]/f).read_bytes(), f
    build(site, tmp_path/'seed1', '--seed', '1')
    assert rows(tmp_path/'seed1'/'valid.jsonl') != rows(corpus[0]/'valid.jsonl')


def test_split_is_by_file_and_skips_bad_files(site, corpus):
    out, info = corpus
    train, valid = rows(out/'train.jsonl'), rows(out/'valid.jsonl')
    assert len(valid) == round(0.2 * len(site[1]))
    assert {r['path'] for r in train}.isdisjoint(r['path'] for r in valid)
    assert {r['path']: r['text'] for r in train + valid} == site[1]  # each kept file whole, once; the skipped ones nowhere
    assert info['skipped'] == dict(not_utf8=1, too_large=1, empty=1, duplicate=1)


def test_stats_counted_independently(site, corpus):
    out, info = corpus
    tok = Tokenizer.from_file(str(out/'tokenizer.json'))
    for split in ('train', 'valid'):
        texts = [r['text'] for r in rows(out/f'{split}.jsonl')]
        assert info['splits'][split] == dict(files=len(texts), bytes=sum(len(t.encode()) for t in texts),
                                             tokens=sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts))
    for f, digest in info['sha256'].items(): assert hashlib.sha256((out/f).read_bytes()).hexdigest() == digest
    assert json.loads((out/'corpus.json').read_text()) == info
    assert (info['root'], info['seed'], info['max_file_bytes']) == (str(site[0]), 0, MAX_BYTES)
    assert set(info) >= {'root', 'seed', 'python', 'tokenizers', 'torch', 'tokenizer', 'skipped', 'splits', 'sha256'}


def test_tokenizer_trained_on_a_prefix_of_the_training_files(site, corpus, tmp_path):
    tok = Tokenizer.from_file(str(corpus[0]/'tokenizer.json'))
    assert tok.get_vocab_size() == VOCAB and [tok.id_to_token(i) for i in range(3)] == ['<pad>', '</s>', '<unk>']
    info = build(site, tmp_path/'capped', '--tokenizer-bytes', '1')
    first = rows(tmp_path/'capped'/'train.jsonl')[0]['text']
    assert info['tokenizer'] == dict(vocab_size=VOCAB, byte_cap=1, trained_on_files=1, trained_on_bytes=len(first.encode()))
    assert corpus[1]['tokenizer']['trained_on_files'] == corpus[1]['splits']['train']['files']  # 64 MB cap: all of them


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=100))
def test_tokenizer_round_trips(corpus, text):
    tok = Tokenizer.from_file(str(corpus[0]/'tokenizer.json'))
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


def test_build_data_trains_on_the_folder(corpus, tmp_path):
    out, info = corpus
    data = build_data(out, seq_len=8, batch_size=2, cache_dir=tmp_path/'cache')
    assert data.vocab_size == VOCAB and data.tokenizer.get_vocab_size() == VOCAB
    for split, tokens in (('train', data.train_tokens), ('valid', data.valid_tokens)):
        s = info['splits'][split]
        assert tokens == (s['tokens'] + s['files']) // 9 * 9  # a `</s>` after every file, packed into windows of 9
    explicit = build_data(out/'train.jsonl', seq_len=8, batch_size=2, valid=out/'valid.jsonl', tokenizer=out/'tokenizer.json')
    assert torch.equal(explicit.train.seqs, data.train.seqs)
    assert all(torch.equal(a, b) for a, b in zip(explicit.valid(), data.valid(), strict=True))


def test_bad_arguments(tmp_path):
    with pytest.raises(SystemExit): corpora.main(['code', str(tmp_path/'out'), '--root', str(tmp_path/'nowhere')])
    with pytest.raises(FileNotFoundError, match='lacks train.txt.xz'):
        corpora.main(['english', str(tmp_path/'out'), '--src', str(tmp_path)])
    (tmp_path/'one.py').write_text('x = 1\n')
    with pytest.raises(ValueError, match='too few'): corpora.main(['code', str(tmp_path/'out'), '--root', str(tmp_path)])


def test_english_corpus(tmp_path):
    src, out = tmp_path/'english-mix', tmp_path/'english'
    src.mkdir()
    train = ('First speech, one line.\n\nSecond document\nhas two lines.\n\n\n\nThird after extra blank lines. \n \n'
             '  Fourth, padded.')
    with lzma.open(src/'train.txt.xz', 'wt', encoding='utf-8') as f: f.write(train)
    with lzma.open(src/'valid.txt.xz', 'wt', encoding='utf-8') as f: f.write('<doc id="1">\nWiki text.\n</doc>\n\nC4 text.\n')
    shutil.copy(asset_path('tokenizer.json'), src/'t5-tokenizer.json')  # any tokenizer.json will do
    info = corpora.main(['english', str(out), '--src', str(src)])
    docs = {s: [r['text'] for r in rows(out/f'{s}.jsonl')] for s in ('train', 'valid')}
    assert docs == {'train': ['First speech, one line.', 'Second document\nhas two lines.', 'Third after extra blank lines.',
                              'Fourth, padded.'],
                    'valid': ['<doc id="1">\nWiki text.\n</doc>', 'C4 text.']}
    assert (out/'tokenizer.json').read_bytes() == (src/'t5-tokenizer.json').read_bytes()
    tok = Tokenizer.from_file(str(out/'tokenizer.json'))
    for s, texts in docs.items():
        assert info['splits'][s] == dict(documents=len(texts), bytes=sum(len(t.encode()) for t in texts),
                                         tokens=sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts))
    assert info['sources_sha256']['train.txt.xz'] == hashlib.sha256((src/'train.txt.xz').read_bytes()).hexdigest()
    data = build_data(out, seq_len=4, batch_size=2)
    assert data.valid_tokens == (info['splits']['valid']['tokens'] + 2) // 5 * 5
