"""VisualBERT test kit: small random `transformers` VisualBERT models, input makers written here
(not with the library's own), and small build ranges. Imported by the VisualBERT test files."""

from __future__ import annotations

import numpy as np
import torch

from oracle import perturb_
from vlexport import families

FAMILY = families.get("visual_bert")
# The registry drives the parametrized tests: every architecture the family describes is checked
# against the transformers class of the same name.
HF_CLASSES = list(FAMILY.architectures)
QA, MC, R2P = "VisualBertForQuestionAnswering", "VisualBertForMultipleChoice", "VisualBertForRegionToPhraseAlignment"

SMALL = dict(vocab_size=99, hidden_size=32, visual_embedding_dim=12, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=37, max_position_embeddings=40, num_labels=5,
             # 10x BERT's 0.02: outputs of order 1 that every input and weight visibly moves (at 0.02 the
             # multiple-choice logits change by ~1e-6 when visual token types flip: below any tolerance)
             initializer_range=0.2)

EXPECTED_OUTPUTS = {"VisualBertModel": ["last_hidden_state", "pooler_output"],
                    "VisualBertForPreTraining": ["prediction_logits", "seq_relationship_logits"]}


def make_hf_model(architecture: str, seed: int = 0, **overrides):
    import transformers

    cfg = transformers.VisualBertConfig(**{**SMALL, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(cfg)
    return perturb_(model, seed).eval()


# small build ranges keep the builds quick; every one is dynamic (min < max)
from vlexport.specs import AxisRange  # noqa: E402

AXES = {"batch": AxisRange(1, 2, 4), "text": AxisRange(2, 8, 16), "visual": AxisRange(1, 4, 8),
        "choices": AxisRange(1, 2, 3), "phrases": AxisRange(1, 2, 4)}

# shapes none of which the build traced (trace sizes: batch 2, text 7, visual 5, choices 3, phrases 3);
# the extremes of every range included. (sizes, padded)
UNSEEN = [
    (dict(batch=1, text=16, visual=8, choices=1, phrases=4), False),
    (dict(batch=3, text=11, visual=6, choices=2, phrases=1), True),
    (dict(batch=4, text=2, visual=1, choices=3, phrases=2), False),
    (dict(batch=2, text=13, visual=3, choices=2, phrases=4), True),
    (dict(batch=1, text=9, visual=7, choices=3, phrases=3), True),
]


def axes_for(arch: str) -> dict:
    drop = {"choices"} if arch != MC else set()
    if arch != R2P:
        drop.add("phrases")
    return {k: v for k, v in AXES.items() if k not in drop}


def sizes_for(arch: str, sizes: dict) -> dict:
    return {k: v for k, v in sizes.items() if k in axes_for(arch)}


def _right_padded(rng, lead, n, minimum, pad):
    """(…, n) masks of ones then zeros; with pad, at least one row is really padded (when n allows)."""
    if not pad:
        return np.ones((*lead, n), np.int64)
    lengths = rng.integers(minimum, n + 1, size=lead)
    lengths.flat[-1] = max(minimum, n // 2)
    lengths.flat[0] = n if lengths.size > 1 else lengths.flat[0]
    return (np.arange(n) < lengths[..., None]).astype(np.int64)


def make_feeds(arch: str, config: dict, sizes: dict, rng, pad: bool = True, align: int | None = None) -> dict:
    """HF keyword inputs as numpy arrays, written here (not with the library's own input maker)."""
    lead = (sizes["batch"], sizes["choices"]) if arch == MC else (sizes["batch"],)
    T, V, D = sizes["text"], sizes["visual"], config["visual_embedding_dim"]
    feeds = {
        "input_ids": rng.integers(0, config["vocab_size"], size=(*lead, T)).astype(np.int64),
        "attention_mask": _right_padded(rng, lead, T, 2, pad),
        "token_type_ids": rng.integers(0, 2, size=(*lead, T)).astype(np.int64),
        "visual_embeds": rng.standard_normal((*lead, V, D)).astype(np.float32),
        "visual_attention_mask": _right_padded(rng, lead, V, 1, pad),
        "visual_token_type_ids": rng.integers(0, 2, size=(*lead, V)).astype(np.int64),
    }
    if pad and T > 2 and V > 1:
        assert (feeds["attention_mask"] == 0).any() and (feeds["visual_attention_mask"] == 0).any()
    if align:
        feeds["image_text_alignment"] = rng.integers(-1, T, size=(*lead, V, align)).astype(np.int64)
    if arch == R2P:
        feeds["region_to_phrase_position"] = rng.integers(-1, T + V, size=(sizes["batch"], sizes["phrases"]))
    return feeds


def build_small(folder, out, arch, **kw):
    from vlexport.export.build import build

    kw.setdefault("fp16", True)
    if "with_alignment" in kw:
        kw.setdefault("options", {})["with_alignment"] = kw.pop("with_alignment")
    return build(str(folder), out, progress=False, axes=axes_for(arch), **kw)
