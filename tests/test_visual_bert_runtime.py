"""The runtime (`vlexport.load(...)(**hf_kwargs)`) on ONNX Runtime: the input kinds it takes
(numpy, lists, torch tensors through DLPack, int32 ids), the defaults HF applies to omitted masks,
the errors a bad input gets, thread safety, and that it runs without torch or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

import vlexport
from oracle import assert_same_outputs, run_hf, to_torch_outputs
from visual_bert_kit import QA, build_small, make_feeds
from vlexport.errors import InputError


@pytest.fixture(scope="module")
def qa(hf_checkpoint, tmp_path_factory):
    """(HFCheckpoint, artifact folder, RuntimeModel) of a small question-answering model, fp32 graph only."""
    hf = hf_checkpoint(QA)
    out = build_small(hf.folder, tmp_path_factory.mktemp("rt") / "qa", QA, fp16=False, onnx_only=True)
    return hf, out, vlexport.load(out, backend="onnxruntime")


@pytest.fixture(scope="module")
def base(hf_checkpoint, tmp_path_factory):
    arch = "VisualBertModel"
    hf = hf_checkpoint(arch)
    out = build_small(hf.folder, tmp_path_factory.mktemp("rt") / "base", arch, fp16=False, onnx_only=True)
    return hf, out, vlexport.load(out, backend="onnxruntime")


def _feeds(hf, seed=0, batch=3, text=10, visual=6, pad=True):
    return make_feeds(QA, hf.config, dict(batch=batch, text=text, visual=visual), np.random.default_rng(seed), pad)


# ----------------------------------------------------------------------------- input kinds

def test_numpy_lists_torch_and_int32_give_the_same_answer(qa):
    hf, _, model = qa
    feeds = _feeds(hf)
    expected = model(**feeds).logits
    assert expected.dtype == np.float32 and expected.shape == (3, len(hf.config["id2label"]))
    assert_same_outputs(to_torch_outputs({"logits": expected}), run_hf(hf.model, feeds), 1e-4, "numpy")
    variants = {
        "lists": {k: v.tolist() for k, v in feeds.items()},
        "torch": {k: torch.from_numpy(v.copy()) for k, v in feeds.items()},
        "int32 ids": {k: (v.astype(np.int32) if v.dtype == np.int64 else v) for k, v in feeds.items()},
        "torch int32": {k: torch.from_numpy(v.astype(np.int32) if v.dtype == np.int64 else v) for k, v in feeds.items()},
        "float64 features": {**feeds, "visual_embeds": feeds["visual_embeds"].astype(np.float64)},
        # a non-contiguous view (transposed back) through DLPack
        "strided torch": {**feeds, "visual_embeds": torch.from_numpy(
            np.ascontiguousarray(feeds["visual_embeds"].transpose(0, 2, 1))).transpose(1, 2)},
        "bool masks": {**feeds, "attention_mask": feeds["attention_mask"].astype(bool)},
    }
    assert not variants["strided torch"]["visual_embeds"].is_contiguous()
    for what, inputs in variants.items():
        np.testing.assert_array_equal(model(**inputs).logits, expected, err_msg=what)
    # the caller's arrays are not changed by the int32/float64 casts
    assert variants["int32 ids"]["input_ids"].dtype == np.int32


def test_output_container_is_hf_like(qa):
    hf, _, model = qa
    out = model(**_feeds(hf), return_dict=True)
    assert out.logits is out["logits"] and out[0] is out.logits and out.to_tuple() == (out.logits,)
    with pytest.raises(AttributeError, match="no field 'pooler_output'"):
        out.pooler_output


def test_omitted_optional_masks_default_like_transformers(base, qa):
    """Only input_ids and visual_embeds: masks 1, token types 0 and visual token types 1, as in HF."""
    hf, _, model = base
    feeds = make_feeds("VisualBertModel", hf.config, dict(batch=2, text=9, visual=4), np.random.default_rng(3), False)
    minimal = {k: feeds[k] for k in ("input_ids", "visual_embeds")}
    ours = model(**minimal)
    assert_same_outputs(to_torch_outputs(ours), run_hf(hf.model, minimal), 1e-4, "omitted masks")
    # and it is not the same as other values for those inputs
    other = model(**minimal, visual_token_type_ids=np.zeros((2, 4), np.int64))
    assert not np.allclose(other.last_hidden_state, ours.last_hidden_state, atol=1e-3)
    # QA: HF needs attention_mask to find the answer token; the rest may be left out
    hf, _, model = qa
    feeds = _feeds(hf, seed=4)
    minimal = {k: feeds[k] for k in ("input_ids", "attention_mask", "visual_embeds")}
    assert_same_outputs(to_torch_outputs(model(**minimal)), run_hf(hf.model, minimal), 1e-4, "QA omitted masks")
    explicit = {**minimal, "token_type_ids": np.zeros_like(feeds["input_ids"]),
                "visual_attention_mask": np.ones(feeds["visual_embeds"].shape[:2], np.int64),
                "visual_token_type_ids": np.ones(feeds["visual_embeds"].shape[:2], np.int64)}
    np.testing.assert_array_equal(model(**minimal).logits, model(**explicit).logits)
    assert model(**{**minimal, "visual_attention_mask": None}).logits.shape == (3, 5)  # None = omitted
    # ...but never attention_mask: filling it with ones would silently give wrong logits for the shorter
    # rows of a padded batch (the answer is read at the token before [SEP])
    with pytest.raises(InputError, match="missing input 'attention_mask'.*question answering needs it"):
        model(input_ids=feeds["input_ids"], visual_embeds=feeds["visual_embeds"])


# ----------------------------------------------------------------------------- errors

def _raises(model, match, **inputs):
    with pytest.raises(InputError, match=match) as info:
        model(**inputs)
    return str(info.value)


def test_lengths_outside_the_built_range(qa):
    hf, _, model = qa
    msg = _raises(model, r"'input_ids'.*text=17.*\[2, 16\]", **_feeds(hf, text=17))
    assert "rebuild" in msg
    _raises(model, r"'visual_embeds'.*visual=9.*\[1, 8\]", **_feeds(hf, visual=9))
    _raises(model, r"batch=5.*\[1, 4\]", **_feeds(hf, batch=5))
    _raises(model, r"text=1.*\[2, 16\]", **_feeds(hf, text=1, pad=False))
    # the edges of the ranges are fine
    assert model(**_feeds(hf, batch=4, text=16, visual=8)).logits.shape[0] == 4
    assert model(**_feeds(hf, batch=1, text=2, visual=1, pad=False)).logits.shape[0] == 1


def test_values_out_of_range(qa):
    hf, _, model = qa
    vocab = hf.config["vocab_size"]
    feeds = _feeds(hf)
    ids = feeds["input_ids"].copy()
    ids[1, 2] = vocab
    _raises(model, rf"'input_ids' has value {vocab}; expected values < {vocab}", **{**feeds, "input_ids": ids})
    ids[1, 2] = -1
    _raises(model, r"'input_ids' has value -1; expected values >= 0", **{**feeds, "input_ids": ids})
    mask = feeds["attention_mask"].copy()
    mask[0, 0] = 2
    _raises(model, r"'attention_mask' has value 2", **{**feeds, "attention_mask": mask})
    tt = feeds["token_type_ids"].copy()
    tt[0, 0] = 5
    _raises(model, r"'token_type_ids' has value 5", **{**feeds, "token_type_ids": tt})


def test_wrong_dims_dtypes_names_and_missing_inputs(qa):
    hf, _, model = qa
    feeds = _feeds(hf)
    _raises(model, r"'input_ids' should have 2 dims", **{**feeds, "input_ids": feeds["input_ids"][0]})
    _raises(model, r"'visual_embeds' should have 3 dims", **{**feeds, "visual_embeds": feeds["visual_embeds"][None]})
    _raises(model, r"'visual_embeds' has shape .*expected 12",
            **{**feeds, "visual_embeds": np.zeros((3, 6, 13), np.float32)})
    _raises(model, r"'attention_mask' has text=9 but 'input_ids' has text=10",
            **{**feeds, "attention_mask": feeds["attention_mask"][:, :9]})
    _raises(model, r"'input_ids' should be int64, got float32", **{**feeds, "input_ids": feeds["input_ids"].astype(np.float32)})
    _raises(model, r"'input_ids' should be int64, got float32",
            **{**feeds, "input_ids": torch.from_numpy(feeds["input_ids"]).float()})
    _raises(model, r"'visual_embeds' should be float32", **{**feeds, "visual_embeds": feeds["visual_embeds"].astype(np.int64)})
    _raises(model, r"'visual_embeds' holds str32 values; expected numbers", **{**feeds, "visual_embeds": [[["a"] * 12] * 6] * 3})
    _raises(model, r"unexpected input\(s\) \['pixel_values'\]", **feeds, pixel_values=np.zeros((1, 3), np.float32))
    _raises(model, r"missing input 'input_ids'", **{k: v for k, v in feeds.items() if k != "input_ids"})
    _raises(model, r"missing input 'visual_embeds'", **{k: v for k, v in feeds.items() if k != "visual_embeds"})
    _raises(model, r"'visual_embeds' is a dict", **{**feeds, "visual_embeds": {"a": 1}})


# ----------------------------------------------------------------------------- threads

def test_threads_share_one_model(qa):
    hf, _, model = qa
    inputs = [_feeds(hf, seed=s, batch=1 + s % 4, text=2 + s % 15, visual=1 + s % 8) for s in range(24)]
    serial = [model(**f).logits for f in inputs]
    results, errors = {}, []

    def worker(k):
        try:
            for i in range(k, len(inputs), 4):
                results[i] = model(**inputs[i]).logits
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert sorted(results) == list(range(len(inputs)))
        for i, want in enumerate(serial):
            np.testing.assert_allclose(results[i], want, rtol=0, atol=1e-6, err_msg=f"input {i}")
        results.clear()


# ----------------------------------------------------------------------------- no torch in the runtime

def test_runtime_imports_neither_torch_nor_transformers(qa, tmp_path):
    hf, out, model = qa
    feeds = _feeds(hf, seed=9)
    (tmp_path / "feeds.json").write_text(json.dumps({k: v.tolist() for k, v in feeds.items()}))
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import vlexport, vlexport.runtime.load, vlexport.runtime.backends.onnxruntime
        from vlexport.errors import InputError
        model = vlexport.load({str(out)!r}, backend="onnxruntime")
        feeds = json.load(open({str(tmp_path / "feeds.json")!r}))
        out = model(**{{k: np.asarray(v) for k, v in feeds.items()}})
        lists = model(**feeds)  # plain Python lists
        assert (lists.logits == out.logits).all()
        try:
            model(**{{**feeds, "input_ids": [[1] * 17] * 3}})
            raise SystemExit("no InputError")
        except InputError:
            pass
        enc = model.processor(text=["a question"])  # the processor is torch-free too
        assert enc["input_ids"].dtype == np.int64
        heavy = sorted(m for m in ("torch", "transformers", "onnx", "onnxscript") if m in sys.modules)
        assert not heavy, heavy
        np.save({str(tmp_path / "logits.npy")!r}, out.logits)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), model(**feeds).logits)
