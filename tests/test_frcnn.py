"""The region detector (unc-nlp/frcnn-vg-finetuned's Faster R-CNN) against the demo's own code.

Parity: tests/fixtures/frcnn/*.npz hold what transformers' research_projects/lxmert code
(modeling_frcnn.py + processing_image.py, run with torchvision) returned for fixed random weights on
real photographs (tests/fixtures/frcnn/README.md says how they were made). Our processor, reference
model and exported graphs must give the same regions: identical boxes after NMS (same count, order
and coordinates to 1e-3 px), the same class and attribute ids, features within 1e-4.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

import frcnn_kit as kit
from vlexport.errors import ConfigError, InputError
from vlexport.families.frcnn.config import FrcnnConfig
from vlexport.families.frcnn.processor import FrcnnImageProcessor, resize_bilinear, resized_size

FIELDS = ("obj_ids", "obj_probs", "attr_ids", "attr_probs", "boxes", "roi_features", "preds_per_image", "sizes")


def assert_same_regions(ours, fixture, where, feature_tol=1e-4):
    assert np.array_equal(ours["preds_per_image"], fixture["preds_per_image"]), where
    assert np.array_equal(ours["obj_ids"], fixture["obj_ids"]), f"{where}: class ids differ"
    assert np.array_equal(ours["attr_ids"], fixture["attr_ids"]), f"{where}: attribute ids differ"
    assert np.abs(ours["boxes"] - fixture["boxes"]).max() <= 1e-3, f"{where}: boxes differ"
    for k in ("obj_probs", "attr_probs"):
        assert np.abs(ours[k] - fixture[k]).max() <= 1e-5, f"{where}: {k}"
    err = np.abs(ours["roi_features"] - fixture["roi_features"]).max()
    assert err <= feature_tol, f"{where}: roi_features differ by {err:.2e}"
    if "normalized_boxes" in fixture:
        assert np.abs(ours["normalized_boxes"] - fixture["normalized_boxes"]).max() <= 1e-5, where


@pytest.mark.parametrize("run", sorted(kit.RUNS))
def test_reference_matches_the_demo_code(run):
    case, names = kit.RUNS[run]
    fx = dict(np.load(kit.FIXTURES / f"{run}.npz"))
    model = kit.our_model(case)
    photos = kit.photos()
    x = FrcnnImageProcessor(model.config)(images=[photos[n] for n in names])
    # the processor: the demo's Preprocess (resize, BGR, mean, padding)
    assert x["pixel_values"].shape == tuple(fx["pixel_shape"])
    assert np.array_equal(x["image_sizes"], fx["sizes"])
    assert np.array_equal(x["scales_yx"], fx["scales_yx"])
    assert np.abs(x["pixel_values"].reshape(-1)[fx["pixel_where"]] - fx["pixel_values"]).max() <= 1e-4
    out = model(x["pixel_values"], x["image_sizes"], x["scales_yx"])
    assert_same_regions(out, fx, run)
    assert out["preds_per_image"].min() >= model.config.min_detections  # real regions, not only padding


def test_checkpoint_folder_with_the_demo_layout_loads(tmp_path):
    """A folder as the hub has it (config.yaml + pytorch_model.bin with the demo's keys: cell_anchors.0,
    BN num_batches_tracked) loads by its keys and gives the demo's regions."""
    from vlexport.reference import from_pretrained

    yaml = pytest.importorskip("yaml")
    model = kit.our_model("tiny")
    state = dict(model.state_dict())
    state["proposal_generator.anchor_generator.cell_anchors.0"] = state.pop(
        "proposal_generator.anchor_generator.cell_anchors")
    for k in [k for k in state if k.endswith("running_var")]:
        state[k.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(kit.to_demo_yaml(model.config)))
    loaded = from_pretrained(str(tmp_path))
    assert loaded.architecture == "GeneralizedRCNN" and loaded.weights == "checkpoint"
    assert loaded.config.to_dict() == model.config.to_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    fx = dict(np.load(kit.FIXTURES / "tiny_single.npz"))
    proc = FrcnnImageProcessor.from_pretrained(tmp_path)
    x = proc(images=[kit.photos()["chelsea"]])
    assert_same_regions(loaded.model(x["pixel_values"], x["image_sizes"], x["scales_yx"]), fx, "loaded folder")


