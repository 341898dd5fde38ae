"""BERT WordPiece text encoding without torch, shared by the families whose text side is BERT's.

`BertTextProcessor` is the `TextProcessor` (vlexport.processing.text: transformers' padding/truncation
rules, bounded-memory chunked encoding, thread safety) of a BERT WordPiece tokenizer. What it adds is
BERT-specific: the tokenizer can be built from a vocab.txt, a token list or the bert-base-uncased vocab
embedded in vlexport (so it works offline), with transformers' BertTokenizerFast pipeline (BertNormalizer
with do_lower_case / strip_accents / tokenize_chinese_chars, BertPreTokenizer, WordPiece,
`[CLS] A [SEP] B [SEP]`); a folder's tokenizer.json is used as it is; `tiny()`; and save_pretrained
writes vocab.txt too. Family processors with a BERT text side build on it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from vlexport.errors import ArtifactError, ConfigError
from vlexport.processing.text import TextProcessor
# moved to vlexport.processing.text; still importable from here
from vlexport.processing.text import _LARGE_INTEGER, _PADDING, _TRUNCATION, _first_unencodable, _round_up  # noqa: F401
from vlexport.processing.vocab import bert_uncased_vocab_path, load_vocab, tiny_vocab

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
# hub ids whose tokenizer is the embedded vocab (accepted offline by from_pretrained)
_BERT_UNCASED_IDS = ("bert-base-uncased", "google-bert/bert-base-uncased")


def _build_tokenizer(vocab: dict, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True) -> Tokenizer:
    """The same `tokenizers` pipeline as transformers' BertTokenizer(Fast)."""
    for tok in (PAD, UNK, CLS, SEP):
        if tok not in vocab:
            raise ConfigError(f"the WordPiece vocab must contain the special token {tok}; it has "
                              f"{len(vocab)} tokens and not that one")
    tokenizer = Tokenizer(WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                                      strip_accents=strip_accents, lowercase=do_lower_case)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    # as transformers does: the special tokens are added tokens, matched verbatim in the text
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False,
                                             single_word=False) for t in SPECIAL_TOKENS if t in vocab])
    return tokenizer


