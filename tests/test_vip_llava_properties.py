"""Property-based tests (hypothesis) of VipLlava's runtime entry points on the tiny built-in artifact:
the processor (any prompts, any number and kind of images) gives transformers' LlavaProcessor ids or an
InputError; generate() (any input_ids / attention_mask / pixel_values / settings) gives well-formed ids
(the prompt first, new tokens in the vocabulary) or an InputError naming the input: never another
exception, a hang or a NaN."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
transformers = pytest.importorskip("transformers")
from hypothesis import given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import vlexport  # noqa: E402
from vlexport.errors import InputError  # noqa: E402

OUTCOMES = Counter()  # both outcomes must occur (see the last test)
WORDS = ["What", "is", "inside", "the", "red", "box", "?", "<image>", "\n", " ", "ünïcödé", "猫", "###", "<s>", ""]


@pytest.fixture(scope="module")
def model(tiny_artifacts):
    return vlexport.load(tiny_artifacts["tiny-vipllava"])  # the session's shared build


@pytest.fixture(scope="module")
def hf_processor(model, tmp_path_factory):
    """transformers' processor for the same folder: the reference."""
    return transformers.AutoProcessor.from_pretrained(str(model.artifact.path))


def _image(draw):
    h, w = draw(st.integers(1, 60)), draw(st.integers(1, 60))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "array", "float", "bad-shape", "text"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    if mode in ("RGB", "L", "RGBA"):
        from PIL import Image

        return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).convert(mode)
    if mode == "array":
        return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    if mode == "float":
        return rng.uniform(0, 1, size=(h, w, 3)).astype(np.float32)
    if mode == "bad-shape":
        return rng.integers(0, 256, size=(h, w, 7), dtype=np.uint8)
    return "not an image"


@settings(deadline=None)
@given(data=st.data())
def test_processor_gives_transformers_ids_or_a_named_error(model, hf_processor, data):
    proc = model.processor
    batch = data.draw(st.integers(1, 3), label="batch")
    texts = [" ".join(data.draw(st.lists(st.sampled_from(WORDS), max_size=8))) for _ in range(batch)]
    n_images = data.draw(st.integers(0, 3), label="images")
    images = [_image(data.draw) for _ in range(n_images)]
    note(f"texts={texts!r} images={[type(i).__name__ for i in images]}")
    try:
        out = proc(text=texts if batch > 1 else texts[0], images=images or None)
    except InputError as exc:
        assert str(exc)
        OUTCOMES["processor refused"] += 1
        return
    OUTCOMES["processor answered"] += 1
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape
    assert ((ids >= 0) & (ids < proc.vocab_size)).all() and np.isin(mask, (0, 1)).all()
    assert (np.diff(mask, axis=1) >= 0).all(), "not left-padded"
    assert int((ids == proc.image_token_id).sum()) == 4 * n_images
    if n_images:
        assert out["pixel_values"].shape == (n_images, 3, 28, 28) and np.isfinite(out["pixel_values"]).all()
    theirs = hf_processor(text=texts, images=images or None, padding=True, return_tensors="np")
    if batch > 1:  # HF pads on the tokenizer's side; compare rows without padding
        for r in range(batch):
            assert ids[r][mask[r] == 1].tolist() == theirs["input_ids"][r][theirs["attention_mask"][r] == 1].tolist()
    else:
        assert ids.tolist() == theirs["input_ids"].tolist()


def _array(draw, name, shape_choices, dtype_choices, low, high):
    shape = draw(st.sampled_from(shape_choices), label=f"{name} shape")
    dtype = draw(st.sampled_from(dtype_choices), label=f"{name} dtype")
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    x = rng.integers(low, high, size=shape) if np.dtype(dtype).kind in "iu" else rng.normal(0, 1, size=shape)
    return x.astype(dtype)


@settings(deadline=None, max_examples=40)
@given(data=st.data())
def test_generate_gives_well_formed_ids_or_a_named_error(model, data):
    V, image = model._cfg.vocab_size, model._cfg.image_token_index
    B = data.draw(st.integers(1, 3), label="batch")
    n_img = data.draw(st.integers(0, 2), label="images in the prompt")
    T = data.draw(st.integers(1, 12), label="text tokens")
    rng = np.random.default_rng(data.draw(st.integers(0, 999)))
    ids = rng.integers(data.draw(st.sampled_from([0, -3])), data.draw(st.sampled_from([V - 2, V + 5])), size=(B, T))
    ids[ids == image] = 5
    ids = np.concatenate([ids[:, :1], np.full((B, 4 * n_img), image), ids[:, 1:]], axis=1)
    ids = ids.astype(data.draw(st.sampled_from(["int64", "int32", "float32"]), label="ids dtype"))
    mask = None
    if data.draw(st.booleans(), label="attention_mask"):
        mask = np.ones(ids.shape, np.int64)
        mask[:, :data.draw(st.integers(0, 2))] = 0
        if data.draw(st.booleans(), label="wrong mask shape"):
            mask = mask[:, 1:]
    px = None
    if n_img or data.draw(st.booleans(), label="pixel_values without <image>"):
        n = B * n_img + data.draw(st.sampled_from([0, 0, 1]), label="extra images")
        px = _array(data.draw, "pixel_values", [(max(n, 1), 3, 28, 28), (max(n, 1), 3, 20, 28), (3, 28, 28)],
                    ["float32", "float64", "int64"], 0, 255)
    kw = data.draw(st.fixed_dictionaries({}, optional={
        "max_new_tokens": st.sampled_from([1, 3, 0, -1, 500]), "num_beams": st.sampled_from([1, 2, 0]),
        "do_sample": st.booleans(), "temperature": st.sampled_from([0.7, 0.0, float("nan")]),
        "top_k": st.sampled_from([0, 5]), "top_p": st.sampled_from([0.9, 1.5]), "seed": st.just(1),
        "bogus_setting": st.just(1)}), label="settings")
    note(f"ids {ids.dtype} {ids.shape}, mask {None if mask is None else mask.shape}, "
         f"pixel_values {None if px is None else (px.dtype, px.shape)}, settings {kw}")
    try:
        out = model.generate(input_ids=ids, attention_mask=mask, pixel_values=px, **kw)
    except InputError as exc:
        assert str(exc)
        OUTCOMES["generate refused"] += 1
        return
    OUTCOMES["generate answered"] += 1
    assert out.dtype == np.int64 and out.shape[0] == B and out.shape[1] > ids.shape[1]
    assert np.array_equal(out[:, :ids.shape[1]], ids.astype(np.int64))
    assert ((out >= 0) & (out < V)).all()


def test_both_outcomes_occurred():
    """The strategies above reach answers as well as refusals (a strategy that only makes errors tests little)."""
    if not OUTCOMES:
        pytest.skip("run with the property tests above")
    for kind in ("processor", "generate"):
        assert OUTCOMES[f"{kind} answered"] and OUTCOMES[f"{kind} refused"], dict(OUTCOMES)
