"""Property-based tests (hypothesis) of the dual encoder's processor (text and images in one call): any text
batch of strings becomes [CLS] ... [SEP] rows within the vocabulary whose attention_mask covers exactly the
non-pad ids; any batch with one bad element (a non-string text, or an image tests/test_image_processor_properties
refuses) raises an InputError naming the field at fault, and a fully valid call gives both towers' inputs.
Profiles: `ci` (40 derandomized cases per test, the default) and `full` (VLEXPORT_HYPOTHESIS=full)."""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from test_image_processor_properties import _BAD, _bad  # noqa: E402
from vlexport.errors import InputError  # noqa: E402
from vlexport.families.vision_text_dual_encoder.processor import DualEncoderProcessor  # noqa: E402

PROC = DualEncoderProcessor.tiny()


@given(texts=st.lists(st.text(max_size=80), min_size=1, max_size=5), max_length=st.integers(2, 64))
def test_any_strings_become_bounded_rows_within_the_vocabulary(texts, max_length):
    tok = PROC.tokenizer
    enc = PROC(text=texts, truncation=True, max_length=max_length)
    ids, mask = np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"])
    assert ids.shape == mask.shape and ids.shape[0] == len(texts) and ids.shape[1] <= max_length
    assert (ids >= 0).all() and (ids < tok.vocab_size).all()
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()  # right padding
        assert row[0] == tok.cls_token_id and row[n - 1] == tok.sep_token_id
        assert (row[n:] == tok.pad_token_id).all()


@given(data=st.data())
def test_one_bad_element_is_refused_naming_its_field(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    n_text, n_img = data.draw(st.integers(1, 3), label="texts"), data.draw(st.integers(1, 3), label="images")
    texts = [data.draw(st.text(max_size=30)) for _ in range(n_text)]
    images = [rng.integers(0, 256, size=(int(rng.integers(8, 40)), int(rng.integers(8, 40)), 3), dtype=np.uint8)
              for _ in range(n_img)]
    where = data.draw(st.sampled_from(["none", "text", "images"]), label="bad field")
    if where == "text":
        not_text = st.one_of(st.integers(), st.none(), st.binary(max_size=4), st.lists(st.integers(), max_size=2))
        texts[data.draw(st.integers(0, n_text - 1))] = data.draw(not_text)
    elif where == "images":
        at = data.draw(st.integers(0, n_img - 1), label="bad index")
        images[at] = _bad(data.draw(_BAD, label="bad kind"), rng)
    try:
        out = PROC(text=texts, images=images)
    except InputError as exc:
        assert where != "none", f"a valid call was refused: {exc}"
        field = "text" if where == "text" else f"images[{at}]"
        assert field in str(exc), f"the error does not name {field}: {exc}"
        return
    assert where == "none", f"a bad {where} element was accepted"
    assert out["input_ids"].shape[0] == n_text and out["pixel_values"].shape[0] == n_img
    assert np.isfinite(out["pixel_values"]).all()
