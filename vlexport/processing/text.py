"""Torch-free text processor for any `tokenizer.json` folder, matching transformers' fast tokenizers.

What: `TextProcessor` loads a folder's tokenizer.json (WordPiece, byte-level BPE, ...) with the
`tokenizers` library, plus tokenizer_config.json / special_tokens_map.json, and encodes text the way
`transformers.AutoTokenizer.from_pretrained(folder)` does: the same padding/truncation argument rules,
the same keys (`model_input_names`), the same ids, int64 arrays. Why: artifacts are fed at runtime
without torch or transformers, and a family's text tower may be BERT, RoBERTa or CLIP.
`BertTextProcessor` (bert_text.py) is the WordPiece-from-vocab.txt subclass.

How transformers is matched:
- transformers rebuilds the pipeline of a known tokenizer class from its options, whatever the
  tokenizer.json holds (BertTokenizer lowercases unless do_lower_case=false, RobertaTokenizer takes
  add_prefix_space from the config and drops the json's normalizer). `_CLASSES` does the same for the
  classes it lists; any other class (PreTrainedTokenizerFast, TokenizersBackend, unknown) uses the
  tokenizer.json as it is, as transformers does for the generic class.
- special tokens: keyword arguments, then special_tokens_map.json (read only when tokenizer_config.json
  has no added_tokens_decoder, as transformers does), then tokenizer_config.json, then class defaults.
- model_input_names: tokenizer_config.json's, else the class's (table below), else transformers' base
  default `input_ids, attention_mask`. padding_side/truncation_side: the config's, else the direction
  baked into tokenizer.json's padding/truncation, else right. model_max_length: the config's, else
  unlimited (transformers' VERY_LARGE_INTEGER). pad_token_type_id is 0 (transformers ignores the json's).
Deliberate differences: a special token missing from the vocab is a ConfigError (transformers appends
it as a new id, past the model's embedding table); a ragged batch with return_tensors "np"/"pt" is an
InputError (transformers makes object arrays); padding defaults to True (models need arrays).
Memory is bounded: texts over `max_chars` and calls over `max_batch_tokens` token slots are InputErrors,
and texts are encoded a chunk at a time, unpadded, then padded here.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer

from vlexport.errors import ArtifactError, ConfigError, InputError
from vlexport.outputs import ModelOutput
from vlexport.processing.tokenizer_classes import _MODEL_TYPES, DEFAULT_INPUT_NAMES, _known_class

# transformers' LARGE_INTEGER (a model_max_length above it means "no limit") and its default limit
_LARGE_INTEGER = int(1e20)
_NO_LIMIT = int(1e30)
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

_PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: "do_not_pad",
            "do_not_pad": "do_not_pad", None: "do_not_pad"}
_TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
               "only_second": "only_second", False: "do_not_truncate", "do_not_truncate": "do_not_truncate",
               None: "do_not_truncate"}


def _round_up(n, multiple):
    return n if not multiple or n % multiple == 0 else n + multiple - n % multiple


def _named_texts(x, name):
    """(where, str) for every str of a text/text_pair argument (str, list, or list of lists)."""
    if isinstance(x, str):
        return [(name, x)]
    return [(f"{name}[{i}]" + (f"[{j}]" if not isinstance(row, str) else ""), s)
            for i, row in enumerate(x) for j, s in enumerate([row] if isinstance(row, str) else row)]


def _first_unencodable(x, name):
    """The name of the first str of text/text_pair that is not valid Unicode (a lone surrogate)."""
    if x is None:
        return None
    for where, s in _named_texts(x, name):
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return where
    return None


def _clean_up_tokenization(text):
    """transformers' clean_up_tokenization (clean_up_tokenization_spaces=True, non-BPE models)."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


def _read_json(path, what):
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"'{path}' is not valid JSON ({what}): {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"'{path}' must hold a JSON object ({what}); it holds a {type(data).__name__}")
    return data


