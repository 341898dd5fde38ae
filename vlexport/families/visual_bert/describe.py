"""Export descriptions of the six VisualBERT heads (plain data; no torch): one graph, "model".

Axis names: batch, text (tokens), visual (regions), choices (MultipleChoice), phrases
(RegionToPhraseAlignment), align (alignment slots per region, with image_text_alignment).
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import ConfigError, UnknownModelError
from vlexport.specs import AxisRange, GraphSpec, InputSpec, ModelSpec, OutputSpec, merge_axes

FAMILY = "visual_bert"
MASKED = -1e30  # region-to-phrase logits of masked regions hold finfo(float32).min, as HF

# architecture (config.json "architectures") -> task name used on the CLI and in manifests
TASKS = {
    "VisualBertModel": "feature-extraction",
    "VisualBertForPreTraining": "pretraining",
    "VisualBertForQuestionAnswering": "question-answering",
    "VisualBertForMultipleChoice": "multiple-choice",
    "VisualBertForVisualReasoning": "visual-reasoning",
    "VisualBertForRegionToPhraseAlignment": "region-to-phrase-alignment",
}
ARCHITECTURES = {task: arch for arch, task in TASKS.items()}


def default_axes(config, architecture: str) -> dict[str, AxisRange]:
    """Axis ranges from the model config; every one can be overridden (see `with_ranges`)."""
    text_max = config.max_position_embeddings
    axes = {
        "batch": AxisRange(1, 1, 32),
        "text": AxisRange(2, min(20, text_max), text_max),  # [CLS] + [SEP] at least
        "visual": AxisRange(1, 36, 100),
    }
    if architecture == "VisualBertForMultipleChoice":
        axes["batch"] = AxisRange(1, 1, 8)
        axes["choices"] = AxisRange(1, 4, 4)
    if architecture == "VisualBertForRegionToPhraseAlignment":
        axes["phrases"] = AxisRange(1, 8, 32)
    return axes


def _lead(architecture):
    return ("batch", "choices") if architecture == "VisualBertForMultipleChoice" else ("batch",)


def describe(architecture: str, config, axes: dict | None = None, with_alignment: bool = False) -> ModelSpec:
    """The ModelSpec of one VisualBERT head for this config (axes: ranges overriding the defaults)."""
    if architecture not in TASKS:
        raise UnknownModelError(f"unknown VisualBERT architecture '{architecture}'; known: {sorted(TASKS)}")
    lead = _lead(architecture)
    ids = dict(dtype="int64")
    # QA reads the token before [SEP] from the mask: HF needs it, so it has no default there
    mask_default = None if architecture == "VisualBertForQuestionAnswering" else 1
    inputs = [
        InputSpec("input_ids", (*lead, "text"), low=0, high=config.vocab_size, doc="token ids", **ids),
        InputSpec("attention_mask", (*lead, "text"), low=0, high=2, default=mask_default,
                  doc="1 for real tokens, 0 for padding" + ("; question answering needs it to find the answer "
                                                            "token" if mask_default is None else ""), **ids),
        InputSpec("token_type_ids", (*lead, "text"), low=0, high=config.type_vocab_size, default=0,
                  doc="segment ids", **ids),
        InputSpec("visual_embeds", (*lead, "visual", config.visual_embedding_dim), dtype="float32",
                  doc="region features"),
        InputSpec("visual_attention_mask", (*lead, "visual"), low=0, high=2, default=1, doc="1 for real regions",
                  **ids),
        InputSpec("visual_token_type_ids", (*lead, "visual"), low=0, high=config.type_vocab_size, default=1,
                  doc="segment ids of the regions (HF's default: 1)", **ids),
    ]
    if with_alignment:
        inputs.append(InputSpec("image_text_alignment", (*lead, "visual", "align"), low=-1, high="text",
                                doc="text positions aligned to each region, -1 = none", **ids))
    if architecture == "VisualBertForRegionToPhraseAlignment":
        inputs.append(InputSpec("region_to_phrase_position", ("batch", "phrases"), low=-1,
                                high="text+visual",
                                doc="sequence position of each phrase, -1 = padding", **ids))

    H, V = config.hidden_size, config.vocab_size
    outputs = {
        "VisualBertModel": [OutputSpec("last_hidden_state", ("batch", "text+visual", H)),
                            OutputSpec("pooler_output", ("batch", H))],
        "VisualBertForPreTraining": [OutputSpec("prediction_logits", ("batch", "text+visual", V), classes=True),
                                     OutputSpec("seq_relationship_logits", ("batch", 2), classes=True)],
        "VisualBertForQuestionAnswering": [OutputSpec("logits", ("batch", config.num_labels), classes=True)],
        "VisualBertForVisualReasoning": [OutputSpec("logits", ("batch", config.num_labels), classes=True)],
        "VisualBertForMultipleChoice": [OutputSpec("logits", ("batch", "choices"), classes=True)],
        "VisualBertForRegionToPhraseAlignment": [OutputSpec("logits", ("batch", "phrases", "visual"), classes=True,
                                                            masked_below=MASKED)],
    }[architecture]

    ranges = default_axes(config, architecture)
    if with_alignment:
        ranges["align"] = AxisRange(1, 2, 8)
    ranges = merge_axes(ranges, axes, architecture,
                        hint=lambda name: "" if with_alignment or name != "align" else " without --with-alignment")
    if ranges["text"].max > config.max_position_embeddings:
        raise ConfigError(
            f"text length up to {ranges['text'].max} was asked for, but this model's "
            f"max_position_embeddings is {config.max_position_embeddings}"
        )

    def make_inputs(sizes: dict, rng: np.random.Generator, pad: bool = True) -> dict:
        return _make_inputs(architecture, config, sizes, rng, pad, with_alignment)

    lengths = {}  # id(processor) -> token counts of the corpus: tokenized once, not for every validation case

    def make_real_inputs(sizes: dict, rng: np.random.Generator, pad: bool, processor) -> dict:
        return _real_inputs(architecture, config, sizes, rng, pad, processor, make_inputs, lengths)

    graph = GraphSpec("model", inputs, outputs, make_inputs=make_inputs, tolerance=1e-4,
                      make_real_inputs=make_real_inputs)
    return ModelSpec(
        family=FAMILY, architecture=architecture, task=TASKS[architecture], graphs=[graph], axes=ranges,
        pipeline="classify", options={"with_alignment": bool(with_alignment)},
        notes="QuestionAnswering reads the token before [SEP]: text must be right-padded.",
    )


def _right_padded_mask(rng, shape, length, minimum):
    """(…, length) masks of ones then zeros, real lengths drawn in [minimum, length]."""
    real = rng.integers(minimum, length + 1, size=shape)
    return (np.arange(length) < real[..., None]).astype(np.int64)


def _make_inputs(architecture, config, sizes, rng, pad, with_alignment):
    lead = (sizes["batch"], sizes["choices"]) if "choices" in sizes and architecture.endswith("MultipleChoice") else (sizes["batch"],)
    T, Vn = sizes["text"], sizes["visual"]
    feeds = {
        "input_ids": rng.integers(0, config.vocab_size, size=(*lead, T), dtype=np.int64),
        "attention_mask": _right_padded_mask(rng, lead, T, min(2, T)) if pad else np.ones((*lead, T), np.int64),
        "token_type_ids": (rng.random((*lead, T)) < 0.3).astype(np.int64),
        "visual_embeds": rng.standard_normal((*lead, Vn, config.visual_embedding_dim)).astype(np.float32),
        "visual_attention_mask": _right_padded_mask(rng, lead, Vn, 1) if pad else np.ones((*lead, Vn), np.int64),
        "visual_token_type_ids": np.ones((*lead, Vn), np.int64),
    }
    if with_alignment:
        A = sizes.get("align", 2)
        feeds["image_text_alignment"] = rng.integers(-1, T, size=(*lead, Vn, A), dtype=np.int64)
    if architecture == "VisualBertForRegionToPhraseAlignment":
        P = sizes["phrases"]
        feeds["region_to_phrase_position"] = rng.integers(-1, T, size=(sizes["batch"], P), dtype=np.int64)
    return feeds


def _real_inputs(architecture, config, sizes, rng, pad, processor, make_inputs, cache):
    """Validation/calibration inputs as users send them: questions or captions from the embedded corpus
    through the processor (right-padded to the case's text length), detector-like region features
    (non-negative, sparse). Heads with extra inputs (choices, phrases, alignment) take them from the random
    maker."""
    from vlexport import calibration

    feeds = make_inputs(sizes, rng, pad)
    if architecture not in ("VisualBertModel", "VisualBertForQuestionAnswering", "VisualBertForVisualReasoning",
                            "VisualBertForPreTraining") or processor is None:
        return feeds
    B, T, Vn = sizes["batch"], sizes["text"], sizes["visual"]
    kind = "questions" if architecture == "VisualBertForQuestionAnswering" else "all"
    # texts that fit the case's length, as users' texts fit the model's (a question cut to [CLS] [SEP] asks
    # nothing: its near-tied answers would measure ties, not precision); the shortest ones, cut, otherwise
    pool = calibration.texts(kind)
    key = (id(processor), kind)
    if key not in cache:
        cache[key] = np.array([len(ids) for ids in processor(pool, padding=False, return_tensors=None)["input_ids"]])
    lengths = cache[key]
    fits = [t for t, n in zip(pool, lengths) if n <= T] or [pool[i] for i in np.argsort(lengths)[:8]]
    chosen = [fits[i] for i in rng.integers(0, len(fits), size=B)]
    enc = processor(chosen, padding="max_length", truncation=True, max_length=T)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    feeds["input_ids"] = np.minimum(ids, config.vocab_size - 1)  # a tokenizer larger than a tiny model's table
    feeds["attention_mask"] = np.asarray(enc["attention_mask"], dtype=np.int64)
    feeds["token_type_ids"] = np.zeros((B, T), np.int64)
    feeds["visual_embeds"] = calibration.detector_features(rng, (B, Vn), config.visual_embedding_dim)
    return feeds
