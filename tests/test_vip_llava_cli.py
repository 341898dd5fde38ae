"""`vlexport build` + `vlexport predict` for VipLlava artifacts (the tiny built-in one): the streamed
answer to a question about a photo with a drawn visual prompt, beam search, and one-line errors."""

from __future__ import annotations

import pytest

import vlexport
from vlexport.cli import main

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_artifacts):
    from PIL import Image

    root = tmp_path_factory.mktemp("vipllava")
    photo = root / "chelsea.jpg"
    Image.fromarray(skdata.chelsea()).save(photo)
    return tiny_artifacts["tiny-vipllava"], str(photo)  # the session's shared build (read-only)


def test_predict_streams_the_answer_to_a_drawn_box(tiny, capsys):
    out, photo = tiny
    want = vlexport.load(out).chat(photo, "What is inside the red box?", draw="box:40,40,200,180", max_new_tokens=6)
    capsys.readouterr()
    assert main(["predict", str(out), "--image", photo, "--text", "What is inside the red box?",
                 "--draw", "box:40,40,200,180", "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    assert printed.split("\r")[-1].strip() == want
    # the drawing matters: the boxed photo gives other image features than the bare one
    from PIL import Image

    from vlexport.families.vip_llava.draw import draw_visual_prompt

    model = vlexport.load(out)
    bare, boxed = (model.get_image_features(model.processor(text="<image>", images=im)["pixel_values"])
                   for im in (photo, draw_visual_prompt(Image.open(photo), "box:40,40,200,180")))
    assert abs(bare - boxed).max() > 1e-3


def test_predict_with_beams_prints_once(tiny, capsys):
    out, photo = tiny
    want = vlexport.load(out).chat(photo, "What colour is the cat?", num_beams=2, max_new_tokens=5)
    capsys.readouterr()
    assert main(["predict", str(out), "--image", photo, "--text", "What colour is the cat?", "--num-beams", "2",
                 "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.strip() == want


@pytest.mark.parametrize("args,needle", [
    (["--text", "hi"], "--image is required"),
    (["--image", "PHOTO"], "--text is required"),
    (["--image", "PHOTO", "--text", "hi", "--draw", "triangle:1,2,3,4"], "triangle"),
    (["--image", "PHOTO", "--text", "hi", "--draw", "box:1,2,3"], "box"),
    (["--image", "PHOTO", "--text", "hi", "--max-new-tokens", "100000"], "KV cache"),
    (["--image", "PHOTO", "--text", "no placeholder", "--raw-prompt"], "<image>"),
    (["--image", "missing.jpg", "--text", "hi"], "missing.jpg"),
])
def test_bad_predict_arguments_are_one_line(tiny, capsys, args, needle):
    out, photo = tiny
    args = [photo if a == "PHOTO" else a for a in args]
    assert main(["predict", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_build_int4_block_size_pins_the_block(tmp_path, capsys):
    """`--int4-block-size 64`: the one block written (no block-128 trial first), recorded and shown."""
    import json

    out = tmp_path / "art"
    assert main(["build", "--model", "tiny-vipllava", "--out", str(out), "--int4", "--int4-block-size", "64",
                 "--quiet"]) == 0
    int4 = json.loads((out / "manifest.json").read_text())["graphs"]["decoder"]["onnx"]["int4"]
    assert int4["block_size"] == 64 and [t["block_size"] for t in int4["search"]["trials"]] == [64]
    model = vlexport.load(out, precision="int4")
    assert model.artifact.precisions("decoder") == ["fp32", "int4"]
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "4-bit weights, block 64" in capsys.readouterr().out  # the files table says which block
    with pytest.raises(SystemExit) as exit_:  # not a MatMulNBits block: refused before anything is built
        main(["build", "--model", "tiny-vipllava", "--out", str(tmp_path / "b"), "--int4", "--int4-block-size", "48"])
    assert exit_.value.code == 2 and not (tmp_path / "b").exists()
    assert "invalid choice" in capsys.readouterr().err