class BertTextProcessor(TextProcessor):
    """BERT WordPiece text processor (transformers' BertTokenizerFast rules); no torch needed.

    >>> proc = BertTextProcessor.from_pretrained(None)   # embedded bert-base-uncased vocab
    >>> batch = proc(["what color is the cat?", "how many dogs?"])
    >>> batch.input_ids.shape  # (2, T)
    """

    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    tokenizer_class = "BertTokenizer"
    # the special tokens are BERT's fixed ones (class attributes: a vocab without [MASK] still names it)
    pad_token, unk_token, cls_token, sep_token, mask_token = PAD, UNK, CLS, SEP, MASK
    pad_token_type_id = 0

    def __init__(self, vocab_file=None, tokenizer_file=None, do_lower_case: bool = True,
                 model_max_length: int = 512, *, vocab=None, strip_accents=None,
                 tokenize_chinese_chars: bool = True):
        """vocab_file: a vocab.txt; tokenizer_file: a tokenizer.json (wins over vocab_file); vocab: a
        token list or token->id dict (wins over both); none of them: the embedded bert-base-uncased vocab.
        do_lower_case / strip_accents / tokenize_chinese_chars apply when building from a vocab (a
        tokenizer.json carries its own normalizer)."""
        self.model_max_length = int(model_max_length)
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        if vocab is not None:
            if not isinstance(vocab, dict):
                vocab = {tok: i for i, tok in enumerate(vocab)}
            tokenizer = _build_tokenizer(dict(vocab), do_lower_case, strip_accents, tokenize_chinese_chars)
        elif tokenizer_file is not None:
            path = Path(tokenizer_file)
            if not path.is_file():
                raise ArtifactError(f"tokenizer_file '{path}' does not exist; expected a tokenizers "
                                    f"tokenizer.json")
            try:
                tokenizer = Tokenizer.from_file(str(path))
            except Exception as exc:
                raise ArtifactError(f"tokenizer_file '{path}' is not a valid tokenizer.json: {exc}") from None
            norm = json.loads(tokenizer.to_str()).get("normalizer") or {}
            if norm.get("type") == "BertNormalizer":
                self.do_lower_case = bool(norm.get("lowercase", True))
                self.strip_accents = norm.get("strip_accents")
                self.tokenize_chinese_chars = bool(norm.get("handle_chinese_chars", True))
            for tok in (PAD, UNK, CLS, SEP):
                if tokenizer.token_to_id(tok) is None:
                    raise ArtifactError(f"tokenizer_file '{path}' has no {tok} token; a BERT WordPiece "
                                        f"tokenizer with [PAD], [UNK], [CLS] and [SEP] was expected")
        else:
            path = Path(vocab_file) if vocab_file is not None else bert_uncased_vocab_path()
            if not path.is_file():
                raise ArtifactError(f"vocab_file '{path}' does not exist; expected a WordPiece vocab.txt "
                                    f"(one token a line)")
            tokenizer = _build_tokenizer(load_vocab(path), do_lower_case, strip_accents, tokenize_chinese_chars)
        super().__init__(tokenizer, model_max_length=self.model_max_length)

    # ----- construction / saving -------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder=None, **kwargs) -> "BertTextProcessor":
        """Load from a model or artifact folder: its tokenizer.json, else its vocab.txt, else (and for
        folder=None or 'bert-base-uncased') the embedded bert-base-uncased vocab. A tokenizer_config.json
        there supplies do_lower_case, model_max_length, strip_accents, tokenize_chinese_chars."""
        if folder is None or str(folder) in _BERT_UNCASED_IDS:
            return cls(**kwargs)
        folder = Path(folder)
        if not folder.is_dir():
            raise ArtifactError(f"from_pretrained: '{folder}' is not a folder; expected a model/artifact folder "
                                f"(with tokenizer.json or vocab.txt), None, or 'bert-base-uncased'")
        opts = {}
        cfg_path = folder / "tokenizer_config.json"
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ArtifactError(f"'{cfg_path}' is not valid JSON: {exc}") from None
            for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
                if key in cfg:
                    opts[key] = cfg[key]
            if isinstance(cfg.get("model_max_length"), (int, float)):
                opts["model_max_length"] = int(cfg["model_max_length"])
        opts.update(kwargs)
        if (folder / "tokenizer.json").is_file():
            return cls(tokenizer_file=folder / "tokenizer.json", **opts)
        if (folder / "vocab.txt").is_file():
            return cls(vocab_file=folder / "vocab.txt", **opts)
        return cls(**opts)

    @classmethod
    def tiny(cls, **kwargs) -> "BertTextProcessor":
        """The processor of the tiny built-in model (vocab: `vlexport.processing.vocab.tiny_vocab()`)."""
        kwargs.setdefault("model_max_length", 64)
        return cls(vocab=tiny_vocab(), **kwargs)

    def save_pretrained(self, folder) -> tuple:
        """Write tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json (readable by
        this class and by transformers' BertTokenizerFast.from_pretrained). Returns the written paths."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        by_id = sorted(self._tokenizer.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ConfigError("save_pretrained: the vocabulary ids are not contiguous from 0; cannot write vocab.txt")
        tok_path, cfg_path, map_path = super().save_pretrained(folder)
        vocab_path = Path(folder) / "vocab.txt"
        vocab_path.write_text("".join(tok + "\n" for tok, _ in by_id), encoding="utf-8")
        return tok_path, str(vocab_path), cfg_path, map_path

    def _config_to_save(self):
        specials = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS}
        if self._tokenizer.token_to_id(MASK) is not None:
            specials["mask_token"] = MASK
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.do_lower_case,
                  "strip_accents": self.strip_accents, "tokenize_chinese_chars": self.tokenize_chinese_chars,
                  "model_max_length": self.model_max_length, "padding_side": self.padding_side,
                  "truncation_side": self.truncation_side, "clean_up_tokenization_spaces": False,
                  "processor": f"vlexport.{type(self).__name__}", **specials}
        return config, specials

    # ----- where BERT's processor keeps its own conventions ----------------------------------
    @property
    def all_special_ids(self) -> list:
        return [i for i in (self._tokenizer.token_to_id(t) for t in SPECIAL_TOKENS) if i is not None]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of one sequence of ids (a list, 1-D array or tensor); [PAD]/[CLS]/[SEP] dropped by default."""
        return super().decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list:
        return super().batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    def __repr__(self):
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"model_max_length={self.model_max_length})")
