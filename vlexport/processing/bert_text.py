"""BERT WordPiece text encoding without torch, shared by the families whose text side is BERT's.

Matches transformers' `BertTokenizerFast` (same `tokenizers` pipeline: BertNormalizer,
BertPreTokenizer, WordPiece, `[CLS] A [SEP] B [SEP]` template) including its padding/truncation
argument rules. Loads `tokenizer.json` (preferred) or `vocab.txt` from a model/artifact folder, and
otherwise the bert-base-uncased vocab embedded in vlexport, so it works offline. Family processors
(VisualBERT's, ViLT's) build on `BertTextProcessor`.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from vlexport.errors import ArtifactError, ConfigError, InputError
from vlexport.outputs import ModelOutput
from vlexport.processing.vocab import bert_uncased_vocab_path, load_vocab, tiny_vocab

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
# transformers' VERY_LARGE_INTEGER threshold: a model_max_length above it means "no limit"
_LARGE_INTEGER = int(1e20)
# hub ids whose tokenizer is the embedded vocab (accepted offline by from_pretrained)
_BERT_UNCASED_IDS = ("bert-base-uncased", "google-bert/bert-base-uncased")

_PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: "do_not_pad",
            "do_not_pad": "do_not_pad", None: "do_not_pad"}
_TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
               "only_second": "only_second", False: "do_not_truncate", "do_not_truncate": "do_not_truncate",
               None: "do_not_truncate"}


def _round_up(n, multiple):
    return n if not multiple or n % multiple == 0 else n + multiple - n % multiple


def _first_unencodable(x, name):
    """The name of the first str of text/text_pair that is not valid Unicode (a lone surrogate)."""
    if x is None:
        return None
    items = [(name, x)] if isinstance(x, str) else [
        (f"{name}[{i}]" + (f"[{j}]" if not isinstance(row, str) else ""), s)
        for i, row in enumerate(x) for j, s in enumerate([row] if isinstance(row, str) else row)]
    for where, s in items:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return where
    return None


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


class BertTextProcessor:
    """BERT WordPiece text processor (transformers' BertTokenizerFast rules); no torch needed.

    >>> proc = BertTextProcessor.from_pretrained(None)   # embedded bert-base-uncased vocab
    >>> batch = proc(["what color is the cat?", "how many dogs?"])
    >>> batch.input_ids.shape  # (2, T)
    """

    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    padding_side = "right"
    truncation_side = "right"
    # Resource bounds (raise them on the class or an instance to allow more). max_chars: the longest
    # str accepted as one text or text_pair entry; longer ones are refused with an InputError
    # (truncate them first). max_batch_tokens: the most token slots one call may produce (rows x
    # padded length, or the sum of lengths without padding), so that padding a large batch to one
    # long text, padding="max_length" with a huge max_length, or a huge pad_to_multiple_of is an
    # InputError instead of an allocation that kills the process (tokenizers aborts on OOM).
    max_chars = 100_000
    max_batch_tokens = 1 << 24
    _chunk_chars = 1 << 20  # texts are encoded a chunk of about this many characters at a time

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
        self._lock = threading.Lock()
        if vocab is not None:
            if not isinstance(vocab, dict):
                vocab = {tok: i for i, tok in enumerate(vocab)}
            self._tokenizer = _build_tokenizer(dict(vocab), do_lower_case, strip_accents, tokenize_chinese_chars)
        elif tokenizer_file is not None:
            path = Path(tokenizer_file)
            if not path.is_file():
                raise ArtifactError(f"tokenizer_file '{path}' does not exist; expected a tokenizers "
                                    f"tokenizer.json")
            try:
                self._tokenizer = Tokenizer.from_file(str(path))
            except Exception as exc:
                raise ArtifactError(f"tokenizer_file '{path}' is not a valid tokenizer.json: {exc}") from None
            self._tokenizer.no_padding()
            self._tokenizer.no_truncation()
            norm = json.loads(self._tokenizer.to_str()).get("normalizer") or {}
            if norm.get("type") == "BertNormalizer":
                self.do_lower_case = bool(norm.get("lowercase", True))
                self.strip_accents = norm.get("strip_accents")
                self.tokenize_chinese_chars = bool(norm.get("handle_chinese_chars", True))
            for tok in (PAD, UNK, CLS, SEP):
                if self._tokenizer.token_to_id(tok) is None:
                    raise ArtifactError(f"tokenizer_file '{path}' has no {tok} token; a BERT WordPiece "
                                        f"tokenizer with [PAD], [UNK], [CLS] and [SEP] was expected")
        else:
            path = Path(vocab_file) if vocab_file is not None else bert_uncased_vocab_path()
            if not path.is_file():
                raise ArtifactError(f"vocab_file '{path}' does not exist; expected a WordPiece vocab.txt "
                                    f"(one token a line)")
            self._tokenizer = _build_tokenizer(load_vocab(path), do_lower_case, strip_accents,
                                               tokenize_chinese_chars)

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
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._tokenizer.no_padding()
            self._tokenizer.no_truncation()
            tok_json = self._tokenizer.to_str(pretty=True)
        by_id = sorted(self._tokenizer.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
        ids = [i for _, i in by_id]
        if ids != list(range(len(ids))):
            raise ConfigError("save_pretrained: the vocabulary ids are not contiguous from 0; cannot write vocab.txt")
        specials = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS}
        if self._tokenizer.token_to_id(MASK) is not None:
            specials["mask_token"] = MASK
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.do_lower_case,
                  "strip_accents": self.strip_accents, "tokenize_chinese_chars": self.tokenize_chinese_chars,
                  "model_max_length": self.model_max_length, "padding_side": self.padding_side,
                  "truncation_side": self.truncation_side, "clean_up_tokenization_spaces": False,
                  "processor": f"vlexport.{type(self).__name__}", **specials}
        paths = (folder / "tokenizer.json", folder / "vocab.txt", folder / "tokenizer_config.json",
                 folder / "special_tokens_map.json")
        paths[0].write_text(tok_json, encoding="utf-8")
        paths[1].write_text("".join(tok + "\n" for tok, _ in by_id), encoding="utf-8")
        paths[2].write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        paths[3].write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")
        return tuple(str(p) for p in paths)

    # ----- vocabulary ------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer` (padding/truncation are set per call)."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self):
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    pad_token, unk_token, cls_token, sep_token, mask_token = PAD, UNK, CLS, SEP, MASK
    pad_token_type_id = 0

    @property
    def pad_token_id(self) -> int:
        return self._tokenizer.token_to_id(PAD)

    @property
    def unk_token_id(self) -> int:
        return self._tokenizer.token_to_id(UNK)

    @property
    def cls_token_id(self) -> int:
        return self._tokenizer.token_to_id(CLS)

    @property
    def sep_token_id(self) -> int:
        return self._tokenizer.token_to_id(SEP)

    @property
    def mask_token_id(self):
        return self._tokenizer.token_to_id(MASK)

    @property
    def all_special_ids(self) -> list:
        return [i for i in (self._tokenizer.token_to_id(t) for t in SPECIAL_TOKENS) if i is not None]

    def tokenize(self, text: str) -> list:
        """WordPiece tokens of `text`, without [CLS]/[SEP]."""
        if not isinstance(text, str):
            raise InputError(f"tokenize: text must be a str; got {type(text).__name__}")
        with self._lock:
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()
            return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            i = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if i is None else i
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, (int, np.integer)):
            return self._tokenizer.id_to_token(int(ids))
        return [self._tokenizer.id_to_token(int(i)) for i in ids]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of one sequence of ids (a list, 1-D array or tensor); [PAD]/[CLS]/[SEP] dropped by default."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        if ids and isinstance(ids[0], list):
            raise InputError(f"decode: expected one sequence of ids; got a batch of {len(ids)} (use batch_decode)")
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    # ----- encoding --------------------------------------------------------------------------
    def __call__(self, text=None, text_pair=None, padding=True, truncation=None, max_length=None,
                 return_tensors="np", pad_to_multiple_of=None):
        """Encode text: str, list[str], or (multiple choice) list of B lists of C strings (either of
        text / text_pair may be a list of B strings, repeated over the C choices) -> fields (B, C, T).
        padding: True/"longest" | "max_length" | False/"do_not_pad".
        truncation: True/"longest_first" | "only_first" | "only_second" | False/None (HF's rules: a bare
        max_length with padding=False turns on "longest_first"; without max_length truncation and
        padding="max_length" use model_max_length).
        return_tensors: "np" (default), "pt" (torch, imported lazily) or None (Python lists; a single
        text is then not batched, as in transformers).
        Returns a ModelOutput: input_ids, token_type_ids, attention_mask (int64).
        Bounds: a text (or text_pair entry) longer than `max_chars` characters, or a call producing more
        than `max_batch_tokens` token slots, is an InputError (both are attributes users may raise).
        """
        out, _, _ = self._encode(text, text_pair, padding, truncation, max_length, return_tensors, pad_to_multiple_of)
        return self._to_torch(out) if return_tensors == "pt" else out

    def _to_torch(self, out):
        from vlexport._deps import require

        torch = require("torch", f"{type(self).__name__}(return_tensors='pt')")
        for key, value in out.items():
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        return out

    def _encode(self, text, text_pair, padding, truncation, max_length, return_tensors, pad_to_multiple_of):
        """-> (ModelOutput of numpy/list text fields, examples, choices per example or 0)."""
        if return_tensors not in ("np", "pt", None):
            raise InputError(f"return_tensors must be 'np', 'pt' or None; got {return_tensors!r}")
        if text is None:
            raise InputError("text is required; got text=None")
        flat_a, flat_b, batched, choices = self._flatten_text(text, text_pair)
        n_examples = len(flat_a) // choices if choices else len(flat_a)

        strategy_pad, strategy_trunc, max_length = self._strategies(padding, truncation, max_length,
                                                                    pad_to_multiple_of)
        self._check_chars(text, "text")
        if text_pair is not None:
            self._check_chars(text_pair, "text_pair")
        inputs = list(zip(flat_a, flat_b)) if flat_b is not None else flat_a
        if strategy_pad == "max_length":
            target = _round_up(max_length, pad_to_multiple_of)
            self._check_budget(len(inputs) * target, f"max_length={max_length} pads {len(inputs)} row(s) to "
                                                     f"{target} tokens", "max_length")
        # Memory stays bounded by the output: texts are encoded in chunks without tokenizers' padding
        # (which allocates every padded slot as a full token and aborts the whole process when that
        # does not fit: padding="max_length", max_length=10**10 did), kept as compact int32 rows with
        # the budget checked as they come, and padded here exactly as tokenizers' pad_encodings does
        # (right side; pad id, type 0, mask 0; the target rounded up to pad_to_multiple_of; longer
        # rows left as they are).
        rows, type_rows, total = [], [], 0
        with self._lock:
            if strategy_trunc == "do_not_truncate":
                self._tokenizer.no_truncation()
            else:
                # clamped: tokenizers takes a usize (max_length=2**70 raised OverflowError); no text
                # within max_chars comes near 2**40 tokens, so this truncates exactly as asked
                self._tokenizer.enable_truncation(min(max_length, 1 << 40), stride=0, strategy=strategy_trunc,
                                                  direction=self.truncation_side)
            self._tokenizer.no_padding()
            for chunk in self._chunks(inputs):
                try:
                    encodings = self._tokenizer.encode_batch(chunk, add_special_tokens=True)
                except Exception as exc:  # tokenizers raises plain Exceptions for impossible truncations
                    bad = _first_unencodable(text, "text") or _first_unencodable(text_pair, "text_pair")
                    if bad:
                        raise InputError(f"{bad} is not valid Unicode text (it holds a lone surrogate) and "
                                         f"cannot be encoded") from None
                    raise InputError(f"text could not be encoded with truncation={truncation!r}, "
                                     f"max_length={max_length}: {exc}") from None
                for e in encodings:
                    rows.append(np.array(e.ids, dtype=np.int32))
                    type_rows.append(np.array(e.type_ids, dtype=np.int32))
                    total += len(rows[-1])
                del encodings
                self._check_budget(total, f"{len(inputs)} text(s) give at least {total} tokens", "text")
        lengths = [len(x) for x in rows]
        if max_length is None and self.model_max_length:
            longest = max(lengths, default=0)
            if longest > self.model_max_length:
                warnings.warn(f"Token indices sequence length is longer than the specified maximum sequence "
                              f"length for this model ({longest} > {self.model_max_length}). Running this "
                              f"sequence through the model will result in indexing errors", stacklevel=2)
        target = None
        if strategy_pad != "do_not_pad":
            target = _round_up(max_length if strategy_pad == "max_length" else max(lengths, default=0),
                               pad_to_multiple_of)
            self._check_budget(len(rows) * target, f"padding {len(rows)} row(s) to {target} tokens"
                               + (f" (pad_to_multiple_of={pad_to_multiple_of})" if pad_to_multiple_of else ""),
                               "pad_to_multiple_of" if pad_to_multiple_of and target > max(lengths) else "text")
        if target is not None and all(n <= target for n in lengths):
            fields = {"input_ids": np.full((len(rows), target), self.pad_token_id, np.int64),
                      "token_type_ids": np.full((len(rows), target), self.pad_token_type_id, np.int64),
                      "attention_mask": np.zeros((len(rows), target), np.int64)}
            for i, (r, t) in enumerate(zip(rows, type_rows)):
                fields["input_ids"][i, :len(r)] = r
                fields["token_type_ids"][i, :len(r)] = t
                fields["attention_mask"][i, :len(r)] = 1
        else:  # no padding, or padding="max_length" below some row's length: rows of their own lengths
            def pad(r, fill):
                return np.concatenate([r, np.full(max(0, (target or 0) - len(r)), fill, np.int32)])
            fields = {"input_ids": [pad(r, self.pad_token_id) for r in rows],
                      "token_type_ids": [pad(t, self.pad_token_type_id) for t in type_rows],
                      "attention_mask": [pad(np.ones(len(r), np.int32), 0) for r in rows]}
        del rows, type_rows
        ids = fields["input_ids"]

        out = ModelOutput()
        if return_tensors is None:
            for key, rows in fields.items():
                rows = [r.tolist() for r in rows]  # Python ints, as tokenizers gave them
                if choices:
                    rows = [rows[i * choices:(i + 1) * choices] for i in range(n_examples)]
                out[key] = rows if batched else rows[0]
        else:
            lengths = {len(x) for x in ids}
            if len(lengths) > 1:
                raise InputError(
                    f"text: cannot make a {return_tensors!r} tensor from sequences of different lengths "
                    f"{sorted(lengths)}; activate padding (padding=True or 'max_length') and/or truncation "
                    f"(truncation=True) to get batched tensors of one length, or use return_tensors=None")
            width = lengths.pop() if lengths else 0
            shape = (n_examples, choices, width) if choices else (len(ids), width)
            for key, rows in fields.items():
                if not isinstance(rows, np.ndarray):
                    rows = np.array(rows, dtype=np.int64).reshape(len(rows), width)
                out[key] = rows.reshape(shape)

        return out, n_examples, choices

    def _check_chars(self, x, name):
        """InputError naming the first str of text/text_pair longer than max_chars (bounds memory)."""
        limit = self.max_chars
        items = [(name, x)] if isinstance(x, str) else [
            (f"{name}[{i}]" + (f"[{j}]" if not isinstance(row, str) else ""), s)
            for i, row in enumerate(x) for j, s in enumerate([row] if isinstance(row, str) else row)]
        for where, s in items:
            if len(s) > limit:
                raise InputError(f"{where} has {len(s)} characters, more than the limit of {limit} per text "
                                 f"({type(self).__name__}.max_chars); shorten it, or raise max_chars on the "
                                 f"processor to allow longer texts")

    def _check_budget(self, slots, what, name):
        """InputError naming `name` when a call would produce more than max_batch_tokens token slots."""
        if slots > self.max_batch_tokens:
            raise InputError(f"{name}: {what}, more than the limit of {self.max_batch_tokens} token slots per "
                             f"call ({type(self).__name__}.max_batch_tokens); encode fewer or shorter texts per "
                             f"call, or raise max_batch_tokens on the processor")

    def _chunks(self, inputs):
        start, chars = 0, 0
        for i, item in enumerate(inputs):
            chars += len(item) if isinstance(item, str) else len(item[0]) + len(item[1])
            if chars >= self._chunk_chars:
                yield inputs[start:i + 1]
                start, chars = i + 1, 0
        if start < len(inputs):
            yield inputs[start:]

    def _flatten_text(self, text, text_pair):
        """-> (flat texts, flat pairs or None, batched?, choices per example or 0)."""
        def kind(x, name):
            if isinstance(x, str):
                return "str"
            if isinstance(x, (list, tuple)):
                if len(x) == 0:
                    raise InputError(f"{name} is an empty list; expected at least one string")
                if all(isinstance(t, str) for t in x):
                    return "list"
                if all(isinstance(t, (list, tuple)) and all(isinstance(s, str) for s in t) for t in x):
                    return "nested"
            raise InputError(f"{name} must be a str, a list of str, or a list of lists of str (multiple "
                             f"choice); got {type(x).__name__}"
                             + (f" containing {sorted({type(t).__name__ for t in x})}" if isinstance(x, (list, tuple)) else ""))

        ka = kind(text, "text")
        kb = kind(text_pair, "text_pair") if text_pair is not None else None
        if ka == "str":
            if kb not in (None, "str"):
                raise InputError(f"text is a single str, so text_pair must be a str too; got a {type(text_pair).__name__}")
            # as transformers: an empty text_pair for a single text means no pair
            return [text], ([text_pair] if text_pair else None), False, 0
        if kb == "str":
            raise InputError("when text is a batch (list), text_pair must be a list of the same length; got a str")
        if "nested" not in (ka, kb):
            if kb is not None and len(text) != len(text_pair):
                raise InputError(f"batch length of text ({len(text)}) does not match batch length of "
                                 f"text_pair ({len(text_pair)})")
            return list(text), (list(text_pair) if kb else None), True, 0
        # multiple choice: B examples x C choices
        nested = text if ka == "nested" else text_pair
        n = len(nested)
        counts = {len(row) for row in nested}
        if len(counts) != 1 or 0 in counts:
            raise InputError(f"multiple-choice text must give every example the same, non-zero number of "
                             f"choices; got choice counts {sorted(len(r) for r in nested)}")
        c = counts.pop()

        def expand(x, k, name):
            if k == "list":
                if len(x) != n:
                    raise InputError(f"{name} has {len(x)} entries; the multiple-choice batch has {n} examples")
                return [s for s in x for _ in range(c)]
            if len(x) != n or any(len(row) != c for row in x):
                raise InputError(f"{name} must have shape ({n}, {c}) like the other multiple-choice input; got "
                                 f"{len(x)} examples with choice counts {sorted({len(r) for r in x})}")
            return [s for row in x for s in row]

        return (expand(text, ka, "text"), expand(text_pair, kb, "text_pair") if kb else None, True, c)

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of):
        """transformers' _get_padding_truncation_strategies, for right-padded BERT."""
        if max_length is not None:
            if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
                raise InputError(f"max_length must be a positive int or None; got {max_length!r}")
            max_length = int(max_length)
        if pad_to_multiple_of is not None and (isinstance(pad_to_multiple_of, bool)
                                               or not isinstance(pad_to_multiple_of, (int, np.integer))
                                               or pad_to_multiple_of < 1):
            raise InputError(f"pad_to_multiple_of must be a positive int or None; got {pad_to_multiple_of!r}")
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # HF: a bare max_length truncates
        try:
            pad = _PADDING[padding]
        except (KeyError, TypeError):
            raise InputError(f"padding must be True/'longest', 'max_length' or False/'do_not_pad'; "
                             f"got {padding!r}") from None
        try:
            trunc = _TRUNCATION[truncation]
        except (KeyError, TypeError):
            raise InputError(f"truncation must be True/'longest_first', 'only_first', 'only_second' or "
                             f"False/None; got {truncation!r}") from None
        if pad == "longest" and max_length is not None and trunc == "do_not_truncate":
            warnings.warn("`max_length` is ignored when `padding`=`True` and there is no truncation strategy. "
                          "To pad to max length, use `padding='max_length'`.", stacklevel=3)
        if max_length is None:
            unlimited = self.model_max_length > _LARGE_INTEGER
            if pad == "max_length":
                if unlimited:
                    pad = "do_not_pad"
                else:
                    max_length = self.model_max_length
            if trunc != "do_not_truncate":
                if unlimited:
                    trunc = "do_not_truncate"
                else:
                    max_length = self.model_max_length
        if (trunc != "do_not_truncate" and pad != "do_not_pad" and pad_to_multiple_of is not None
                and max_length is not None and max_length % pad_to_multiple_of != 0):
            raise InputError(f"truncation and padding are both on, but the truncation length ({max_length}) is "
                             f"not a multiple of pad_to_multiple_of ({pad_to_multiple_of})")
        return pad, trunc, max_length

    def __repr__(self):
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"model_max_length={self.model_max_length})")
