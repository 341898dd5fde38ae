"""Export descriptions of the six ViLT heads (plain data; no torch): one graph, "model".

Axes: batch, text (tokens, at most max_position_embeddings = 40), height and width (image sides in
multiples of the patch size: the processor resizes the short side to image_size = 384 and the long
side to at most int(1333 / 800 * 384) = 639, both floored to multiples of 32, so 32..608 covers it).
NLVR2 takes a fixed number of images per example (config.num_images, 2).
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import ConfigError, UnknownModelError
from vlexport.specs import AxisRange, GraphSpec, InputSpec, ModelSpec, OutputSpec, merge_axes

FAMILY = "vilt"
TASKS = {
    "ViltModel": "feature-extraction",
    "ViltForMaskedLM": "fill-mask",
    "ViltForQuestionAnswering": "visual-question-answering",
    "ViltForImagesAndTextClassification": "images-and-text-classification",
    "ViltForImageAndTextRetrieval": "image-text-retrieval",
    "ViltForTokenClassification": "token-classification",
}
NLVR2 = "ViltForImagesAndTextClassification"


def longest_side(config) -> int:
    """The largest image side the processor produces for this config (a multiple of the patch size)."""
    longer = int(1333 / 800 * config.image_size)
    return max(config.patch_size, longer // config.patch_size * config.patch_size)


def default_axes(config, architecture: str) -> dict[str, AxisRange]:
    p = config.patch_size
    side = longest_side(config)
    short = min(max(config.image_size // p * p, p), side)
    wide = min(max(short * 3 // 2 // p * p, p), side)
    text_max = config.max_position_embeddings
    return {
        "batch": AxisRange(1, 1, 16 if architecture == NLVR2 else 32),
        "text": AxisRange(2, min(12, text_max), text_max),  # [CLS] + [SEP] at least
        "height": AxisRange(p, short, side, p),
        "width": AxisRange(p, wide, side, p),
    }


def describe(architecture: str, config, axes: dict | None = None) -> ModelSpec:
    """The ModelSpec of one ViLT head for this config (axes: ranges overriding the defaults)."""
    if architecture not in TASKS:
        raise UnknownModelError(f"unknown ViLT architecture '{architecture}'; known: {sorted(TASKS)}")
    images = (config.num_images,) if architecture == NLVR2 else ()
    ids = dict(dtype="int64")
    inputs = [
        InputSpec("input_ids", ("batch", "text"), low=0, high=config.vocab_size, doc="token ids", **ids),
        InputSpec("attention_mask", ("batch", "text"), low=0, high=2, default=1, doc="1 for real tokens", **ids),
        InputSpec("token_type_ids", ("batch", "text"), low=0, high=config.type_vocab_size, default=0,
                  doc="segment ids", **ids),
        InputSpec("pixel_values", ("batch", *images, config.num_channels, "height", "width"), dtype="float32",
                  doc="normalized images, padded bottom/right to the batch's largest"),
        InputSpec("pixel_mask", ("batch", *images, "height", "width"), low=0, high=2, default=1,
                  doc="1 over each image's valid top-left rectangle", **ids),
    ]
    H, V = config.hidden_size, config.vocab_size
    outputs = {
        # image tokens: 1 + (height / patch) * (width / patch), a size the axes do not name
        "ViltModel": [OutputSpec("last_hidden_state", ("batch", "sequence", H)), OutputSpec("pooler_output", ("batch", H))],
        "ViltForMaskedLM": [OutputSpec("logits", ("batch", "text", V), classes=True)],
        "ViltForQuestionAnswering": [OutputSpec("logits", ("batch", config.num_labels), classes=True)],
        NLVR2: [OutputSpec("logits", ("batch", config.num_labels), classes=True)],
        "ViltForImageAndTextRetrieval": [OutputSpec("logits", ("batch", 1))],
        "ViltForTokenClassification": [OutputSpec("logits", ("batch", "text", config.num_labels), classes=True)],
    }[architecture]
    ranges = default_axes(config, architecture)
    ranges = merge_axes(ranges, axes, architecture)
    for name in ("height", "width"):
        r = ranges[name]
        if r.step % config.patch_size:
            ranges[name] = AxisRange(r.min, r.opt, r.max, config.patch_size)  # image sides come in whole patches
    if ranges["text"].max > config.max_position_embeddings:
        raise ConfigError(f"text length up to {ranges['text'].max} was asked for, but this model's "
                          f"max_position_embeddings is {config.max_position_embeddings}")

    def make_inputs(sizes: dict, rng: np.random.Generator, pad: bool = True) -> dict:
        return _make_inputs(config, images, sizes, rng, pad)

    def make_real_inputs(sizes: dict, rng: np.random.Generator, pad: bool, processor) -> dict:
        return _real_inputs(config, sizes, rng, pad, processor, make_inputs)

    graph = GraphSpec("model", inputs, outputs, make_inputs=make_inputs, tolerance=1e-4,
                      make_real_inputs=make_real_inputs)
    return ModelSpec(family=FAMILY, architecture=architecture, task=TASKS[architecture], graphs=[graph],
                     axes=ranges, pipeline="classify",
                     notes="image-token rows of last_hidden_state keep every patch in row-major order "
                           "(HF samples them in random order and count)")


def _make_inputs(config, images, sizes, rng, pad):
    """Random inputs like the processor's: right-padded text; images of several sizes (whole patches)
    padded with zeros to the batch's largest, pixel_mask over each valid rectangle."""
    B, T, Hh, Ww, p = sizes["batch"], sizes["text"], sizes["height"], sizes["width"], config.patch_size
    lead = (B, *images)
    real = rng.integers(min(2, T), T + 1, size=B) if pad else np.full(B, T)
    if pad:
        real[0] = T
    mask = (np.arange(T) < real[:, None]).astype(np.int64)
    pixel = rng.uniform(-1, 1, size=(*lead, config.num_channels, Hh, Ww)).astype(np.float32)
    pmask = np.ones((*lead, Hh, Ww), np.int64)
    if pad:
        hs = rng.integers(1, Hh // p + 1, size=lead) * p
        ws = rng.integers(1, Ww // p + 1, size=lead) * p
        hs.flat[0], ws.flat[0] = Hh, Ww  # the image that sets the batch's size
        for idx in np.ndindex(*lead):
            pmask[idx][hs[idx]:, :] = 0
            pmask[idx][:, ws[idx]:] = 0
        pixel *= pmask[..., None, :, :]
    return {"input_ids": rng.integers(0, config.vocab_size, size=(B, T), dtype=np.int64), "attention_mask": mask,
            "token_type_ids": np.zeros((B, T), np.int64), "pixel_values": pixel, "pixel_mask": pmask}


def _real_inputs(config, sizes, rng, pad, processor, make_inputs):
    """Inputs as users send them: corpus questions through the tokenizer (right-padded to the case's length),
    photographs resized to each image's valid rectangle and rescaled/normalized as the image processor does,
    on the random maker's padding layout (pixel_mask)."""
    from vlexport import calibration
    from vlexport.processing.images import rescale_normalize

    feeds = make_inputs(sizes, rng, pad)
    if processor is None:
        return feeds
    B, T = sizes["batch"], sizes["text"]
    enc = processor.tokenizer(calibration.sample_texts(rng, B, "questions"), padding="max_length", truncation=True,
                              max_length=T)
    feeds["input_ids"] = np.minimum(np.asarray(enc["input_ids"], np.int64), config.vocab_size - 1)
    feeds["attention_mask"] = np.asarray(enc["attention_mask"], np.int64)
    ip = processor.image_processor
    pixel, pmask = feeds["pixel_values"], feeds["pixel_mask"]
    for idx in np.ndindex(*pmask.shape[:-2]):
        h, w = int(pmask[idx][:, 0].sum()), int(pmask[idx][0].sum())
        img = calibration.photo_at(rng, h, w)
        pixel[idx] = 0.0
        pixel[idx][:, :h, :w] = rescale_normalize(img, do_rescale=ip.do_rescale, rescale_factor=ip.rescale_factor,
                                                  do_normalize=ip.do_normalize, mean=ip.image_mean, std=ip.image_std)
    return feeds
