"""Property-based tests (hypothesis) of the ViT/DeiT/CLIP image processors (the dual encoder's and the
captioner's): every input either gives transformers' pixel_values (RGB uint8 arrays, within 1e-5) or
finite pixel_values of the processor's size (other valid forms: grayscale, RGBA, floats in [0, 1],
CHW), or raises an InputError naming the image at fault — never another exception, NaN or a hang.
Profiles: `ci` (40 derandomized cases per test, the default) and `full` (VLEXPORT_HYPOTHESIS=full)."""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
transformers = pytest.importorskip("transformers")
from hypothesis import given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vlexport.errors import InputError  # noqa: E402
from vlexport.processing import vit_images  # noqa: E402

NAMES = ["ViTImageProcessor", "DeiTImageProcessor", "CLIPImageProcessor"]


@pytest.fixture(scope="module", params=NAMES)
def pair(request):
    name = request.param
    ours = vit_images.IMAGE_PROCESSORS[name]()
    theirs = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return ours, theirs.from_dict(ours.to_dict())  # HF's processor with the same settings


def _rgb(draw):
    h, w = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    seed = draw(st.integers(0, 2 ** 16))
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@given(data=st.data())
def test_rgb_arrays_give_transformers_pixel_values(pair, data):
    ours, theirs = pair
    images = [_rgb(data.draw) for _ in range(data.draw(st.integers(1, 3), label="batch"))]
    note(str([x.shape for x in images]))
    a = ours(images)["pixel_values"]
    b = theirs(images, return_tensors="np")["pixel_values"]
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5


_BAD = st.sampled_from(["nan", "inf", "1d", "5d", "empty", "object", "str", "bytes", "none", "channels", "complex",
                        "missing_file", "dict"])


def _bad(kind, rng):
    return {"nan": np.full((8, 8, 3), np.nan, np.float32), "inf": np.full((8, 8, 3), np.inf, np.float32),
            "1d": np.zeros(12, np.uint8), "5d": np.zeros((1, 2, 8, 8, 3), np.uint8),
            "empty": np.zeros((0, 8, 3), np.uint8), "object": np.array([[object()]], dtype=object),
            "str": "no/such/image.jpg", "bytes": b"\x89PNG not really", "none": None,
            "channels": rng.integers(0, 255, (8, 8, 7), dtype=np.uint8), "complex": np.zeros((8, 8, 3), np.complex64),
            "missing_file": "/nonexistent/x.png", "dict": {"a": 1}}[kind]


@given(data=st.data())
def test_any_input_is_processed_or_refused_naming_it(pair, data):
    ours, _ = pair
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    n = data.draw(st.integers(1, 4), label="batch")
    bad_at = data.draw(st.integers(-1, n - 1), label="bad index")  # -1: all valid
    images = []
    for i in range(n):
        if i == bad_at:
            images.append(_bad(data.draw(_BAD, label="bad kind"), rng))
            continue
        form = data.draw(st.sampled_from(["rgb", "gray", "rgba", "float01", "chw"]), label="form")
        h, w = data.draw(st.integers(1, 48)), data.draw(st.integers(1, 48))
        x = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        images.append({"rgb": x, "gray": x[..., 0], "rgba": np.concatenate([x, x[..., :1]], -1),
                       "float01": x.astype(np.float32) / 255, "chw": np.ascontiguousarray(x.transpose(2, 0, 1))}[form])
    try:
        out = ours(images)["pixel_values"]
    except InputError as exc:
        assert bad_at >= 0, f"a valid batch was refused: {exc}"
        assert f"images[{bad_at}]" in str(exc), f"the error does not name images[{bad_at}]: {exc}"
        return
    assert bad_at < 0, f"an invalid input at {bad_at} was accepted"
    assert out.dtype == np.float32 and np.isfinite(out).all() and out.shape[0] == n and out.shape[1] == 3
