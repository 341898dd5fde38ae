"""Property-based tests (hypothesis) of ViLT's image processor and processor: every batch of RGB arrays gives
transformers' pixel_values and pixel_mask (images of different sizes padded to the largest, within 1e-5);
every other input either gives finite pixel_values with a mask that covers each image (grayscale, RGBA,
floats in [0, 1], CHW), or raises an InputError naming the image at fault — never another exception, NaN or
a hang; text batches of any unicode give the tokenizer's ids within the vocabulary, or an InputError naming
`text`. Profiles: `ci` (40 derandomized cases per test, the default) and `full` (VLEXPORT_HYPOTHESIS=full)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
transformers = pytest.importorskip("transformers")
from hypothesis import given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from transformers.models.vilt.image_processing_pil_vilt import ViltImageProcessorPil  # noqa: E402

from test_image_processor_properties import _BAD, _bad  # noqa: E402
from vlexport.errors import InputError  # noqa: E402
from vlexport.families.vilt.image_processor import ViltImageProcessor  # noqa: E402

SIZE = {"shortest_edge": 64}  # small images keep each case fast; the resize rule is the same at 384


@pytest.fixture(scope="module")
def pair():
    ours = ViltImageProcessor(size=SIZE)
    return ours, ViltImageProcessorPil(**{k: v for k, v in ours.to_dict().items() if k != "image_processor_type"})


@given(data=st.data())
def test_rgb_batches_give_transformers_pixel_values_and_mask(pair, data):
    ours, theirs = pair
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    # sides from 16 (a first axis of 1, 3 or 4 would read as channels, in HF too) and within 3x of each other
    # (a more extreme image resizes below one 32-pixel patch: refused, see the next test)
    images = [rng.integers(0, 256, size=(data.draw(st.integers(16, 48)), data.draw(st.integers(16, 48)), 3),
                           dtype=np.uint8) for _ in range(data.draw(st.integers(1, 3), label="batch"))]
    note(str([x.shape for x in images]))
    a = ours(images)
    b = theirs(images, return_tensors="np")
    assert a["pixel_values"].shape == b["pixel_values"].shape
    assert np.abs(a["pixel_values"] - b["pixel_values"]).max() <= 1e-5
    assert np.array_equal(a["pixel_mask"], b["pixel_mask"])


@given(data=st.data())
def test_any_image_input_is_processed_or_refused_naming_it(pair, data):
    ours, _ = pair
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    n = data.draw(st.integers(1, 4), label="batch")
    bad_at = data.draw(st.integers(-1, n - 1), label="bad index")  # -1: all valid
    images, sizes = [], []
    for i in range(n):
        if i == bad_at:
            images.append(_bad(data.draw(_BAD, label="bad kind"), rng))
            continue
        form = data.draw(st.sampled_from(["rgb", "gray", "rgba", "float01", "chw"]), label="form")
        # sides within 3x of each other: valid in every form (at this size ViLT refuses an image more extreme
        # than about 3.3:1, whose short side resizes below one 32-pixel patch)
        h, w = data.draw(st.integers(16, 48)), data.draw(st.integers(16, 48))
        x = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        images.append({"rgb": x, "gray": x[..., 0], "rgba": np.concatenate([x, x[..., :1]], -1),
                       "float01": x.astype(np.float32) / 255, "chw": np.ascontiguousarray(x.transpose(2, 0, 1))}[form])
        sizes.append(ours.output_size(h, w))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # floats in [0, 1] are rescaled twice, as in HF: warned
            out = ours(images)
    except InputError as exc:
        assert bad_at >= 0, f"a valid batch was refused: {exc}"
        assert f"images[{bad_at}]" in str(exc) or (n == 1 and "images" in str(exc)), \
            f"the error does not name images[{bad_at}]: {exc}"
        return
    assert bad_at < 0, f"an invalid input at {bad_at} was accepted"
    px, mask = out["pixel_values"], out["pixel_mask"]
    assert px.dtype == np.float32 and np.isfinite(px).all() and px.shape[:2] == (n, 3)
    for i, (h, w) in enumerate(sizes):  # each image's rectangle, top-left, and nothing else
        assert mask[i, :h, :w].all() and mask[i].sum() == h * w, (i, h, w)


@given(texts=st.lists(st.one_of(st.text(max_size=60), st.integers(), st.none(), st.binary(max_size=8)),
                      min_size=1, max_size=4))
def test_text_batches_are_tokenized_or_refused_naming_text(texts):
    from vlexport.families.vilt.processor import ViltProcessor

    proc = ViltProcessor.tiny()
    ok = all(isinstance(t, str) for t in texts)
    try:
        enc = proc(text=texts, padding=True, truncation=True, max_length=40)
    except InputError as exc:
        assert not ok, f"a batch of strings was refused: {exc}"
        assert "text" in str(exc), exc
        return
    assert ok, f"non-string text {texts!r} was accepted"
    ids = np.asarray(enc["input_ids"])
    assert ids.shape[0] == len(texts) and ids.shape[1] <= 40
    assert (ids >= 0).all() and (ids < proc.vocab_size).all()
