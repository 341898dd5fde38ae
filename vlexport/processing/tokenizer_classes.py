"""The tokenizer pipelines transformers rebuilds for known tokenizer classes (BERT, DistilBERT,
RoBERTa, CLIP), whatever a folder's tokenizer.json holds: text.TextProcessor applies them so its ids
equal `AutoTokenizer`'s. Each entry says the model type, the keys the class returns
(model_input_names), its special-token defaults, which of them must exist, the tokenizer_config.json
options it reads, and how it builds normalizer / pre-tokenizer / decoder / post-processor.
"""

from __future__ import annotations

from collections import namedtuple

from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

DEFAULT_INPUT_NAMES = ("input_ids", "attention_mask")  # transformers' base-class default


# ----- the pipelines transformers builds for known classes (from their __init__) ----------------
def _set_model(tok, **attrs):
    for key, value in attrs.items():
        setattr(tok.model, key, value)


def _bert_pipeline(tok, opts, sp, ids):
    _set_model(tok, unk_token=str(sp["unk_token"]), continuing_subword_prefix="##", max_input_chars_per_word=100)
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(opts.get("tokenize_chinese_chars", True)),
        strip_accents=opts.get("strip_accents"), lowercase=bool(opts.get("do_lower_case", True)))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls, sep = sp["cls_token"], sp["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, ids["cls_token"]), (sep, ids["sep_token"])])


def _roberta_pipeline(tok, opts, sp, ids):
    prefix, trim = bool(opts.get("add_prefix_space", False)), bool(opts.get("trim_offsets", True))
    _set_model(tok, dropout=None, unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
               fuse_unk=False, byte_fallback=False, ignore_merges=False)
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing((sp["sep_token"], ids["sep_token"]),
                                                      (sp["cls_token"], ids["cls_token"]), trim, prefix)


_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _clip_pipeline(tok, opts, sp, ids):
    _set_model(tok, dropout=None, unk_token=str(sp["unk_token"]), continuing_subword_prefix="",
               end_of_word_suffix="</w>", fuse_unk=False, byte_fallback=False, ignore_merges=False)
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing((sp["eos_token"], ids["eos_token"]),
                                                      (sp["bos_token"], ids["bos_token"]), False, False)


_Class = namedtuple("_Class", "model input_names specials required options build decode_fix")
_BERT_SPECIALS = dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
_BERT_OPTIONS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars")
_BERT_REQUIRED = ("unk_token", "cls_token", "sep_token")
_ROBERTA_SPECIALS = dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                         pad_token="<pad>", mask_token="<mask>")
_CLIP_SPECIALS = dict(unk_token="<|endoftext|>", bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                      pad_token="<|endoftext|>")
# tokenizer_class (without "Fast") -> what transformers' class of that name builds
_CLASSES = {
    "BertTokenizer": _Class("WordPiece", ("input_ids", "token_type_ids", "attention_mask"), _BERT_SPECIALS,
                            _BERT_REQUIRED, _BERT_OPTIONS, _bert_pipeline, None),
    "DistilBertTokenizer": _Class("WordPiece", DEFAULT_INPUT_NAMES, _BERT_SPECIALS, _BERT_REQUIRED, _BERT_OPTIONS,
                                  _bert_pipeline, None),
    "RobertaTokenizer": _Class("BPE", DEFAULT_INPUT_NAMES, _ROBERTA_SPECIALS, ("cls_token", "sep_token"),
                               ("add_prefix_space", "trim_offsets"),
                               _roberta_pipeline, None),
    # transformers' CLIPTokenizer turns the end-of-word suffix back into spaces after decoding
    "CLIPTokenizer": _Class("BPE", DEFAULT_INPUT_NAMES, _CLIP_SPECIALS, ("unk_token", "bos_token", "eos_token"), (),
                            _clip_pipeline,
                            lambda text: text.replace("</w>", " ").strip()),
}


def _known_class(name):
    """The _CLASSES entry of a tokenizer_class ("XTokenizerFast" is the same class as "XTokenizer"), or None."""
    return _CLASSES.get(name[:-4] if name.endswith("Fast") else name) if isinstance(name, str) else None


# config.json model_type -> tokenizer class, for folders whose tokenizer_config.json names none
_MODEL_TYPES = {"bert": "BertTokenizer", "roberta": "RobertaTokenizer", "clip": "CLIPTokenizer"}
