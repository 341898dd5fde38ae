"""VisualBERT's processor: BERT WordPiece text encoding plus visual-embedding packing, without torch.

The VisualBERT checkpoints ship no tokenizer; they were trained with bert-base-uncased. The processor
loads `tokenizer.json` (preferred) or `vocab.txt` from a model/artifact folder when there is one, and
otherwise the bert-base-uncased vocab embedded in vlexport, so it works offline.

Text encoding matches transformers' `BertTokenizerFast` (same `tokenizers` pipeline: BertNormalizer,
BertPreTokenizer, WordPiece, `[CLS] A [SEP] B [SEP]` template) including its padding/truncation
argument rules. Visual inputs are packed the way VisualBERT's forward expects them:
`visual_embeds` (B, V, D) float32, `visual_attention_mask` (B, V) int64 and
`visual_token_type_ids` (B, V) int64 (ones, VisualBERT's default).
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
from vlexport.families.visual_bert.regions import pack_visual
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


class VisualBertProcessor:
    """Text (BERT WordPiece) + visual-embedding processor for VisualBERT models; no torch needed.

    >>> proc = VisualBertProcessor.from_pretrained(None)   # embedded bert-base-uncased vocab
    >>> batch = proc(["what color is the cat?", "how many dogs?"], visual_embeds=[feats_a, feats_b])
    >>> batch.input_ids.shape, batch.visual_embeds.shape  # (2, T), (2, Vmax, D)
    """

    model_input_names = ["input_ids", "token_type_ids", "attention_mask", "visual_embeds",
                         "visual_token_type_ids", "visual_attention_mask"]
    padding_side = "right"
    truncation_side = "right"

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
    def from_pretrained(cls, folder=None, **kwargs) -> "VisualBertProcessor":
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
    def tiny(cls, **kwargs) -> "VisualBertProcessor":
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
                  "processor": "vlexport.VisualBertProcessor", **specials}
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
    def __call__(self, text=None, text_pair=None, visual_embeds=None, padding=True, truncation=None,
                 max_length=None, return_tensors="np", visual_attention_mask=None, pad_to_multiple_of=None):
        """Encode text (and optionally pack visual features) for a VisualBERT model.

        text / text_pair: str, list[str], or (multiple choice) list of B lists of C strings (either may
        be a list of B strings, repeated over the C choices) -> text fields of shape (B, C, T).
        padding: True/"longest" | "max_length" | False/"do_not_pad".
        truncation: True/"longest_first" | "only_first" | "only_second" | False/None (HF's rules: a bare
        max_length with padding=False turns on "longest_first"; without max_length truncation and
        padding="max_length" use model_max_length).
        return_tensors: "np" (default), "pt" (torch, imported lazily) or None (Python lists; a single
        text is then not batched, as in transformers; visual fields stay numpy).
        visual_embeds: (V, D) for one text, (B, V, D), or a list of B (V_i, D) arrays (zero-padded to
        the longest); for multiple choice also (B, C, V, D). visual_attention_mask: optional, (B, V) or
        a list of B (V_i,) arrays; default ones over the real regions.
        Returns a ModelOutput: input_ids, token_type_ids, attention_mask (int64) and, with visual_embeds,
        visual_embeds (float32), visual_token_type_ids and visual_attention_mask (int64).
        """
        if return_tensors not in ("np", "pt", None):
            raise InputError(f"return_tensors must be 'np', 'pt' or None; got {return_tensors!r}")
        if text is None:
            raise InputError("text is required: VisualBERT needs a text (question, caption or statement) "
                             "with its visual features; got text=None")
        flat_a, flat_b, batched, choices = self._flatten_text(text, text_pair)
        n_examples = len(flat_a) // choices if choices else len(flat_a)

        strategy_pad, strategy_trunc, max_length = self._strategies(padding, truncation, max_length,
                                                                    pad_to_multiple_of)
        inputs = list(zip(flat_a, flat_b)) if flat_b is not None else flat_a
        with self._lock:
            if strategy_trunc == "do_not_truncate":
                self._tokenizer.no_truncation()
            else:
                self._tokenizer.enable_truncation(max_length, stride=0, strategy=strategy_trunc,
                                                  direction=self.truncation_side)
            if strategy_pad == "do_not_pad":
                self._tokenizer.no_padding()
            else:
                self._tokenizer.enable_padding(
                    direction=self.padding_side, pad_id=self.pad_token_id, pad_type_id=self.pad_token_type_id,
                    pad_token=PAD, length=max_length if strategy_pad == "max_length" else None,
                    pad_to_multiple_of=pad_to_multiple_of)
            try:
                encodings = self._tokenizer.encode_batch(inputs, add_special_tokens=True)
            except Exception as exc:  # tokenizers raises plain Exceptions for impossible truncations
                raise InputError(f"text could not be encoded with truncation={truncation!r}, "
                                 f"max_length={max_length}: {exc}") from None
        ids = [e.ids for e in encodings]
        if max_length is None and self.model_max_length:
            longest = max((len(x) for x in ids), default=0)
            if longest > self.model_max_length:
                warnings.warn(f"Token indices sequence length is longer than the specified maximum sequence "
                              f"length for this model ({longest} > {self.model_max_length}). Running this "
                              f"sequence through the model will result in indexing errors", stacklevel=2)
        fields = {"input_ids": ids, "token_type_ids": [e.type_ids for e in encodings],
                  "attention_mask": [e.attention_mask for e in encodings]}

        out = ModelOutput()
        if return_tensors is None:
            for key, rows in fields.items():
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
                out[key] = np.asarray(rows, dtype=np.int64).reshape(shape)

        if visual_embeds is not None:
            emb, mask = pack_visual(visual_embeds, visual_attention_mask, n_examples, choices)
            out["visual_embeds"] = emb
            out["visual_token_type_ids"] = np.ones(mask.shape, dtype=np.int64)
            out["visual_attention_mask"] = mask
        elif visual_attention_mask is not None:
            raise InputError("visual_attention_mask was given without visual_embeds; pass both or neither")

        if return_tensors == "pt":
            from vlexport._deps import require

            torch = require("torch", "VisualBertProcessor(return_tensors='pt')")
            for key, value in out.items():
                out[key] = torch.from_numpy(np.ascontiguousarray(value))
        return out

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
        return (f"VisualBertProcessor(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"model_max_length={self.model_max_length})")
