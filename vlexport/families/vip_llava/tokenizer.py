"""How transformers 5.23's AutoTokenizer loads a VipLlava folder's tokenizer.json (see the module
docstring of processor.py): as it is for the vipllava / llava / llava_next model types, or rebuilt as
LlamaTokenizer's pipeline when tokenizer_config.json names that class; the post-processor follows
`add_bos_token` / `add_eos_token`. Torch-free (tokenizers only)."""

from __future__ import annotations

import json
from pathlib import Path

from vlexport.errors import ArtifactError, ConfigError

# model types for which transformers 5's AutoTokenizer ignores the hub's tokenizer_class and loads the
# tokenizer.json as it is (TokenizersBackend): MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS
_AS_IS_MODEL_TYPES = ("vipllava", "llava", "llava_next")
_LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")
_LLAMA_DEFAULTS = (("unk_token", "<unk>"), ("bos_token", "<s>"), ("eos_token", "</s>"))
# tokenizer_config.json options this module reads (and writes back)
TOKENIZER_OPTIONS = ("legacy", "add_prefix_space", "add_bos_token", "add_eos_token")

def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"'{path}' is not readable JSON ({what}): {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"'{path}' must hold a JSON object ({what}); it holds a {type(data).__name__}")
    return data


def _model_type(folder: Path, config) -> str | None:
    """The folder's config.json model_type, else the config object's (a vlexport or HF config, or a dict)."""
    if (folder / "config.json").is_file():
        mt = read_json(folder / "config.json", "model config").get("model_type")
        if mt is not None:
            return mt
    if isinstance(config, dict):
        return config.get("model_type")
    return getattr(config, "model_type", None) or getattr(config, "MODEL_TYPE", None)


def config_value(config, name):
    return config.get(name) if isinstance(config, dict) else getattr(config, name, None)


def _rebuild_llama(tok, options: dict) -> None:
    """transformers 5's LlamaTokenizer.__init__ pipeline, on a loaded tokenizers.Tokenizer."""
    from tokenizers import decoders, pre_tokenizers

    if type(tok.model).__name__ != "BPE":
        raise ConfigError(f"tokenizer_config.json names LlamaTokenizer, a BPE tokenizer, but tokenizer.json holds a "
                          f"{type(tok.model).__name__} model")
    prefix = options.get("add_prefix_space")
    prefix = True if prefix is None else bool(prefix)
    scheme = ("always" if options.get("legacy") else "first") if prefix else "never"
    # HF builds BPE(vocab, merges, fuse_unk=True, byte_fallback=True, dropout=None): no unk token
    for key, value in (("fuse_unk", True), ("byte_fallback", True), ("dropout", None), ("unk_token", None),
                       ("continuing_subword_prefix", None), ("end_of_word_suffix", None), ("ignore_merges", False)):
        setattr(tok.model, key, value)
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)


def _update_post_processor(tp, add_bos: bool, add_eos: bool) -> None:
    """TokenizersBackend.update_post_processor: "<s> $A </s>" as the two flags say."""
    from tokenizers import processors

    bos, eos = tp.bos_token, tp.eos_token
    add_bos, add_eos = bool(add_bos) and bos is not None, bool(add_eos) and eos is not None
    single = f"{(bos + ':0 ') if add_bos else ''}$A:0{(' ' + eos + ':0') if add_eos else ''}"
    pair = f"{single}{(' ' + bos + ':1') if add_bos else ''} $B:1{(' ' + eos + ':1') if add_eos else ''}"
    specials = ([(bos, tp.bos_token_id)] if add_bos else []) + ([(eos, tp.eos_token_id)] if add_eos else [])
    tp.tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def load_tokenizer(folder, config=None):
    """(TextProcessor, the tokenizer_config.json options kept for saving, the class transformers 5 uses)
    for a folder's tokenizer.json, as transformers 5.23's AutoTokenizer loads it for a VipLlava model
    (see the module docstring)."""
    from vlexport.processing.text import TextProcessor
    from vlexport.processing.tokenizer_classes import _known_class

    folder = Path(folder)
    cfg_path, map_path = folder / "tokenizer_config.json", folder / "special_tokens_map.json"
    cfg = read_json(cfg_path, "tokenizer config") if cfg_path.is_file() else {}
    name = cfg.get("tokenizer_class")
    as_is = _model_type(folder, config) in _AS_IS_MODEL_TYPES
    llama = not as_is and isinstance(name, str) and name in _LLAMA_CLASSES
    kwargs = {}
    if llama:  # LlamaTokenizer's defaults, where neither file names the token
        smap = (read_json(map_path, "special tokens map")
                if map_path.is_file() and "added_tokens_decoder" not in cfg else {})
        kwargs = {k: v for k, v in _LLAMA_DEFAULTS if k not in cfg and k not in smap}
    tp = TextProcessor.from_pretrained(folder, **kwargs)
    if llama:
        _rebuild_llama(tp.tokenizer, cfg)
    if as_is or _known_class(name) is None:  # TokenizersBackend's rule (known classes build their own)
        if "add_bos_token" in cfg or "add_eos_token" in cfg or tp.tokenizer.post_processor is None:
            _update_post_processor(tp, cfg.get("add_bos_token", False), cfg.get("add_eos_token", False))
    hf_class = "LlamaTokenizer" if llama else "TokenizersBackend" if as_is or name is None else name
    tp.tokenizer_class = hf_class
    return tp, {k: cfg[k] for k in TOKENIZER_OPTIONS if k in cfg}, hf_class
