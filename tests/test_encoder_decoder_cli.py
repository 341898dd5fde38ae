"""`vlexport predict` for captioner artifacts (the tiny built-in one): the caption of each image, beam
search, streaming, and one-line errors."""

from __future__ import annotations

import pytest

import vlexport
from vlexport.cli import main
from vlexport.export.build import build

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_artifacts):
    from PIL import Image

    root = tmp_path_factory.mktemp("captioner")
    out = tiny_artifacts["tiny-captioner"]  # the session's shared build (read-only)
    photos = []
    for name in ("chelsea", "astronaut"):
        p = root / f"{name}.jpg"
        Image.fromarray(getattr(skdata, name)()).save(p)
        photos.append(str(p))
    return out, photos


def test_predict_prints_each_caption(tiny, capsys):
    out, photos = tiny
    want = vlexport.load(out).caption(photos, max_new_tokens=6)
    capsys.readouterr()
    assert main(["predict", str(out), "--image", *photos, "--max-new-tokens", "6"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"{p}: {t}" for p, t in zip(photos, want)]
    assert main(["predict", str(out), "--image", photos[0], "--num-beams", "3", "--max-new-tokens", "6"]) == 0
    beam = vlexport.load(out).caption(photos[:1], max_new_tokens=6, num_beams=3)[0]
    assert capsys.readouterr().out.strip() == f"{photos[0]}: {beam}"


def test_stream_prints_the_greedy_caption(tiny, capsys):
    out, photos = tiny
    want = vlexport.load(out).caption(photos[:1], max_new_tokens=6)[0]
    capsys.readouterr()
    assert main(["predict", str(out), "--image", photos[0], "--max-new-tokens", "6", "--stream"]) == 0
    assert capsys.readouterr().out.split("\r")[-1].strip() == want


@pytest.mark.parametrize("args,needle", [([], "--image is required"), (["--stream"], "one --image"),
                                         (["--num-beams", "0"], "num_beams"), (["--max-new-tokens", "100000"], "past")])
def test_bad_predict_arguments_are_one_line(tiny, capsys, args, needle):
    out, photos = tiny
    extra = ["--image", *photos] if args and args[0] == "--stream" else (["--image", photos[0]] if args else [])
    assert main(["predict", str(out), *extra, *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_fp16_artifact_keeps_its_cache_in_fp16(tmp_path):
    """The fp16 graphs take and give the KV cache (past/new/cross keys and values) as float16; the
    runtime's buffers follow, and its greedy ids agree with fp32's."""
    import numpy as np
    import onnxruntime as ort

    out = build("tiny-captioner", tmp_path / "art", fp16=True, progress=False)
    sess = ort.InferenceSession(str(out / "decoder.fp16.onnx"), providers=["CPUExecutionProvider"])
    types = {t.name: t.type for t in (*sess.get_inputs(), *sess.get_outputs())}
    cache = [n for n in types if n.startswith(("past_", "cross_", "new_"))]
    assert len(cache) == 6 * 2 and "past_key.1" in cache  # two layers: one tensor per layer, kind and key/value
    for name in cache:
        assert types[name] == "tensor(float16)", name
    assert types["logits"] == "tensor(float)" and types["input_ids"] == "tensor(int64)"
    m16, m32 = vlexport.load(out, precision="fp16"), vlexport.load(out)
    assert m16.cache_dtype == np.float16 and m32.cache_dtype == np.float32
    px = np.random.default_rng(0).uniform(-1, 1, (6, 3, 32, 32)).astype(np.float32)
    assert m16.encode(px)["cross_key.0"].dtype == np.float16
    ids16 = m16.generate(pixel_values=px, max_new_tokens=10)
    ids32 = m32.generate(pixel_values=px, max_new_tokens=10)
    assert (ids16 == ids32).mean() > 0.9


def test_decoder_graphs_of_another_layout_are_refused():
    """An artifact whose decoder takes the stacked cache (vlexport's layout before per-layer inputs), or any
    other inputs than a per-layer cache of the config's depth, is refused by name: never fed wrongly."""
    from vlexport.errors import ArtifactError
    from vlexport.families.vision_encoder_decoder.pipeline import check_decoder_inputs
    from vlexport.specs import cache_names

    good = ["input_ids", "position_ids", "cache_mask", *cache_names(2, "past"), *cache_names(2, "cross")]
    check_decoder_inputs(good, 2, "art")
    stacked = ["input_ids", "position_ids", "cache_mask", "past_keys", "past_values", "cross_keys", "cross_values"]
    with pytest.raises(ArtifactError, match=r"art: .*stacked input \(past_keys\).*rebuild"):
        check_decoder_inputs(stacked, 2, "art")
    with pytest.raises(ArtifactError, match="not the 11 a 2-layer"):
        check_decoder_inputs(good[:-2], 2, "art")
    with pytest.raises(ArtifactError, match="not the 19 a 4-layer"):
        check_decoder_inputs(good, 4, "art")
