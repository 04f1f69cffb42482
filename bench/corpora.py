"""Build the two offline training corpora, deterministically, as folders that `build_data(folder)` trains on.

    python bench/corpora.py code OUT [--root DIR] [--seed 0] [--valid-fraction 0.02] [--max-file-bytes 1000000]
                                     [--vocab-size 32000] [--tokenizer-bytes 64000000]
    python bench/corpora.py english OUT --src DIR

code: the Python sources (`*.py`) installed on this machine (default: the running interpreter's site-packages). Files are
sorted by relative path; non-UTF-8, empty, oversized and duplicate (same bytes as an earlier file) files are skipped and
counted; the rest are shuffled with --seed and split by file into validation (the first --valid-fraction) and training.
A 32,000-id byte-level BPE (`<pad>` 0, `</s>` 1, `<unk>` 2) is trained on a prefix of the shuffled training files of at
most --tokenizer-bytes (plus the file that crosses it; 0: all of them).

english: `DIR/train.txt.xz` and `DIR/valid.txt.xz` (documents separated by blank lines) and `DIR/t5-tokenizer.json`, the T5
tokenizer, copied as OUT/tokenizer.json.

Both write OUT/train.jsonl and OUT/valid.jsonl (one JSON object per document: {"text": ...}, plus "path" for code),
OUT/tokenizer.json and OUT/corpus.json (sizes per split, tokens counted without `</s>`, settings, versions and sha256s).
Imports only the standard library and `tokenizers`, so it runs on a machine without `datasets` or torch.
"""
import argparse, hashlib, json, lzma, os, random, re, shutil, site, sys, time
from importlib import metadata
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ['<pad>', '</s>', '<unk>']  # ids 0, 1, 2, as in the T5 tokenizer
ENCODE_CHUNK = 16 * 2**20  # characters per encode_batch call: parallel, yet the Encoding objects stay small


def stage(name:str, t0:float) -> float:
    "Print the seconds since `t0` spent on `name`; returns now."
    now = time.perf_counter()
    print(f'{name}: {now - t0:.1f} s', flush=True)
    return now


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(2**24): h.update(block)
    return h.hexdigest()


def python_sources(root:Path, max_bytes:int) -> tuple[list[tuple[str, str]], dict]:
    "(relative path, text) of the usable `*.py` files under `root`, sorted by path, and the counts of skipped ones."
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob('*.py') if p.is_file())
    files, skipped, seen = [], dict(not_utf8=0, too_large=0, empty=0, duplicate=0), set()
    for rel in paths:
        raw = (root/rel).read_bytes()
        if len(raw) > max_bytes: skipped['too_large'] += 1; continue
        try: text = raw.decode('utf-8')
        except UnicodeDecodeError: skipped['not_utf8'] += 1; continue
        if not text.strip(): skipped['empty'] += 1; continue
        digest = hashlib.sha256(raw).digest()
        if digest in seen: skipped['duplicate'] += 1; continue  # vendored copies would leak between the splits
        seen.add(digest); files.append((rel, text))
    return files, skipped


def split_files(files:list, seed:int, valid_fraction:float) -> tuple[list, list]:
    "(train, valid): `files` shuffled with `seed`; the first `valid_fraction` of them (at least one) are validation."
    order = files[:]
    random.Random(seed).shuffle(order)
    n_valid = max(1, round(len(order) * valid_fraction))
    if n_valid >= len(order): raise ValueError(f"{len(order)} usable files: too few to hold out {n_valid} for validation")
    return order[n_valid:], order[:n_valid]


def byte_prefix(texts:list[str], cap:int) -> list[str]:
    "The first texts until their UTF-8 size reaches `cap` (all of them when cap is 0)."
    out, total = [], 0
    for t in texts:
        if cap and total >= cap: break
        out.append(t); total += len(t.encode())
    return out


def train_bpe(texts:list[str], vocab_size:int) -> Tokenizer:
    "A byte-level BPE (GPT-2's scheme: every UTF-8 text encodes, nothing is unknown) with `<pad>`, `</s>`, `<unk>` first."
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def count_tokens(tok:Tokenizer, texts:list[str]) -> int:
    "Tokens of all `texts` (no special tokens added), encoded in parallel in chunks of about ENCODE_CHUNK characters."
    total, chunk, size = 0, [], 0
    for t in texts + [None]:
        if t is None or size >= ENCODE_CHUNK:
            total += sum(len(e.ids) for e in tok.encode_batch(chunk, add_special_tokens=False))
            chunk, size = [], 0
        if t is not None: chunk.append(t); size += len(t)
    return total


def write_jsonl(path:Path, rows:list[dict]):
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        for r in rows: f.write(json.dumps(r, ensure_ascii=False) + '\n')


def versions() -> dict:
    try: torch = metadata.version('torch')
    except metadata.PackageNotFoundError: torch = None
    return dict(python=sys.version.split()[0], tokenizers=tokenizers.__version__, torch=torch)


def finish(out:Path, tok:Tokenizer, splits:dict, info:dict) -> dict:
    "Count each split's tokens, write corpus.json with the sizes and sha256s, and return it."
    t0 = time.perf_counter()
    for name, texts in splits.items():
        info['splits'][name].update(bytes=sum(len(t.encode()) for t in texts), tokens=count_tokens(tok, texts))
    t0 = stage('count tokens', t0)
    info['sha256'] = {f: sha256(out/f) for f in ('train.jsonl', 'valid.jsonl', 'tokenizer.json')}
    info.update(versions())
    (out/'corpus.json').write_text(json.dumps(info, indent=1) + '\n')
    return info