def test_a_wrong_checkpoint_names_the_key(tmp_path):
    from vlexport.errors import CheckpointError
    from vlexport.reference import from_pretrained

    yaml = pytest.importorskip("yaml")
    model = kit.our_model("tiny")
    state = {k: v for k, v in model.state_dict().items() if "cls_score" not in k}
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(kit.to_demo_yaml(model.config)))
    with pytest.raises(CheckpointError, match="cls_score"):
        from_pretrained(str(tmp_path))


@pytest.mark.parametrize("change, words", [
    ({"RESNETS": {"NORM": "GN"}}, "NORM"),
    ({"ROI_BOX_HEAD": {"POOLER_TYPE": "ROIAlignV2"}}, "POOLER_TYPE"),
    ({"RESNETS": {"DEPTH": 34}}, "depth 34"),
    ({"MAX_DETECTIONS": 0}, "max_detections"),
    ({"INPUT": {"FORMAT": "YUV"}}, "input_format"),
    ({"MODEL": "cpu"}, "MODEL"),
])
def test_bad_config_yaml_values_are_refused(change, words):
    y = kit.to_demo_yaml(FrcnnConfig.from_dict(kit.TINY))
    for k, v in change.items():
        if isinstance(v, dict):
            y[k] = {**y[k], **v}
        else:
            y[k] = v
    with pytest.raises(ConfigError, match=words):
        FrcnnConfig.from_yaml_dict(y)


def test_config_yaml_round_trip():
    cfg = FrcnnConfig.from_dict(kit.TINY)
    assert FrcnnConfig.from_dict(FrcnnConfig.from_yaml_dict(kit.to_demo_yaml(cfg))).to_dict() == cfg.to_dict()


# ----------------------------------------------------------------------------- the processor

def test_resize_matches_torch_interpolate():
    """The demo resizes float tensors with torch's bilinear interpolate (channels-last memory)."""
    from hypothesis import given, strategies as st

    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=(97, 131, 3)).astype(np.float32)

    @given(st.integers(1, 300), st.integers(1, 300))
    def check(h, w):
        theirs = torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None], (h, w),
                                                 mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
        assert np.abs(resize_bilinear(img, h, w) - theirs).max() <= 1e-4, (h, w)

    check()


@pytest.mark.parametrize("h, w", [(480, 640), (640, 480), (500, 500), (100, 3000), (3000, 100), (1, 1)])
def test_resized_sizes(h, w):
    nh, nw = resized_size(h, w, 600, 1000)
    assert max(nh, nw) <= 1000 and (min(nh, nw) == 600 or max(nh, nw) == 1000)
    assert abs(nh / nw - h / w) < 0.02 * max(h / w, w / h)


def test_image_modes_and_channel_order(tmp_path):
    from PIL import Image

    proc = FrcnnImageProcessor(FrcnnConfig.from_dict(kit.TINY))
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 255
    out = proc(images=[red, Image.fromarray(red).convert("L"), Image.fromarray(red).convert("RGBA"),
                       Image.fromarray(red).convert("P")])
    assert out["pixel_values"].shape == (4, 3, 160, 240)
    mean = np.asarray(proc.config.pixel_mean, np.float32)
    # BGR: red lands in the last channel
    assert np.allclose(out["pixel_values"][0, :, 10, 10], np.array([0, 0, 255], np.float32) - mean, atol=1e-3)
    # an EXIF-rotated file is read upright (portrait 40x60 stored landscape with orientation 6)
    f = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(f, exif=exif)
    assert proc(images=[str(f)])["image_sizes"].tolist() == [[240, 160]]


def test_processor_bad_inputs():
    proc = FrcnnImageProcessor(FrcnnConfig.from_dict(kit.TINY))
    with pytest.raises(InputError, match="needs images"):
        proc(images=None)
    with pytest.raises(InputError, match="empty"):
        proc(images=[])
    with pytest.raises(InputError, match="images\\[0\\]"):
        proc(images=["/no/such/photo.jpg"])
    with pytest.raises(InputError, match="unexpected"):
        proc(images=[np.zeros((8, 8, 3), np.uint8)], text="hello")
