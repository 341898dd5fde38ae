"""The serving endpoints of every family, in process (no Triton server): requests as Triton delivers
them (object arrays of UTF-8 / encoded image bytes, batch first), merged by `endpoints.execute`, must
give what the pipeline gives when called directly on the same inputs; one bad request gets its own
InputError naming the input, and the requests merged with it still get their right outputs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import vlexport
from vlexport import families
from vlexport.artifact import Artifact, new_manifest
from vlexport.errors import InputError
from vlexport.serving.endpoints import endpoints_for, execute, graph_endpoints

skdata = pytest.importorskip("skimage.data")

TINY = {"visual_bert": "tiny-visualbert-vqa", "vilt": "tiny-vilt-vqa", "dual": "tiny-dual-encoder",
        "captioner": "tiny-captioner", "vipllava": "tiny-vipllava"}


@pytest.fixture(scope="module")
def built(tiny_artifacts):
    """The five tiny artifacts (conftest builds them once per session)."""
    return {k: tiny_artifacts[m] for k, m in TINY.items()}


# ----------------------------------------------------------------------------- requests as Triton sends them
def photo(name: str, size) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB").resize(size)


PHOTOS = [photo("astronaut", (40, 30)), photo("chelsea", (50, 50)), photo("coffee", (33, 60)),
          photo("camera", (64, 48)), photo("rocket", (45, 70))]


def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def decoded(data: bytes) -> Image.Image:
    """What the server sees: the image file decoded (a JPEG is not the image it was made from)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def strings(*items) -> np.ndarray:
    """(n, 1) BYTES tensor; str items are UTF-8 encoded, bytes kept as they are."""
    out = np.empty((len(items), 1), dtype=object)
    out[:, 0] = [s.encode() if isinstance(s, str) else s for s in items]
    return out


def ints(*values) -> np.ndarray:
    return np.asarray(values, dtype=np.int32).reshape(-1, 1)


def by_name(endpoints, name):
    (ep,) = [e for e in endpoints if e.name == name]
    return ep


def run_all(pipeline, endpoint, requests):
    results = execute(pipeline, endpoint, requests)
    assert len(results) == len(requests)
    return results


def assert_error(result, name: str):
    assert isinstance(result, InputError), result
    assert f"'{name}'" in str(result), str(result)


LONG = "how many " + "very " * 80 + "big cats are there?"
QUESTIONS = ["what is it?", "how many cats are in the picture and what colour are they?", "red", "is it a dog"]


# ----------------------------------------------------------------------------- endpoint listing
def test_endpoints_for_lists_the_graphs_then_the_processor_endpoints(built):
    names = {k: [e.name for e in endpoints_for(Artifact(p))] for k, p in built.items()}
    assert names == {"visual_bert": ["model", "pipeline"], "vilt": ["model", "pipeline"],
                     "dual": ["vision", "text", "image_features", "text_features"],
                     "captioner": ["encoder", "decoder", "caption"], "vipllava": ["vision", "embed", "decoder", "chat"]}
    vb = by_name(endpoints_for(Artifact(built["visual_bert"])), "pipeline")
    assert [(t.name, t.dtype, t.dims) for t in vb.inputs] == [("text", "bytes", (1,)),
                                                              ("visual_embeds", "float32", (-1, 16))]
    assert [(t.name, t.dtype, t.dims) for t in vb.outputs] == [("logits", "float32", (16,))]
    assert vb.max_batch == 32 and vb.graphs == ("model",) and vb.kind == "processor"
    dual = endpoints_for(Artifact(built["dual"]))
    assert by_name(dual, "image_features").graphs == ("vision",) and by_name(dual, "text_features").graphs == ("text",)
    assert [(t.name, t.dims) for t in by_name(dual, "text_features").outputs] == [("text_embeds", (16,))]
    for key, name in (("captioner", "caption"), ("vipllava", "chat")):
        ep = by_name(endpoints_for(Artifact(built[key])), name)
        assert [(t.name, t.optional) for t in ep.inputs if t.dtype == "int32"] == [("max_new_tokens", True),
                                                                                   ("num_beams", True)]
        assert [(t.name, t.dtype, t.dims) for t in ep.outputs] == [("generated_text", "bytes", (1,))]
        assert set(ep.graphs) == set(Artifact(built[key]).graph_names)