def _token_str(value, key, where):
    """A special token given as a str, an AddedToken, or an AddedToken-style dict {"content": ...}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, AddedToken):
        return value.content
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ConfigError(f"{key} in {where} must be a string or an object with a \"content\" string; got {value!r}")


class TextProcessor:
    """Text processor for any tokenizers `tokenizer.json` (transformers' fast-tokenizer rules); no torch needed.

    >>> proc = TextProcessor.from_pretrained("path/to/roberta_or_bert_folder")
    >>> batch = proc(["a photo of a cat", "two dogs"])   # ModelOutput of int64 arrays
    >>> batch.input_ids.shape  # (2, T)
    """

    model_input_names = list(DEFAULT_INPUT_NAMES)
    padding_side = "right"
    truncation_side = "right"
    model_max_length = _NO_LIMIT
    pad_token_type_id = 0
    clean_up_tokenization_spaces = False
    tokenizer_class = None
    bos_token = eos_token = unk_token = sep_token = pad_token = cls_token = mask_token = None
    # Resource bounds (raise them on the class or an instance to allow more). max_chars: the longest
    # str accepted as one text or text_pair entry; longer ones are refused with an InputError
    # (truncate them first). max_batch_tokens: the most token slots one call may produce (rows x
    # padded length, or the sum of lengths without padding), so that padding a large batch to one
    # long text, padding="max_length" with a huge max_length, or a huge pad_to_multiple_of is an
    # InputError instead of an allocation that kills the process (tokenizers aborts on OOM).
    max_chars = 100_000
    max_batch_tokens = 1 << 24
    _chunk_chars = 1 << 20  # texts are encoded a chunk of about this many characters at a time
    _decode_fix = None

    def __init__(self, tokenizer, *, model_max_length=None, padding_side=None, truncation_side=None,
                 model_input_names=None, clean_up_tokenization_spaces=None, tokenizer_class=None,
                 extra_special_tokens=(), init_options=None, **special_tokens):
        """tokenizer: a `tokenizers.Tokenizer` or the path of a tokenizer.json (used as it is; use
        from_pretrained for a folder with its config). special_tokens: bos_token, eos_token, unk_token,
        sep_token, pad_token, cls_token, mask_token (str); each must be in the vocabulary. Arguments left
        None keep the class defaults (right padding/truncation, no length limit, input_ids+attention_mask)."""
        unknown = sorted(set(special_tokens) - set(SPECIAL_TOKEN_KEYS))
        if unknown:
            raise ConfigError(f"unknown TextProcessor option(s) {unknown}; special tokens are {list(SPECIAL_TOKEN_KEYS)}")
        if not isinstance(tokenizer, Tokenizer):
            path = Path(tokenizer)
            if not path.is_file():
                raise ArtifactError(f"tokenizer '{path}' does not exist; expected a tokenizers tokenizer.json")
            try:
                tokenizer = Tokenizer.from_file(str(path))
            except Exception as exc:
                raise ArtifactError(f"'{path}' is not a valid tokenizer.json: {exc}") from None
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._lock = threading.Lock()
        for key, value in special_tokens.items():
            if value is not None:
                value = _token_str(value, key, "the arguments")
                if tokenizer.token_to_id(value) is None:
                    raise ConfigError(f"{key} {value!r} is not in the tokenizer's vocabulary ({len(self)} tokens); "
                                      f"name a token of the vocabulary (transformers would append it as a new id, "
                                      f"past the model's embedding table)")
                setattr(self, key, value)
        self.extra_special_tokens = [_token_str(t, "extra_special_tokens", "the arguments") for t in extra_special_tokens]
        for side, name in ((padding_side, "padding_side"), (truncation_side, "truncation_side")):
            if side is not None:
                if side not in ("right", "left"):
                    raise ConfigError(f"{name} must be 'right' or 'left'; got {side!r}")
                setattr(self, name, side)
        if model_input_names is not None:
            names = list(model_input_names)
            if not names or not all(isinstance(n, str) for n in names) or "input_ids" not in names:
                raise ConfigError(f"model_input_names must be a list of str with 'input_ids'; got {model_input_names!r}")
            self.model_input_names = names
        if model_max_length is not None:
            if isinstance(model_max_length, bool) or not isinstance(model_max_length, (int, float)) or model_max_length < 1:
                raise ConfigError(f"model_max_length must be a positive number; got {model_max_length!r}")
            self.model_max_length = int(model_max_length)
        if clean_up_tokenization_spaces is not None:
            self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        if tokenizer_class is not None:
            self.tokenizer_class = str(tokenizer_class)
            self._decode_fix = getattr(_known_class(self.tokenizer_class), "decode_fix", None)
        self.init_options = dict(init_options or {})

    # ----- construction / saving -------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder, **kwargs) -> "TextProcessor":
        """Load a model or artifact folder's tokenizer.json with its tokenizer_config.json and
        special_tokens_map.json, as transformers' AutoTokenizer does. kwargs override the config
        (model_max_length, padding_side, pad_token, do_lower_case, add_prefix_space, ...)."""
        folder = Path(folder) if folder is not None else None
        if folder is None or not folder.is_dir():
            raise ArtifactError(f"from_pretrained: '{folder}' is not a folder; expected a model/artifact folder "
                                f"with a tokenizer.json")
        tok_path = folder / "tokenizer.json"
        if not tok_path.is_file():
            raise ArtifactError(f"'{folder}' has no tokenizer.json; a TextProcessor needs the tokenizers "
                                f"serialization (a BERT folder with only vocab.txt loads with BertTextProcessor)")
        cfg_path, map_path = folder / "tokenizer_config.json", folder / "special_tokens_map.json"
        cfg = _read_json(cfg_path, "tokenizer config") if cfg_path.is_file() else {}
        if "added_tokens_decoder" not in cfg and map_path.is_file():  # transformers' rule
            cfg.update({k: v for k, v in _read_json(map_path, "special tokens map").items() if k in SPECIAL_TOKEN_KEYS
                        or k in ("additional_special_tokens", "extra_special_tokens")})
        cfg.update(kwargs)
        name = cfg.get("tokenizer_class")
        if name is None and (folder / "config.json").is_file():
            name = _MODEL_TYPES.get(_read_json(folder / "config.json", "model config").get("model_type"))
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"tokenizer_class in '{cfg_path}' must be a string; got {name!r}")
        known = _known_class(name)
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:
            raise ArtifactError(f"'{tok_path}' is not a valid tokenizer.json: {exc}") from None
        if known is not None and type(tokenizer.model).__name__ != known.model:
            raise ConfigError(f"'{cfg_path}' names {name}, a {known.model} tokenizer, but '{tok_path}' holds a "
                              f"{type(tokenizer.model).__name__} model")
        where = f"'{folder}' (tokenizer_config.json / special_tokens_map.json)"
        specials = {k: _token_str(cfg.get(k, (known.specials if known else {}).get(k)), k, where)
                    for k in SPECIAL_TOKEN_KEYS}
        extra = cfg.get("extra_special_tokens") or cfg.get("additional_special_tokens") or []
        extra = [_token_str(t, "extra_special_tokens", where) for t in (extra if isinstance(extra, list) else [])]
        missing = [k for k in (known.required if known else ()) if specials[k] is None]
        if missing:
            raise ConfigError(f"{name} needs {', '.join(missing)}; {where} set {'it' if len(missing) == 1 else 'them'} "
                              f"to null")
        ids = {}
        for key, token in list(specials.items()) + [("extra_special_tokens", t) for t in extra]:
            if token is not None:
                ids[key] = tokenizer.token_to_id(token)
                if ids[key] is None:
                    raise ConfigError(f"{key} {token!r} of {where} is not in the vocabulary of '{tok_path}' "
                                      f"({tokenizer.get_vocab_size()} tokens); name a token of the vocabulary "
                                      f"(transformers would append it as a new id, past the model's embeddings)")
        # as transformers does: special tokens not yet added tokens become ones (matched verbatim in text)
        added = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
        tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in
                                      dict.fromkeys(t for t in list(specials.values()) + extra if t and t not in added)])
        options = {k: cfg[k] for k in (known.options if known else ()) if k in cfg}
        if known is not None:
            known.build(tokenizer, options, specials, ids)
        padding, truncation = tokenizer.padding, tokenizer.truncation  # transformers' side defaults
        names = cfg.get("model_input_names") or (known.input_names if known else DEFAULT_INPUT_NAMES)
        limit = cfg.get("model_max_length")
        return cls(tokenizer, model_max_length=limit if isinstance(limit, (int, float)) and not isinstance(limit, bool)
                   else None, padding_side=cfg.get("padding_side") or (padding or {}).get("direction"),
                   truncation_side=cfg.get("truncation_side") or (truncation or {}).get("direction"),
                   model_input_names=names, clean_up_tokenization_spaces=cfg.get("clean_up_tokenization_spaces"),
                   tokenizer_class=name, extra_special_tokens=extra, init_options=options, **specials)

    def save_pretrained(self, folder) -> tuple:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (readable by
        TextProcessor.from_pretrained and transformers' AutoTokenizer). Returns the written paths."""
        folder = Path(folder)
        config, specials = self._config_to_save()
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._tokenizer.no_padding()
            self._tokenizer.no_truncation()
            tok_json = self._tokenizer.to_str(pretty=True)
        paths = (folder / "tokenizer.json", folder / "tokenizer_config.json", folder / "special_tokens_map.json")
        paths[0].write_text(tok_json, encoding="utf-8")
        paths[1].write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        paths[2].write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")
        return tuple(str(p) for p in paths)

    def _config_to_save(self):
        """-> (tokenizer_config.json, special_tokens_map.json) contents; transformers reads them back to
        the same tokenizer (the class options restate what the saved tokenizer.json already does)."""
        specials = self.special_tokens_map
        if self.extra_special_tokens:
            specials["additional_special_tokens"] = list(self.extra_special_tokens)
        config = {"tokenizer_class": self.tokenizer_class or "PreTrainedTokenizerFast", **self.init_options,
                  "model_max_length": self.model_max_length, "padding_side": self.padding_side,
                  "truncation_side": self.truncation_side, "model_input_names": list(self.model_input_names),
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
                  "processor": f"vlexport.{type(self).__name__}", **specials}
        return config, specials

    # ----- vocabulary ------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer` (padding/truncation are set per call)."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens (transformers' vocab_size)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self):
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def _token_id(self, token):
        return None if token is None else self._tokenizer.token_to_id(token)

    bos_token_id = property(lambda self: self._token_id(self.bos_token), doc="id of bos_token, or None")
    eos_token_id = property(lambda self: self._token_id(self.eos_token), doc="id of eos_token, or None")
    unk_token_id = property(lambda self: self._token_id(self.unk_token), doc="id of unk_token, or None")
    sep_token_id = property(lambda self: self._token_id(self.sep_token), doc="id of sep_token, or None")
    pad_token_id = property(lambda self: self._token_id(self.pad_token), doc="id of pad_token, or None")
    cls_token_id = property(lambda self: self._token_id(self.cls_token), doc="id of cls_token, or None")
    mask_token_id = property(lambda self: self._token_id(self.mask_token), doc="id of mask_token, or None")

    @property
    def special_tokens_map(self) -> dict:
        """{"pad_token": "<pad>", ...} for the special tokens this tokenizer has."""
        return {k: getattr(self, k) for k in SPECIAL_TOKEN_KEYS if getattr(self, k) is not None}

    @property
    def all_special_tokens(self) -> list:
        """Named then extra special tokens, without repeats (transformers' order)."""
        return list(dict.fromkeys(list(self.special_tokens_map.values()) + list(self.extra_special_tokens)))

    @property
    def all_special_ids(self) -> list:
        return [self._tokenizer.token_to_id(t) for t in self.all_special_tokens]

    def tokenize(self, text: str) -> list:
        """Tokens of `text`, without the special tokens the post-processor adds."""
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

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None) -> str:
        """Text of one sequence of ids (a list, 1-D array or tensor), as transformers' decode."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        if ids and isinstance(ids[0], list):
            raise InputError(f"decode: expected one sequence of ids; got a batch of {len(ids)} (use batch_decode)")
        text = self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        if self._decode_fix is not None:
            text = self._decode_fix(text)
        cleanup = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        # transformers skips the clean-up for BPE models: it would strip real spaces before punctuation
        if cleanup and type(self._tokenizer.model).__name__ != "BPE":
            text = _clean_up_tokenization(text)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False, **kwargs) -> list:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens=skip_special_tokens, **kwargs) for s in sequences]

    # ----- encoding --------------------------------------------------------------------------
    def __call__(self, text=None, text_pair=None, padding=True, truncation=None, max_length=None,
                 return_tensors="np", pad_to_multiple_of=None):
        """Encode text: str, list[str], or (multiple choice) list of B lists of C strings (either of
        text / text_pair may be a list of B strings, repeated over the C choices) -> fields (B, C, T).
        padding: True/"longest" | "max_length" | False/"do_not_pad".
        truncation: True/"longest_first" | "only_first" | "only_second" | False/None (transformers' rules:
        a bare max_length with padding=False turns on "longest_first"; without max_length truncation and
        padding="max_length" use model_max_length).
        return_tensors: "np" (default), "pt" (torch, imported lazily) or None (Python lists; a single
        text is then not batched, as in transformers).
        Returns a ModelOutput: input_ids, then token_type_ids and attention_mask when they are in
        model_input_names (int64).
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
        # (padding_side; pad id, type pad_token_type_id, mask 0; the target rounded up to
        # pad_to_multiple_of; longer rows left as they are).
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
        left = self.padding_side == "left"
        pad_id, pad_type = self.pad_token_id, self.pad_token_type_id
        if target is not None and all(n <= target for n in lengths):
            fields = {"input_ids": np.full((len(rows), target), pad_id, np.int64),
                      "token_type_ids": np.full((len(rows), target), pad_type, np.int64),
                      "attention_mask": np.zeros((len(rows), target), np.int64)}
            for i, (r, t) in enumerate(zip(rows, type_rows)):
                where = slice(target - len(r), target) if left else slice(0, len(r))
                fields["input_ids"][i, where] = r
                fields["token_type_ids"][i, where] = t
                fields["attention_mask"][i, where] = 1
        else:  # no padding, or padding="max_length" below some row's length: rows of their own lengths
            def pad(r, fill):
                filler = np.full(max(0, (target or 0) - len(r)), fill, np.int32)
                return np.concatenate([filler, r] if left else [r, filler])
            fields = {"input_ids": [pad(r, pad_id) for r in rows],
                      "token_type_ids": [pad(t, pad_type) for t in type_rows],
                      "attention_mask": [pad(np.ones(len(r), np.int32), 0) for r in rows]}
        del rows, type_rows
        for key in ("token_type_ids", "attention_mask"):  # transformers returns those the model takes
            if key not in self.model_input_names:
                del fields[key]
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
        for where, s in _named_texts(x, name):
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
        """transformers' _get_padding_truncation_strategies."""
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
        if pad != "do_not_pad" and self.pad_token_id is None:
            raise InputError(f"padding={padding!r} needs a pad token, and this tokenizer has none; pass "
                             f"padding=False, or load it with pad_token=<a token of its vocabulary>")
        if (trunc != "do_not_truncate" and pad != "do_not_pad" and pad_to_multiple_of is not None
                and max_length is not None and max_length % pad_to_multiple_of != 0):
            raise InputError(f"truncation and padding are both on, but the truncation length ({max_length}) is "
                             f"not a multiple of pad_to_multiple_of ({pad_to_multiple_of})")
        return pad, trunc, max_length

    def __repr__(self):
        return (f"{type(self).__name__}(tokenizer_class={self.tokenizer_class!r}, vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length})")
