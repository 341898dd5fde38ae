"""Our dual encoder against transformers' VisionTextDualEncoderModel (perturbed random weights, saved
and loaded by state-dict keys) for every tower pair: image_embeds, text_embeds, logits_per_image,
logits_per_text and HF 5's get_image_features / get_text_features, padded text batches included."""

from __future__ import annotations

import pytest
import torch

from dual_encoder_kit import PAIRS, image_inputs, make_hf_model, text_inputs
from oracle import assert_same_outputs, save_hf_model, to_torch

transformers = pytest.importorskip("transformers")


def _ours(folder):
    from vlexport.families.vision_text_dual_encoder.model import VisionTextDualEncoderModel

    return VisionTextDualEncoderModel.from_pretrained(str(folder))


@pytest.fixture(scope="module", params=PAIRS, ids=lambda p: "+".join(p))
def pair(request, tmp_path_factory):
    vision, text = request.param
    hf = make_hf_model(vision, text)
    folder = save_hf_model(hf, tmp_path_factory.mktemp(f"{vision}-{text}"))
    return vision, text, hf, _ours(folder)


@pytest.mark.parametrize("n_images,n_texts,length", [(1, 1, 5), (3, 4, 9), (2, 5, 17)])
def test_forward_matches_transformers(pair, n_images, n_texts, length):
    vision, text, hf, ours = pair
    pad = hf.config.text_config.pad_token_id
    feeds = {**text_inputs(n_texts, length, pad, seed=length, token_types=text == "bert"),
             **image_inputs(n_images, seed=n_images)}
    with torch.no_grad():
        theirs = hf(**to_torch(feeds), return_dict=True)
        mine = ours(**to_torch(feeds))
    fields = ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"]
    assert tuple(mine["logits_per_image"].shape) == (n_images, n_texts)
    assert_same_outputs({k: mine[k] for k in fields}, {k: theirs[k] for k in fields}, atol=1e-5,
                        what=f"{vision}+{text}")


def test_features_match_transformers(pair):
    vision, text, hf, ours = pair
    pad = hf.config.text_config.pad_token_id
    t = to_torch(text_inputs(4, 11, pad, seed=3, token_types=text == "bert"))
    px = to_torch(image_inputs(3))
    with torch.no_grad():
        for name, a, b in (("image", ours.get_image_features(**px), hf.get_image_features(**px)),
                           ("text", ours.get_text_features(**t), hf.get_text_features(**t))):
            assert_same_outputs({"pooler_output": a.pooler_output}, {"pooler_output": b.pooler_output},
                                atol=1e-5, what=f"{vision}+{text} {name} features")


def test_padding_does_not_change_text_embeddings(pair):
    """A text padded to a longer batch gives the embedding it has alone (the mask is honoured)."""
    vision, text, hf, ours = pair
    pad = hf.config.text_config.pad_token_id
    feeds = text_inputs(1, 6, pad, seed=9, token_types=text == "bert")
    longer = {k: torch.nn.functional.pad(torch.from_numpy(v), (0, 7), value=(pad if k == "input_ids" else 0))
              for k, v in feeds.items()}
    with torch.no_grad():
        alone = ours.get_text_features(**to_torch(feeds)).pooler_output
        padded = ours.get_text_features(**longer).pooler_output
        theirs = hf.get_text_features(**longer).pooler_output
    assert (alone - padded).abs().max() < 1e-5
    assert (padded - theirs).abs().max() < 1e-5