def described(tmp_path, architecture: str, config_overrides=None, **options) -> Artifact:
    """An artifact folder holding only the manifest of a description (no graphs): enough to list endpoints."""
    fam = families.for_architecture(architecture)
    config = {**fam.tiny[next(iter(fam.tiny))](), **(config_overrides or {})}
    spec = fam.describe(architecture, fam.config_from_dict(config), **options)
    m = new_manifest(spec, {"model": "described"}, config)
    m["complete"] = True
    folder = tmp_path / architecture
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(m))
    return Artifact(folder)


@pytest.mark.parametrize("architecture,options,served", [
    ("VisualBertModel", {}, True),
    ("VisualBertForPreTraining", {}, True),
    ("VisualBertForVisualReasoning", {}, True),
    ("VisualBertForMultipleChoice", {}, False),  # a choices axis: one text per example cannot fill it
    ("VisualBertForRegionToPhraseAlignment", {}, False),  # region_to_phrase_position
    ("VisualBertForQuestionAnswering", {"with_alignment": True}, False),  # image_text_alignment
])
def test_visual_bert_heads_the_processor_cannot_feed_get_no_processor_endpoint(tmp_path, architecture, options,
                                                                                served):
    art = described(tmp_path, architecture, **options)
    eps = endpoints_for(art)
    assert [e.name for e in eps] == (["model", "pipeline"] if served else ["model"])
    if architecture == "VisualBertModel":  # named dims become -1, the batch axis is dropped
        assert [(t.name, t.dims) for t in eps[1].outputs] == [("last_hidden_state", (-1, 32)), ("pooler_output", (32,))]


def test_vilt_nlvr2_takes_num_images_images_per_text(tmp_path):
    art = described(tmp_path, "ViltForImagesAndTextClassification", {"num_images": 2})
    ep = by_name(endpoints_for(art), "pipeline")
    assert [(t.name, t.dims) for t in ep.inputs] == [("text", (1,)), ("image", (2,))]
    assert ep.max_batch == 16


# ----------------------------------------------------------------------------- VisualBERT
def test_visual_bert_pipeline_endpoint(built):
    model = vlexport.load(built["visual_bert"])
    ep = by_name(endpoints_for(model.artifact), "pipeline")
    rng = np.random.default_rng(0)
    regions = lambda n, v=5: rng.standard_normal((n, v, 16)).astype(np.float32)  # noqa: E731
    requests = [
        {"text": strings(QUESTIONS[0], QUESTIONS[1]), "visual_embeds": regions(2)},
        {"text": strings("\xff not text".encode("latin-1")), "visual_embeds": regions(1)},  # not UTF-8
        {"text": strings(QUESTIONS[2]), "visual_embeds": regions(1)},
        {"text": strings(LONG), "visual_embeds": regions(1)},  # longer than the 64-token profile
        {"text": strings(QUESTIONS[3], "   "), "visual_embeds": regions(2)},  # an empty text
        {"text": strings(QUESTIONS[3], QUESTIONS[0], QUESTIONS[2]), "visual_embeds": regions(3, 7)},  # other regions
    ]
    results = run_all(model, ep, requests)
    for i in (1, 3, 4):
        assert_error(results[i], "text")
    assert "UTF-8" in str(results[1]) and "64" in str(results[3]) and "empty" in str(results[4])
    for i in (0, 2, 5):
        req = requests[i]
        texts = [b.decode() for b in req["text"][:, 0]]
        want = model(**model.processor(text=texts, visual_embeds=req["visual_embeds"])).logits
        assert set(results[i]) == {"logits"}
        np.testing.assert_allclose(results[i]["logits"], want, atol=1e-5, rtol=0)


