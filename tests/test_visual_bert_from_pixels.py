"""VisualBERT from a photo: a detector artifact built into the VisualBERT artifact (--regions), used by
`vlexport predict --image`, `processor(text=..., images=...)` and `vlexport regions`; answers in words
from a label file (--labels, or trainval_label2ans.json beside the checkpoint)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import frcnn_kit as kit
import vlexport
from vlexport.cli import main
from vlexport.errors import ConfigError, InputError
from vlexport.export.build import build

WORDS = ["yes", "no", "zero", "one", "two", "three", "four", "five", "red", "blue", "green", "white", "black",
         "cat", "dog", "person"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("photos") / "chelsea.jpg"
    Image.fromarray(kit.photos()["chelsea"]).save(path, quality=95)
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("vb-pixels")
    (root / "answers.json").write_text(json.dumps(WORDS))
    return build("tiny-visualbert-vqa", root / "a", companion=("regions", "tiny-frcnn"), labels=str(root / "answers.json"),
                 progress=False, fuse="never", threads=2)


def test_the_detector_is_built_inside_and_hashed(artifact):
    man = json.loads((artifact / "manifest.json").read_text())
    assert man["companions"] == {"regions": {"folder": "regions", "model": "tiny-frcnn"}}
    assert "regions/backbone.onnx" in man["files"] and "regions/manifest.json" in man["files"]
    assert man["labels_from"]["source"] == "answers.json" and len(man["labels_from"]["sha256"]) == 64


def test_processor_images_equal_the_detector_features(artifact, photo):
    model = vlexport.load(artifact)
    det = vlexport.load(artifact / "regions")
    feats = det.extract([str(photo)])
    n = int(feats["preds_per_image"][0])
    a = model.processor(text=["what is it?", "what color?"], images=[str(photo)])
    b = model.processor(text=["what is it?", "what color?"], visual_embeds=[feats["roi_features"][0, :n]] * 2)
    for k in b.keys():
        assert np.array_equal(a[k], b[k]), k
    assert np.allclose(model(**a).logits, model(**b).logits)
    with pytest.raises(InputError, match="not both"):
        model.processor(text="hi", images=[str(photo)], visual_embeds=np.zeros((2, 16), np.float32))
    with pytest.raises(InputError, match="one per text"):
        model.processor(text=["a", "b", "c"], images=[str(photo)] * 2)


def test_predict_from_a_photo_prints_answer_words(artifact, photo, capsys):
    assert main(["predict", str(artifact), "--image", str(photo), "--text", "what animal is this?"]) == 0
    out, err = capsys.readouterr()
    assert "regions: 36 per image" in err
    assert any(w in out for w in WORDS) and "LABEL_" not in out


def test_predict_image_without_a_detector_says_how_to_get_one(tmp_path, photo, capsys):
    plain = build("tiny-visualbert-vqa", tmp_path / "plain", progress=False, fuse="never", threads=1)
    assert main(["predict", str(plain), "--image", str(photo), "--text", "what?"]) != 0
    assert "--regions" in capsys.readouterr().err
    with pytest.raises(InputError, match="region detector"):
        vlexport.load(plain).processor(text="what?", images=[str(photo)])


def test_a_detector_of_another_width_is_refused(artifact):
    from vlexport.artifact import Artifact
    from vlexport.families.visual_bert.config import VisualBertConfig
    from vlexport.families.visual_bert.from_pixels import check_detector

    with pytest.raises(ConfigError, match="16-d region features.*2048-d"):
        check_detector(VisualBertConfig.from_dict({"visual_embedding_dim": 2048}), Artifact(artifact / "regions"))


def test_regions_command_writes_bottom_up_attention_npz(artifact, photo, tmp_path, capsys):
    from vlexport.families.visual_bert.predict import read_regions

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "cat.jpg").write_bytes(photo.read_bytes())
    (imgs / "coffee.png").write_bytes(b"")  # an unreadable image is skipped, not fatal
    out = tmp_path / "features"
    assert main(["regions", "--images", str(imgs), "--out", str(out), "--detector", str(artifact), "--quiet"]) == 0
    d = np.load(out / "cat.npz")
    n = int(d["num_bbox"])
    assert d["x"].shape == (n, 16) and d["bbox"].shape == (n, 4) and (d["image_h"], d["image_w"]) == (300, 451)
    assert d["objects_id"].shape == d["attrs_conf"].shape == (n,)
    assert np.array_equal(read_regions(out / "cat.npz"), d["x"])
    index = json.loads((out / "index.json").read_text())
    assert index["extracted"] == 1 and index["skipped"][0]["image"].endswith("coffee.png")
    # a second run keeps what is there
    before = (out / "cat.npz").stat().st_mtime_ns
    assert main(["regions", "--images", str(imgs / "cat.jpg"), "--out", str(out), "--detector", str(artifact),
                 "--quiet"]) == 0
    assert (out / "cat.npz").stat().st_mtime_ns == before
    assert json.loads((out / "index.json").read_text())["kept_existing"] == 1


def test_regions_command_errors(artifact, photo, tmp_path, capsys):
    assert main(["regions", "--images", str(photo), "--out", str(tmp_path / "f"), "--detector", str(tmp_path)]) != 0
    assert "vlexport build --model unc-nlp/frcnn-vg-finetuned" in capsys.readouterr().err
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(photo.read_bytes())
    (tmp_path / "b" / "x.jpg").write_bytes(photo.read_bytes())
    assert main(["regions", "--images", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "f"),
                 "--detector", str(artifact)]) != 0
    assert "two images would write x.npz" in capsys.readouterr().err


# ----------------------------------------------------------------------------- answer names

def test_answer_file_beside_the_checkpoint_replaces_placeholder_names(tmp_path):
    from safetensors.torch import save_file

    from vlexport.families.visual_bert.checkpoints import tiny_config
    from vlexport.reference import build_random

    cfg = tiny_config()
    cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(len(WORDS))}
    model, _, _ = build_random(cfg)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "trainval_label2ans.json").write_text(json.dumps(WORDS))
    art = build(str(folder), tmp_path / "a", progress=False, fuse="never", threads=1, simplify=False)
    man = json.loads((art / "manifest.json").read_text())
    assert man["labels_from"]["source"] == "trainval_label2ans.json"
    assert vlexport.load(art).id2label[13] == "cat"


def test_label_files_may_hold_the_empty_answer(tmp_path):
    from vlexport.labels import read_label_file

    f = tmp_path / "labels.json"
    f.write_text(json.dumps(["", "yes"]))  # LXMERT's VQA answer 0 is ""
    assert read_label_file(f, 2) == {0: "", 1: "yes"}


@pytest.mark.parametrize("content, words", [
    ("[1, 2]", "label 0 is 1"), ('["a"]', "names 1 labels"), ("{", "not valid JSON"), ('{"x": "a"}', "label ids"),
    ('"yes"', "holds a str"), (json.dumps(["a\nb"] + WORDS[1:]), "printable"),
])
def test_bad_label_files_are_refused(tmp_path, content, words):
    from vlexport.labels import read_label_file

    f = tmp_path / "labels.json"
    f.write_text(content)
    with pytest.raises(ConfigError, match=words):
        read_label_file(f, len(WORDS) if "printable" in words else 2)
