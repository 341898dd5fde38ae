"""`vlexport predict` for captioner artifacts (the tiny built-in one): the caption of each image, beam
search, streaming, and one-line errors."""

from __future__ import annotations

import pytest

import vlexport
from vlexport.cli import main
from vlexport.export.build import build

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("captioner")
    out = build("tiny-captioner", root / "art", progress=False)
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
