"""Generation end to end: small VipLlava models saved by transformers, built with `vlexport build`
(vision + embed graphs traced, the decoder written layer by layer), loaded with `vlexport.load`,
give the same token ids as transformers' generate(): greedy for 32 new tokens, beam search,
left-padded batches of prompts with images; sampling is seeded; streaming; fp16 and int4 graphs
stay close; chat() with a drawn visual prompt runs from pixels to words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vip_llava_kit import EOS, IMAGE_TOKEN, images, make_hf_model, prompts, save_with_processor

transformers = pytest.importorskip("transformers")

import vlexport  # noqa: E402
from vlexport.export.build import build  # noqa: E402
from vlexport.errors import InputError  # noqa: E402
from vlexport.specs import AxisRange  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    hf = make_hf_model(seed=11)
    folder = save_with_processor(hf, tmp_path_factory.mktemp("vipllava-hf"))
    out = build(str(folder), tmp_path_factory.mktemp("art") / "vipllava", fp16=True,
                axes={"batch": AxisRange(1, 1, 12), "text": AxisRange(1, 16, 48), "past": AxisRange(1, 48, 64)},
                progress=False)
    return hf, out


@pytest.fixture(scope="module")
def model(built):
    return vlexport.load(built[1])


def _hf_generate(hf, ids, mask, px, **kw):
    with torch.no_grad():
        return hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                           pixel_values=torch.from_numpy(px), do_sample=False, **kw).numpy()


@pytest.mark.parametrize("num_beams", [1, 3])
def test_token_ids_equal_transformers_generate(built, model, num_beams):
    hf, _ = built
    rng = np.random.default_rng(num_beams)
    ids, mask = prompts(4, rng)  # left-padded, prompts of different lengths
    px = images(4, rng)
    kw = dict(max_new_tokens=32 if num_beams == 1 else 12, num_beams=num_beams)
    theirs = _hf_generate(hf, ids, mask, px, **kw)
    ours = model.generate(input_ids=ids, attention_mask=mask, pixel_values=px, **kw)
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs), (ours, theirs)
    for i in (0, 3):  # alone: the row without the batch's padding
        row = mask[i] == 1
        alone = model.generate(input_ids=ids[i:i + 1, row], pixel_values=px[i:i + 1], **kw)
        assert np.array_equal(alone, _hf_generate(hf, ids[i:i + 1, row], mask[i:i + 1, row], px[i:i + 1], **kw))
    if num_beams == 1:
        new = theirs[:, ids.shape[1]:]
        assert len({tuple(r) for r in new}) > 1, "every prompt gave the same tokens: the test lost its point"


def test_generation_settings_like_transformers(built, model):
    hf, _ = built
    rng = np.random.default_rng(5)
    ids, mask = prompts(3, rng)
    px = images(3, rng)
    # max_length below the prompt's length (HF's default 20 on a long image prompt): refused, as HF does
    with pytest.raises(InputError, match="max_length is 5 but the prompt already has"):
        model.generate(input_ids=ids, attention_mask=mask, pixel_values=px, max_length=5)
    with pytest.raises(ValueError, match="max_length"):
        _hf_generate(hf, ids, mask, px, max_length=5)
    for kw in (dict(max_length=ids.shape[1] + 6), dict(max_new_tokens=8, no_repeat_ngram_size=2),
               dict(max_new_tokens=8, min_length=ids.shape[1] + 6), dict(max_new_tokens=8, num_beams=2,
                                                                         length_penalty=0.3)):
        ours = model.generate(input_ids=ids, attention_mask=mask, pixel_values=px, **kw)
        assert np.array_equal(ours, _hf_generate(hf, ids, mask, px, **kw)), kw


def test_sampling_is_seeded_and_streams(model):
    rng = np.random.default_rng(8)
    ids, mask = prompts(2, rng)
    px = images(2, rng)
    a = model.generate(input_ids=ids, attention_mask=mask, pixel_values=px, do_sample=True, seed=3, max_new_tokens=6)
    b = model.generate(input_ids=ids, attention_mask=mask, pixel_values=px, do_sample=True, seed=3, max_new_tokens=6)
    assert np.array_equal(a, b)
    seen = []
    greedy = model.generate(input_ids=ids, attention_mask=mask, pixel_values=px, max_new_tokens=6,
                            streamer=lambda t: seen.append(t.copy()))
    assert np.array_equal(np.stack(seen, axis=1), greedy[:, ids.shape[1]:])


@pytest.fixture(scope="module")
def tiny_int4(tmp_path_factory):
    """The built-in tiny VipLlava with an int4 decoder (random weights: its quantization error is reported,
    not gated; the graph itself is gated against its int4-rounded numpy reference)."""
    return build("tiny-vipllava", tmp_path_factory.mktemp("art") / "tiny-int4", int4=True, progress=False)


def test_int4_graph_validated_and_recorded(tiny_int4):
    from vlexport.artifact import Artifact

    art = Artifact(tiny_int4)
    entry = art.manifest["graphs"]["decoder"]
    rep = entry["validation"]["int4"]
    assert rep["rounded_reference"]["passed"] and rep["rounded_reference"]["min_cosine"] > 0.99
    assert art.precisions("decoder") == ["fp32", "int4"] and art.precisions("vision") == ["fp32"]
    assert entry["onnx"]["int4"]["quant"] == "int4"
    # random weights gate nothing: the fast block (128) is kept, as the search's one trial records
    assert entry["onnx"]["int4"]["block_size"] == 128
    assert [(t["block_size"], t["passed"]) for t in entry["onnx"]["int4"]["search"]["trials"]] == [(128, True)]


# whole sequences diverge after the first differing token; the tiny random decoder is int4's worst case
@pytest.mark.parametrize("precision,agree", [("fp16", 0.9), ("int4", 0.25)])
def test_reduced_precisions_stay_close(built, tiny_int4, precision, agree):
    """fp16 (cache in fp16) and int4 weight-only decoders: first-step logits close, greedy tokens mostly the same."""
    path = built[1] if precision == "fp16" else tiny_int4
    model = vlexport.load(path)
    reduced = vlexport.load(path, precision=precision)
    rng = np.random.default_rng(9)
    ids, mask = prompts(4, rng)
    px = images(4, rng)
    kw = dict(input_ids=ids, attention_mask=mask, pixel_values=px, max_new_tokens=8)
    a, b = model.generate(**kw)[:, ids.shape[1]:], reduced.generate(**kw)[:, ids.shape[1]:]
    assert (a[:, 0] == b[:, 0]).mean() >= 0.75
    assert (a == b).mean() >= agree
    if precision == "fp16":
        assert reduced.cache_dtype == np.float16


def test_chat_from_pixels_with_a_drawn_box(tiny_int4):
    from PIL import Image

    model = vlexport.load(tiny_int4)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, size=(60, 80, 3), dtype=np.uint8))
    streamed = []
    answer = model.chat(photo, "What is inside the red box?", draw="box:10,10,50,40", max_new_tokens=5,
                        streamer=streamed.append)
    assert isinstance(answer, str) and streamed and streamed[-1].strip() == answer


def test_bad_inputs_get_clear_errors(model):
    from vlexport.errors import InputError

    rng = np.random.default_rng(0)
    ids, mask = prompts(1, rng)
    with pytest.raises(InputError, match="<image> tokens but pixel_values hold 2"):
        model.generate(input_ids=ids, attention_mask=mask, pixel_values=images(2, rng), max_new_tokens=2)
    with pytest.raises(InputError, match="no pixel_values"):
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2)
    with pytest.raises(InputError, match="KV cache of"):
        model.generate(input_ids=ids, attention_mask=mask, pixel_values=images(1, rng), max_new_tokens=200)
    with pytest.raises(InputError, match="attention_mask has shape"):
        model.generate(input_ids=ids, attention_mask=mask[:, 1:], pixel_values=images(1, rng))
    bad = ids.copy()
    bad[0, -1] = 5000
    with pytest.raises(InputError, match="input_ids"):
        model.generate(input_ids=bad, pixel_values=images(1, rng), max_new_tokens=2)
    assert IMAGE_TOKEN in ids and EOS == 2


def test_streamed_decoder_is_written_in_int4_only(tmp_path, monkeypatch):
    """The full-size route at tiny size: a decoder above the streaming threshold is never built in PyTorch;
    the build writes it layer by layer in int4 from streamed numpy weights, validates it against the numpy
    reference (on its int4-rounded weights, and against fp32 weights: reported), and the artifact generates."""
    import json

    from vlexport.artifact import Artifact
    from vlexport.families.vip_llava import model as vip_model
    from vlexport.reference import from_pretrained

    monkeypatch.setattr(vip_model, "STREAM_ABOVE", 0)
    loaded = from_pretrained("tiny-vipllava", random_weights=True)
    assert loaded.model.streamed and not hasattr(loaded.model.model.language_model, "layers")
    out = build("tiny-vipllava", tmp_path / "streamed", progress=False)
    art = Artifact(out)
    entry = art.manifest["graphs"]["decoder"]
    assert art.precisions("decoder") == ["int4"] and entry["streamed"]
    assert str(tmp_path) not in json.dumps(entry["onnx"])  # no build-time (staging) paths in the manifest
    assert entry["validation"]["int4"]["rounded_reference"]["passed"]
    model = vlexport.load(out)  # fp32 asked: the decoder runs in int4, the only form it has
    assert "int4" in model.chosen_because
    rng = np.random.default_rng(0)
    ids, mask = prompts(2, rng, n_image=4)
    new = model.generate(input_ids=ids, attention_mask=mask, pixel_values=images(2, rng), max_new_tokens=4)
    assert new.shape[1] > ids.shape[1]


def test_tensorrt_profiles_cover_every_graph_input(tiny_int4):
    """The profiles a TensorRT build would use (computed without TensorRT): every input of every graph, the
    per-layer cache inputs over the whole "past" range, the vision graph over "images"."""
    import json

    from vlexport.tensorrt.profiles import profiles_from_manifest

    m = json.loads((tiny_int4 / "manifest.json").read_text())
    past, images = m["axes"]["past"], m["axes"]["images"]
    for graph, entry in m["graphs"].items():
        profiles = profiles_from_manifest(m, graph)
        assert profiles and all(list(p) == [i["name"] for i in entry["inputs"]] for p in profiles)
        if graph == "decoder":  # (min, opt, max) shapes; dim 2 of a cache input is "past"
            assert min(p["past_key.0"][0][2] for p in profiles) == past[0]
            assert max(p["past_value.1"][2][2] for p in profiles) == past[2]
        if graph == "vision":
            assert max(p["pixel_values"][2][0] for p in profiles) == images[2]
