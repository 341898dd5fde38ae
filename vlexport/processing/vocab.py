"""WordPiece vocabularies: the embedded bert-base-uncased vocab and the tiny built-in model's subset.

No torch, no transformers; only the standard library.
"""

from __future__ import annotations

import collections
import functools
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# The bert-base-uncased vocab's whole words start here ("the"), roughly in frequency order.
_BERT_WORDS_START = 1996
TINY_WORD_COUNT = 1000


def bert_uncased_vocab_path() -> Path:
    """The bert-base-uncased WordPiece vocab shipped inside vlexport (30522 lines, one token a line)."""
    return Path(__file__).resolve().parent.parent / "data" / "bert-base-uncased-vocab.txt"


def load_vocab(vocab_file) -> "collections.OrderedDict[str, int]":
    """Read a vocab.txt into token -> id, exactly as transformers' `load_vocab` does (line n -> id n;
    a repeated token keeps its last line's id)."""
    vocab = collections.OrderedDict()
    with open(vocab_file, "r", encoding="utf-8") as reader:
        tokens = reader.readlines()
    for index, token in enumerate(tokens):
        vocab[token.rstrip("\n")] = index
    return vocab


@functools.lru_cache(maxsize=None)
def _bert_tokens() -> tuple:
    with open(bert_uncased_vocab_path(), "r", encoding="utf-8") as reader:
        return tuple(line.rstrip("\n") for line in reader.readlines())


@functools.lru_cache(maxsize=1)
def _tiny_vocab() -> tuple:
    tokens = _bert_tokens()
    out = list(SPECIAL_TOKENS)
    seen = set(out)

    def add(tok):
        if tok not in seen:
            seen.add(tok)
            out.append(tok)

    def is_placeholder(tok):
        return tok.startswith("[") and tok.endswith("]") and len(tok) > 2

    # every single character, then every continuation "##c": alphanumeric text never needs [UNK]
    for tok in tokens:
        if len(tok) == 1:
            add(tok)
    for tok in tokens:
        if len(tok) == 3 and tok.startswith("##"):
            add(tok)
    words = 0
    for tok in tokens[_BERT_WORDS_START:]:
        if words >= TINY_WORD_COUNT:
            break
        if len(tok) > 1 and not tok.startswith("##") and not is_placeholder(tok) and tok not in seen:
            add(tok)
            words += 1
    return tuple(out)


def tiny_vocab() -> list[str]:
    """A small deterministic WordPiece vocab (about 3k tokens) for the tiny built-in model.

    [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4; then every single-character token of the
    bert-base-uncased vocab, every '##' + single character, and its first 1000 whole words. Any
    alphanumeric word (up to WordPiece's 100-character limit) tokenizes without [UNK].
    Returns a fresh list each call (the cached copy is immutable).
    """
    return list(_tiny_vocab())