def test_visual_bert_raw_graph_endpoint(built):
    model = vlexport.load(built["visual_bert"])
    (ep,) = graph_endpoints(model.artifact)
    assert ep.name == "model" and ep.kind == "graph"
    rng = np.random.default_rng(1)

    def feeds(n, t=9, v=4):
        mask = np.ones((n, t), np.int64)
        mask[:, t - 2:] = 0
        return {"input_ids": rng.integers(0, 2999, (n, t)), "attention_mask": mask,
                "visual_embeds": rng.standard_normal((n, v, 16)).astype(np.float32)}

    requests = [feeds(1), feeds(3), feeds(2, t=12), feeds(2), feeds(1, v=6)]
    bad = feeds(2)
    bad["input_ids"][1, 3] = 2999  # past the vocabulary
    requests.insert(2, bad)
    results = run_all(model, ep, requests)
    assert_error(results[2], "input_ids")
    for i, req in enumerate(requests):
        if i != 2:
            np.testing.assert_allclose(results[i]["logits"], model(**req).logits, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- ViLT
def test_vilt_pipeline_endpoint(built):
    model = vlexport.load(built["vilt"])
    ep = by_name(endpoints_for(model.artifact), "pipeline")
    jpeg = encoded(PHOTOS[1], "JPEG")
    requests = [
        {"text": strings(QUESTIONS[0], QUESTIONS[1]), "image": strings(encoded(PHOTOS[0]), encoded(PHOTOS[2]))},
        {"text": strings(QUESTIONS[2]), "image": strings(b"GIF89a but not really an image")},
        {"text": strings(QUESTIONS[3]), "image": strings(jpeg)},
        {"text": strings(LONG), "image": strings(encoded(PHOTOS[3]))},  # more than 40 tokens
        {"text": strings(QUESTIONS[2], QUESTIONS[0], QUESTIONS[3]),
         "image": strings(encoded(PHOTOS[4]), jpeg, encoded(PHOTOS[3]))},
    ]
    results = run_all(model, ep, requests)
    assert_error(results[1], "image")
    assert_error(results[3], "text")
    for i in (0, 2, 4):
        req = requests[i]
        texts = [b.decode() for b in req["text"][:, 0]]
        images = [decoded(b) for b in req["image"][:, 0]]
        want = model(**model.processor(images=images, text=texts)).logits
        np.testing.assert_allclose(results[i]["logits"], want, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- dual encoder
def test_dual_encoder_feature_endpoints(built):
    model = vlexport.load(built["dual"])
    eps = endpoints_for(model.artifact)
    image_ep, text_ep = by_name(eps, "image_features"), by_name(eps, "text_features")
    proc = model.processor
    image_reqs = [{"image": strings(encoded(PHOTOS[0]), encoded(PHOTOS[1], "JPEG"))},
                  {"image": strings(b"")},  # empty bytes
                  {"image": strings(encoded(PHOTOS[2]))},
                  {"image": strings(encoded(PHOTOS[3]), b"\x89PNG\r\n\x1a\n truncated", encoded(PHOTOS[4]))}]
    text_reqs = [{"text": strings(QUESTIONS[1])}, {"text": strings(QUESTIONS[0], QUESTIONS[2], QUESTIONS[3])},
                 {"text": strings(b"caf\xe9")}, {"text": strings(LONG)}, {"text": strings("a cat", "two dogs")}]
    # served as the server loads them: only the endpoint's graph (a generic Pipeline), and the whole pipeline
    for pipeline in (vlexport.load(built["dual"], graphs=["vision"]), model):
        results = run_all(pipeline, image_ep, image_reqs)
        assert_error(results[1], "image")
        assert_error(results[3], "image")
        for i in (0, 2):
            images = [decoded(b) for b in image_reqs[i]["image"][:, 0]]
            want = model.get_image_features(proc.image_processor(images)["pixel_values"]).pooler_output
            np.testing.assert_allclose(results[i]["image_embeds"], want, atol=1e-5, rtol=0)
    for pipeline in (vlexport.load(built["dual"], graphs=["text"]), model):
        results = run_all(pipeline, text_ep, text_reqs)
        assert_error(results[2], "text")
        assert_error(results[3], "text")
        for i in (0, 1, 4):
            texts = [b.decode() for b in text_reqs[i]["text"][:, 0]]
            want = model.get_text_features(**proc.tokenizer(texts)).pooler_output
            np.testing.assert_allclose(results[i]["text_embeds"], want, atol=1e-5, rtol=0)
            # projected, not normalized: the graph's output, not the forward's unit vectors
            assert not np.allclose(np.linalg.norm(results[i]["text_embeds"], axis=1), 1.0)


# ----------------------------------------------------------------------------- captioner
def test_captioner_caption_endpoint(built):
    model = vlexport.load(built["captioner"])
    ep = by_name(endpoints_for(model.artifact), "caption")
    room = model.artifact.axes["past"].max - 1
    img = [encoded(p) for p in PHOTOS]
    requests = [
        {"image": strings(img[0], img[1])},  # the generation config's settings
        {"image": strings(img[2]), "max_new_tokens": ints(5)},
        {"image": strings(img[3], img[4], img[0]), "max_new_tokens": ints(3, 8, 3), "num_beams": ints(1, 2, 3)},
        {"image": strings(img[1]), "max_new_tokens": ints(0)},
        {"image": strings(img[1]), "max_new_tokens": ints(room + 1)},  # beyond the KV cache
        {"image": strings(img[2], img[4]), "max_new_tokens": ints(6, 6), "num_beams": ints(2, 2)},
        {"image": strings(img[0]), "max_new_tokens": ints(4), "num_beams": ints(0)},
        {"image": strings(b"nope"), "max_new_tokens": ints(4), "num_beams": ints(1)},
        {"image": strings(img[3]), "max_new_tokens": ints(room)},  # the whole cache
    ]
    results = run_all(model, ep, requests)
    assert_error(results[3], "max_new_tokens")
    assert_error(results[4], "max_new_tokens")
    assert_error(results[6], "num_beams")
    assert_error(results[7], "image")
    for i in (0, 1, 2, 5, 8):
        req = requests[i]
        got = [b.decode() for b in results[i]["generated_text"][:, 0]]
        assert results[i]["generated_text"].shape == (len(got), 1)
        for row, data in enumerate(req["image"][:, 0]):
            kw = {k: int(req[k][row, 0]) for k in ("max_new_tokens", "num_beams") if k in req}
            assert got[row] == model.caption([decoded(data)], **kw)[0], (i, row, kw)


# ----------------------------------------------------------------------------- VipLlava
def test_vip_llava_chat_endpoint(built):
    model = vlexport.load(built["vipllava"])
    ep = by_name(endpoints_for(model.artifact), "chat")
    past = model.artifact.axes["past"].max
    img = [encoded(p) for p in PHOTOS]
    requests = [
        {"image": strings(img[0], img[1]), "text": strings(QUESTIONS[0], QUESTIONS[1]),
         "max_new_tokens": ints(4, 6), "num_beams": ints(1, 2)},
        {"image": strings(img[2]), "text": strings(QUESTIONS[2]), "max_new_tokens": ints(5), "num_beams": ints(1)},
        {"image": strings(img[3]), "text": strings(""), "max_new_tokens": ints(5), "num_beams": ints(1)},
        {"image": strings(img[4], img[0], img[2]), "text": strings(QUESTIONS[3], QUESTIONS[1], QUESTIONS[0]),
         "max_new_tokens": ints(5, 5, 3), "num_beams": ints(1, 1, 2)},
        {"image": strings(img[0]), "text": strings("what is <image> this?"), "max_new_tokens": ints(3),
         "num_beams": ints(1)},
        {"image": strings(img[1]), "text": strings(QUESTIONS[0]), "max_new_tokens": ints(past),  # past the cache
         "num_beams": ints(1)},
        {"image": strings(img[1][:40]), "text": strings(QUESTIONS[0]), "max_new_tokens": ints(3),
         "num_beams": ints(1)},  # a cut-off PNG
        {"image": strings(img[1]), "text": strings(QUESTIONS[1])},  # the defaults: greedy, what the cache allows
    ]
    results = run_all(model, ep, requests)
    assert_error(results[2], "text")
    assert_error(results[4], "text")
    assert_error(results[5], "max_new_tokens")
    assert_error(results[6], "image")
    for i in (0, 1, 3, 7):
        req = requests[i]
        got = [b.decode() for b in results[i]["generated_text"][:, 0]]
        for row in range(len(got)):
            kw = {k: int(req[k][row, 0]) for k in ("max_new_tokens", "num_beams") if k in req}
            kw.setdefault("max_new_tokens", 32)  # the endpoint's default (it fits this cache)
            want = model.chat(decoded(req["image"][row, 0]), req["text"][row, 0].decode(), **kw)
            assert got[row] == want, (i, row, kw)