def build_code(out:Path, root:Path, seed:int=0, valid_fraction:float=0.02, max_file_bytes:int=1_000_000,
               vocab_size:int=32000, tokenizer_bytes:int=64_000_000) -> dict:
    "The code corpus of the `*.py` files under `root`, written to `out`; returns what corpus.json holds."
    t0 = time.perf_counter()
    files, skipped = python_sources(root, max_file_bytes)
    t0 = stage(f'read {len(files):,} files', t0)
    train, valid = split_files(files, seed, valid_fraction)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (('train', train), ('valid', valid)):
        write_jsonl(out/f'{name}.jsonl', [dict(text=t, path=p) for p, t in part])
    t0 = stage('split and write', t0)
    texts = {'train': [t for _, t in train], 'valid': [t for _, t in valid]}
    prefix = byte_prefix(texts['train'], tokenizer_bytes)
    tok = train_bpe(prefix, vocab_size)
    tok.save(str(out/'tokenizer.json'))
    stage(f'train the BPE on {len(prefix):,} files', t0)
    info = dict(kind='code', root=str(root), seed=seed, valid_fraction=valid_fraction, max_file_bytes=max_file_bytes,
                skipped=skipped, splits={k: dict(files=len(v)) for k, v in texts.items()},
                tokenizer=dict(vocab_size=tok.get_vocab_size(), byte_cap=tokenizer_bytes, trained_on_files=len(prefix),
                               trained_on_bytes=sum(len(t.encode()) for t in prefix)))
    return finish(out, tok, texts, info)


def blank_line_documents(path:Path) -> list[str]:
    "The documents of an xz text file whose documents are separated by blank lines, each stripped, empty ones dropped."
    with lzma.open(path, 'rb') as f: text = f.read().decode('utf-8')
    return [d.strip() for d in re.split(r'\n\s*\n', text) if d.strip()]


def build_english(out:Path, src:Path) -> dict:
    "The English corpus of `src` (train.txt.xz, valid.txt.xz, t5-tokenizer.json) written to `out`; returns corpus.json."
    names = ('train.txt.xz', 'valid.txt.xz', 't5-tokenizer.json')
    missing = [n for n in names if not (src/n).is_file()]
    if missing: raise FileNotFoundError(f"--src {src} lacks {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    texts = {s: blank_line_documents(src/f'{s}.txt.xz') for s in ('train', 'valid')}
    for s, docs in texts.items(): write_jsonl(out/f'{s}.jsonl', [dict(text=d) for d in docs])
    shutil.copyfile(src/'t5-tokenizer.json', out/'tokenizer.json')
    info = dict(kind='english', src=str(src), sources_sha256={n: sha256(src/n) for n in names},
                splits={k: dict(documents=len(v)) for k, v in texts.items()})
    return finish(out, Tokenizer.from_file(str(out/'tokenizer.json')), texts, info)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='kind', required=True)
    c = sub.add_parser('code', help="Python sources of the installed packages, with a byte-level BPE trained on them")
    c.add_argument('out', type=Path, help='output folder')
    c.add_argument('--root', type=Path, default=Path(site.getsitepackages()[0]),
                   help='folder searched for *.py (default: site-packages)')
    c.add_argument('--seed', type=int, default=0, help='shuffle seed of the split by file')
    c.add_argument('--valid-fraction', type=float, default=0.02, help='fraction of the files held out for validation')
    c.add_argument('--max-file-bytes', type=int, default=1_000_000, help='larger files are skipped')
    c.add_argument('--vocab-size', type=int, default=32000, help='BPE vocabulary, special tokens included')
    c.add_argument('--tokenizer-bytes', type=int, default=64_000_000,
                   help='train the BPE on a prefix of the shuffled training files of about this size (0: all)')
    e = sub.add_parser('english', help='english-mix: public-domain books and speeches, Wikipedia and C4 text for validation, '
                                       'the T5 tokenizer')
    e.add_argument('out', type=Path, help='output folder')
    e.add_argument('--src', type=Path, required=True, help='folder with train.txt.xz, valid.txt.xz and t5-tokenizer.json')
    a = p.parse_args(argv)
    if a.kind == 'code' and not a.root.is_dir(): p.error(f"--root {a.root} is not a folder")
    t0 = time.perf_counter()
    if a.kind == 'code':
        info = build_code(a.out, a.root, a.seed, a.valid_fraction, a.max_file_bytes, a.vocab_size, a.tokenizer_bytes)
    else: info = build_english(a.out, a.src)
    seconds = time.perf_counter() - t0
    mb = sum(s['bytes'] for s in info['splits'].values()) / 1e6
    for name, s in info['splits'].items(): print(f"{name}: {', '.join(f'{k} {v:,}' for k, v in s.items())}")
    if 'skipped' in info: print('skipped files:', ', '.join(f'{k} {v:,}' for k, v in info['skipped'].items()))
    print(f'{a.out}: {mb:.1f} MB in {seconds:.1f} s ({mb / seconds:.1f} MB/s) on {os.cpu_count()} cores')
    return info


if __name__ == '__main__': main()
