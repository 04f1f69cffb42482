"""Build the embedded corpus and tokenizer shipped in `elas_nb/assets/` (run from the repository root).

    python data/build_assets.py

Inputs: `data/botchan.txt` (Project Gutenberg eBook #8868, as found in the sentencepiece 0.2.3 sdist) and the
running Python's `pydoc_data.topics` (PSF License). Outputs, all in `elas_nb/assets/`:
`embedded_train.jsonl`, `embedded_valid.jsonl` (one JSON document per line: text, source, title),
`tokenizer.json` (byte-level BPE trained on the train split only) and `LICENSE-PSF.txt`.
The split is fixed: Botchan's last chapter and every 8th pydoc topic (sorted by name) are validation.
See data/README.md for the sources and licenses.
"""
import json, re, sys, sysconfig
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT/'elas_nb'/'assets'
VOCAB_SIZE = 4096
SPECIALS = ['<pad>', '</s>']  # ids 0 and 1, the same ids as the T5 tokenizer's pad and end-of-sequence
VALID_EVERY = 8  # every 8th pydoc topic goes to validation


def botchan_chapters(path=ROOT/'data'/'botchan.txt'):
    "The book's text without any Project Gutenberg header, footer, license or reference, split into chapters."
    raw = path.read_text(encoding='utf-8-sig').replace('\r\n', '\n')
    # The book starts at its own title page and ends at "--(THE END)--"; the transcriber's typo notes after
    # it, the header with the eBook number and producer credit before it, and the PG license are dropped.
    start, end = raw.index('BOTCHAN (MASTER DARLING)\n'), raw.index('--(THE END)--') + len('--(THE END)--')
    body = raw[start:end]
    if 'gutenberg' in body.lower(): raise ValueError('a Project Gutenberg reference is left in the text')
    parts = re.split(r'\n(?=CHAPTER [IVX]+\.?\n)', body)
    return [('Botchan: front matter' if i == 0 else 'Botchan: ' + p.split('\n', 1)[0].rstrip('.'), p.strip())
            for i, p in enumerate(parts)]


def pydoc_topics():
    "Python's help topics (the language reference, as plain text), sorted by name."
    from pydoc_data.topics import topics
    return [(f'pydoc: {k}', topics[k].strip()) for k in sorted(topics)]


def split_documents():
    "The fixed train/validation split: Botchan's last chapter and every 8th pydoc topic are held out."
    chapters, topics = botchan_chapters(), pydoc_topics()
    doc = lambda src, title, text: dict(text=text, source=src, title=title)
    train = [doc('botchan', t, x) for t, x in chapters[:-1]]
    valid = [doc('botchan', *chapters[-1])]
    for i, (t, x) in enumerate(topics):
        (valid if i % VALID_EVERY == VALID_EVERY - 1 else train).append(doc('pydoc_data.topics', t, x))
    return train, valid


def train_tokenizer(texts, vocab_size=VOCAB_SIZE):
    "A byte-level BPE (GPT-2 style); `elas_nb.data` appends `</s>` to every document itself."
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def write_jsonl(docs, path):
    path.write_text(''.join(json.dumps(d, ensure_ascii=False) + '\n' for d in docs), encoding='utf-8')


def psf_license():
    "The license file of the Python whose `pydoc_data` was read (PSF License Version 2 and its history)."
    return (Path(sysconfig.get_path('stdlib'))/'LICENSE.txt').read_text(encoding='utf-8')


def main():
    ASSETS.mkdir(parents=True, exist_ok=True)
    train, valid = split_documents()
    write_jsonl(train, ASSETS/'embedded_train.jsonl')
    write_jsonl(valid, ASSETS/'embedded_valid.jsonl')
    tok = train_tokenizer([d['text'] for d in train])
    tok.save(str(ASSETS/'tokenizer.json'))
    (ASSETS/'LICENSE-PSF.txt').write_text(psf_license(), encoding='utf-8')
    count = lambda docs: sum(len(e.ids) for e in tok.encode_batch([d['text'] for d in docs]))
    print(f'Python {sys.version.split()[0]}: {len(train)} train / {len(valid)} valid documents, '
          f'{count(train):,} / {count(valid):,} tokens, vocab {tok.get_vocab_size()}')


if __name__ == '__main__': main()
