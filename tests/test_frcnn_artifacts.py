"""The detector artifact end to end: `vlexport build` of the tiny detector (fp32 + fp16 graphs),
`vlexport.load`'s regions pipeline against our PyTorch reference (which matches the demo's code, see
test_frcnn.py) on photographs at sizes and batches the export never saw, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import frcnn_kit as kit
import vlexport
from vlexport.errors import ArtifactError, InputError
from vlexport.reference import from_pretrained

TINY = "tiny-frcnn"


@pytest.fixture(scope="module")
def artifact(tiny_artifacts):
    return tiny_artifacts[TINY]  # fp32 + fp16 (int8 refused), the session's shared build (read-only)


@pytest.fixture(scope="module")
def reference():
    return from_pretrained(TINY).model


@pytest.mark.parametrize("names", [["coffee"], ["astronaut", "chelsea", "coffee"]])
def test_runtime_matches_the_reference(artifact, reference, names):
    from test_frcnn import assert_same_regions

    det = vlexport.load(artifact, precision="fp32")
    x = det.processor(images=[kit.photos()[n] for n in names])
    ours = det(**x)
    ref = reference(x["pixel_values"], x["image_sizes"], x["scales_yx"])
    assert_same_regions(ours, ref, f"runtime {names}")
    # extract(): one image per call, each as the reference gives it alone
    again = det.extract([kit.photos()[n] for n in names])
    for i, n in enumerate(names):
        xi = det.processor(images=[kit.photos()[n]])
        alone = reference(xi["pixel_values"], xi["image_sizes"], xi["scales_yx"])
        assert np.abs(again["roi_features"][i] - alone["roi_features"][0]).max() <= 1e-5


def test_fp16_graphs_find_the_same_regions(artifact, reference):
    det = vlexport.load(artifact, precision="fp16")
    x = det.processor(images=[kit.photos()["astronaut"]])
    ours, ref = det(**x), reference(x["pixel_values"], x["image_sizes"], x["scales_yx"])
    n = int(ref["preds_per_image"][0])
    a, b = ours["roi_features"][0, :n], ref["roi_features"][0, :n]
    # near-tied random-weight proposals may swap under fp16; most regions must be the same boxes
    same = np.abs(ours["boxes"][0, :n] - ref["boxes"][0, :n]).max(axis=1) < 1.0
    assert same.mean() >= 0.8
    cos = (a[same] * b[same]).sum(1) / np.linalg.norm(a[same], axis=1) / np.linalg.norm(b[same], axis=1)
    assert cos.min() >= 0.99


def test_manifest_and_profiles(artifact):
    man = json.loads((artifact / "manifest.json").read_text())
    assert man["pipeline"] == "regions" and set(man["graphs"]) == {"backbone", "roi_heads"}
    assert len(man["model_facts"]["cell_anchors"]) == 9 and man["model_facts"]["stride"] == 16
    assert man["axes"]["height"][-1] == 240 and man["axes"]["rois"][-1] == 100


def test_bad_inputs_get_clear_errors(artifact):
    det = vlexport.load(artifact, precision="fp32")
    x = det.processor(images=[kit.photos()["coffee"]])
    with pytest.raises(InputError, match="image_sizes"):
        det(pixel_values=x["pixel_values"], image_sizes=np.array([[999, 10]]))
    with pytest.raises(InputError, match="image_sizes"):
        det(pixel_values=x["pixel_values"], image_sizes=np.array([1.5, 2.0]))
    with pytest.raises(InputError, match="scales_yx"):
        det(**{**x, "scales_yx": np.array([[np.nan, 1.0]], np.float32)})
    with pytest.raises(InputError, match="pixel_values"):  # beyond the built height range
        det(pixel_values=np.zeros((1, 3, 300, 200), np.float32))
    with pytest.raises(InputError, match="pixel_values"):
        det(pixel_values=np.zeros((1, 4, 160, 200), np.float32))
    with pytest.raises(InputError, match="unexpected"):
        det(**x, input_ids=np.zeros((1, 3), np.int64))


def test_tampered_anchors_are_refused(artifact, tmp_path):
    from vlexport.artifact import hash_files

    bad = tmp_path / "bad"
    shutil.copytree(artifact, bad)
    man = json.loads((bad / "manifest.json").read_text())
    man["model_facts"]["cell_anchors"] = [[0, 0, 1e30, 1]] * 9
    (bad / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="cell_anchors"):
        vlexport.load(bad, precision="fp32")
    assert hash_files  # the manifest itself is not hashed: its values are checked instead


def test_predict_prints_the_regions(artifact, tmp_path, capsys):
    from PIL import Image

    from vlexport.cli import main

    photo = tmp_path / "coffee.jpg"
    Image.fromarray(kit.photos()["coffee"]).save(photo)
    assert main(["predict", str(artifact), "--image", str(photo), "--top-k", "4"]) == 0
    out = capsys.readouterr().out
    assert "36 regions (top 4" in out and "class id" in out
    assert main(["predict", str(artifact)]) != 0
    assert "--image is required" in capsys.readouterr().err


def test_regions_serving_endpoint_matches_load(artifact):
    """The "regions" endpoint's run() on a server-style pipeline (only its graphs loaded), without a server."""
    import io

    from PIL import Image

    from vlexport.errors import InputError as Bad
    from vlexport.families.frcnn.serve import endpoints

    (ep,) = endpoints(vlexport.artifact.Artifact(artifact))
    assert ep.name == "regions" and ep.graphs == ("backbone", "roi_heads")
    generic = vlexport.load(artifact, graphs=list(ep.graphs))
    files = []
    for name in ("coffee", "chelsea"):
        buf = io.BytesIO()
        Image.fromarray(kit.photos()[name]).save(buf, format="PNG")
        files.append([buf.getvalue()])
    out = ep.run(generic, {"image": np.array(files, dtype=object)})
    want = vlexport.load(artifact).extract([Image.open(io.BytesIO(f[0])) for f in files])
    assert out["preds_per_image"][:, 0].tolist() == want["preds_per_image"].tolist()
    assert np.array_equal(out["obj_ids"], want["obj_ids"]) and np.allclose(out["roi_features"], want["roi_features"])
    assert {t.name: t.dims for t in ep.outputs}["roi_features"] == (36, 16)
    with pytest.raises(Bad, match="input 'image'"):
        ep.run(generic, {"image": np.array([[b"not an image"]], dtype=object)})
