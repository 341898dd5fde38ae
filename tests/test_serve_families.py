"""Every family's processor endpoints through a running `vlexport serve` (one server for the six tiny
artifacts): text and image file bytes in over HTTP, the processor on the server, HF outputs or the
generated text out, equal to what `vlexport.load` gives in this process on the same inputs."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import vlexport
from serve_kit import Server, infer, png_bytes, serve_python

PY, WHY = serve_python()
pytestmark = pytest.mark.skipif(PY is None, reason=WHY)
http = pytest.importorskip("tritonclient.http", reason="tritonclient (test extra) is the Triton client")
skdata = pytest.importorskip("skimage.data", reason="scikit-image (test extra) has the photographs")

ENDPOINTS = ["pipeline", "image_features", "text_features", "caption", "chat", "regions"]


@pytest.fixture(scope="module")
def served(tiny_artifacts):
    server = Server(list(tiny_artifacts.values()), "--endpoints", *ENDPOINTS)
    yield server, tiny_artifacts
    server.terminate()


def photos():
    from PIL import Image

    return [Image.fromarray(skdata.chelsea()).resize((60, 45)), Image.fromarray(skdata.astronaut()).resize((40, 40)),
            Image.fromarray(skdata.coffee()).resize((33, 50))]


def decoded(data: bytes):
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def strings(*items) -> np.ndarray:
    return np.array([[x.encode() if isinstance(x, str) else x] for x in items], dtype=object)


def call(server, model, feeds, out):
    client = http.InferenceServerClient(server.url)
    try:
        return infer(client, model, feeds, [out])[out]
    finally:
        client.close()


def test_models_listed(served):
    server, _ = served
    client = http.InferenceServerClient(server.url)
    names = sorted(m["name"] for m in client.get_model_repository_index())
    client.close()
    assert names == sorted(["tiny-visualbert-vqa_pipeline", "tiny-vilt-vqa_pipeline",
                            "tiny-dual-encoder_image_features", "tiny-dual-encoder_text_features",
                            "tiny-captioner_caption", "tiny-vipllava_chat", "tiny-frcnn_regions"])


def test_vilt_question_about_photos(served):
    server, arts = served
    imgs = [png_bytes(p) for p in photos()]
    qs = ["how many cats?", "what is on the table in front of her?", "color"]
    got = call(server, "tiny-vilt-vqa_pipeline", {"text": strings(*qs), "image": strings(*imgs)}, "logits")
    model = vlexport.load(arts["tiny-vilt-vqa"])
    want = model(**model.processor(images=[decoded(b) for b in imgs], text=qs)).logits
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_visual_bert_text_and_regions(served):
    server, arts = served
    rng = np.random.default_rng(0)
    regions = np.abs(rng.standard_normal((2, 7, 16))).astype(np.float32)
    qs = ["what is it?", "is the cat on the mat or under the table?"]
    got = call(server, "tiny-visualbert-vqa_pipeline", {"text": strings(*qs), "visual_embeds": regions}, "logits")
    model = vlexport.load(arts["tiny-visualbert-vqa"])
    want = model(**model.processor(text=qs, visual_embeds=regions)).logits
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_dual_encoder_towers(served):
    server, arts = served
    imgs = [png_bytes(p) for p in photos()]
    model = vlexport.load(arts["tiny-dual-encoder"])
    got_i = call(server, "tiny-dual-encoder_image_features", {"image": strings(*imgs)}, "image_embeds")
    want_i = model.get_image_features(**model.processor(images=[decoded(b) for b in imgs])).pooler_output
    np.testing.assert_allclose(got_i, want_i, atol=1e-5, rtol=0)
    texts = ["a photo of a cat", "a cup of coffee on a saucer"]
    got_t = call(server, "tiny-dual-encoder_text_features", {"text": strings(*texts)}, "text_embeds")
    want_t = model.get_text_features(**model.processor(text=texts)).pooler_output
    np.testing.assert_allclose(got_t, want_t, atol=1e-5, rtol=0)


def test_captions_from_concurrent_clients(served):
    server, arts = served
    imgs = [png_bytes(p) for p in photos()]
    model = vlexport.load(arts["tiny-captioner"])
    want = [model.caption([decoded(b)], max_new_tokens=6)[0] for b in imgs]

    def one(b):
        return call(server, "tiny-captioner_caption", {"image": strings(b), "max_new_tokens": np.array([[6]], np.int32)},
                    "generated_text")[0, 0].decode()

    with ThreadPoolExecutor(len(imgs)) as pool:
        got = list(pool.map(one, imgs))
    assert got == want


def test_chat_answer(served):
    server, arts = served
    img = png_bytes(photos()[0])
    model = vlexport.load(arts["tiny-vipllava"])
    want = model.chat(decoded(img), "What is in the box?", max_new_tokens=5)
    got = call(server, "tiny-vipllava_chat", {"image": strings(img), "text": strings("What is in the box?"),
                                              "max_new_tokens": np.array([[5]], np.int32)}, "generated_text")
    assert got[0, 0].decode() == want


def test_detector_regions_from_concurrent_clients(served):
    server, arts = served
    det = vlexport.load(arts["tiny-frcnn"])
    files = [png_bytes(p) for p in photos()]
    want = det.extract([decoded(f) for f in files])  # one image per call, as the endpoint runs them
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda f: call(server, "tiny-frcnn_regions", {"image": strings(f)}, "roi_features"), files))
    for i, g in enumerate(got):
        assert np.allclose(g[0], want["roi_features"][i], atol=1e-5)


def test_bad_image_and_text_errors_name_the_input(served):
    from tritonclient.utils import InferenceServerException

    server, _ = served
    with pytest.raises(InferenceServerException, match="'image'"):
        call(server, "tiny-captioner_caption", {"image": strings(b"not an image at all")}, "generated_text")
    with pytest.raises(InferenceServerException, match="'text'"):
        call(server, "tiny-dual-encoder_text_features", {"text": strings(b"\xff\xfe broken utf-8")}, "text_embeds")
    with pytest.raises(InferenceServerException, match="max_new_tokens"):
        call(server, "tiny-vipllava_chat", {"image": strings(png_bytes(photos()[0])), "text": strings("hi"),
                                            "max_new_tokens": np.array([[10**6]], np.int32)}, "generated_text")
    assert call(server, "tiny-dual-encoder_text_features", {"text": strings("still serving")}, "text_embeds").shape[0] == 1
