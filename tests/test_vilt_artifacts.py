"""ViLT artifacts end to end: every head from a random `transformers` checkpoint -> ONNX (+ fp16)
artifact -> `vlexport.load(...)` on ONNX Runtime, compared with transformers itself on image sizes
and text lengths the build never traced (batches of different image sizes, so padding and
pixel_mask matter). Image-token rows of ViltModel's last_hidden_state keep every patch in
row-major order where HF samples them: those are compared in test_vilt_oracle.py, here the text
rows, the image [CLS] row and the pooler."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vlexport
from oracle import run_hf
from vilt_kit import NLVR2, make_feeds
from vlexport import families
from vlexport.export.build import build
from vlexport.specs import AxisRange

ARCHS = list(families.get("vilt").architectures)
AXES = {"batch": AxisRange(1, 2, 4), "text": AxisRange(2, 8, 16), "height": AxisRange(16, 48, 96, 16),
        "width": AxisRange(16, 48, 96, 16)}
# (batch, text, image sizes in the batch): none is the traced shape (batch 2, text 7, 48 x 48)
UNSEEN = [(1, 16, [(96, 96)]), (3, 5, [(96, 32), (48, 80), (16, 16)]), (4, 2, [(16, 96), (64, 64)]),
          (2, 11, [(32, 48), (80, 16)])]


@pytest.fixture(scope="module")
def built(hf_checkpoint, tmp_path_factory):
    cache = {}

    def get(arch):
        if arch not in cache:
            hf = hf_checkpoint(arch)
            out = tmp_path_factory.mktemp("vilt") / arch
            axes = {k: v for k, v in AXES.items() if not (arch == NLVR2 and k == "batch")}
            build(str(hf.folder), out, fp16=True, progress=False, axes=axes)
            cache[arch] = hf, out
        return cache[arch]

    return get


def _compare(arch, ours, theirs, text_len):
    if arch == "ViltModel":
        pairs = [("pooler_output", ours["pooler_output"], theirs["pooler_output"]),
                 ("text rows + image [CLS]", ours["last_hidden_state"][:, :text_len + 1],
                  theirs["last_hidden_state"][:, :text_len + 1])]
    else:
        pairs = [("logits", ours["logits"], theirs["logits"])]
    for name, a, b in pairs:
        b = b.numpy()
        assert a.shape == b.shape, (name, a.shape, b.shape)
        err = float(np.abs(a - b).max())
        assert err <= 1e-4, f"{arch} {name}: max abs diff {err:.3g}"


@pytest.mark.parametrize("arch", ARCHS)
def test_artifact_matches_transformers_on_unseen_image_sizes(arch, built):
    hf, out = built(arch)
    m = json.loads((out / "manifest.json").read_text())
    assert m["family"] == "vilt" and m["architecture"] == arch
    traced = m["graphs"]["model"]["trace_sizes"]
    model = vlexport.load(out, backend="onnxruntime")
    rng = np.random.default_rng(sum(map(ord, arch)))
    for batch, text, sizes in UNSEEN:
        if arch == NLVR2:
            batch = min(batch, 2)
        feeds = make_feeds(arch, hf.config, batch, text, sizes, rng)
        H, W = feeds["pixel_values"].shape[-2:]
        assert {"batch": batch, "text": text, "height": H, "width": W} != traced
        _compare(arch, dict(model(**feeds)), run_hf(hf.model, feeds), text)


def test_fp16_graph_validated_over_the_whole_range(built):
    _, out = built("ViltForQuestionAnswering")
    g = json.loads((out / "manifest.json").read_text())["graphs"]["model"]
    rep = g["validation"]["fp16"]
    assert rep["passed"] and rep["largest"] == {k: r.max for k, r in AXES.items()}
    assert [i["dims"] for i in g["inputs"] if i["name"] == "pixel_values"] == [["batch", 3, "height", "width"]]
    assert json.loads((out / "manifest.json").read_text())["axes"]["height"] == [16, 48, 96, 16]


def test_sizes_off_the_patch_grid_are_refused(built):
    hf, out = built("ViltForQuestionAnswering")
    model = vlexport.load(out)
    feeds = make_feeds("ViltForQuestionAnswering", hf.config, 1, 5, [(40, 48)], np.random.default_rng(0))
    with pytest.raises(vlexport.errors.InputError, match=r"height=40, outside .* in steps of 16"):
        model(**feeds)
