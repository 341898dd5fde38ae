"""ViLT test kit: small random `transformers` ViLT models and an input maker written here (not with
the library's own): batches of images of different sizes padded bottom/right to the batch's
largest height and width, with pixel_mask ones over each image's valid top-left rectangle (as
ViltImageProcessor pads), and right-padded text. Imported by the ViLT test files."""

from __future__ import annotations

import numpy as np
import torch

from oracle import perturb_

HF_CLASSES = ["ViltModel", "ViltForMaskedLM", "ViltForQuestionAnswering", "ViltForImagesAndTextClassification",
              "ViltForImageAndTextRetrieval", "ViltForTokenClassification"]
TASKS = {"ViltModel": "feature-extraction", "ViltForMaskedLM": "fill-mask",
         "ViltForQuestionAnswering": "visual-question-answering",
         "ViltForImagesAndTextClassification": "visual-reasoning",
         "ViltForImageAndTextRetrieval": "image-text-retrieval", "ViltForTokenClassification": "token-classification"}
NLVR2 = "ViltForImagesAndTextClassification"

# patch 16 on a 64 image: a 4x4 position grid, so the per-image bilinear resize really interpolates
SMALL = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=40, image_size=64, patch_size=16, num_labels=5,
             # 10x BERT's 0.02: outputs of order 1 that every input and weight visibly moves
             initializer_range=0.2)


def hf_config(architecture: str, **overrides):
    import transformers

    kw = dict(SMALL)
    if architecture == NLVR2:
        kw.update(num_images=2, modality_type_vocab_size=3)  # as the public NLVR2 config
    return transformers.ViltConfig(**{**kw, **overrides})


def make_hf_model(architecture: str, seed: int = 0, **overrides):
    """A perturbed random transformers model. HF initialises cls_token and the position grid to
    zeros (the checkpoint fills them): give them random values, or the per-image position
    interpolation would be tested against zeros."""
    import transformers

    cfg = hf_config(architecture, **overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(cfg)
    perturb_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    emb = model.embeddings if architecture == "ViltModel" else model.vilt.embeddings
    with torch.no_grad():
        emb.position_embeddings.copy_(torch.randn(emb.position_embeddings.shape, generator=g))
        emb.cls_token.copy_(torch.randn(emb.cls_token.shape, generator=g))
    return model.eval()


def pad_images(images, sizes, canvas=None):
    """Images (3, h, w) -> (N, 3, H, W) zero-padded bottom/right to the largest (or `canvas`) size, and
    the (N, H, W) int64 pixel_mask with ones over each image's top-left h x w rectangle."""
    H = canvas[0] if canvas else max(h for h, _ in sizes)
    W = canvas[1] if canvas else max(w for _, w in sizes)
    pixels = np.zeros((len(images), 3, H, W), np.float32)
    mask = np.zeros((len(images), H, W), np.int64)
    for k, (img, (h, w)) in enumerate(zip(images, sizes)):
        pixels[k, :, :h, :w] = img
        mask[k, :h, :w] = 1
    return pixels, mask


def make_feeds(architecture: str, config: dict, batch: int, text: int, sizes, rng, pad_text: bool = True,
               canvas=None) -> dict:
    """HF keyword inputs as numpy arrays. `sizes`: the (h, w) of each image, cycled over the batch
    (NLVR2: over the batch's 2 images per example); images padded to the largest, or to `canvas`."""
    n_images = config.get("num_images", 2) if architecture == NLVR2 else 1
    count = batch * n_images
    image_sizes = [tuple(sizes[k % len(sizes)]) for k in range(count)]
    images = [rng.uniform(-1, 1, size=(3, h, w)).astype(np.float32) for h, w in image_sizes]  # mean = std = 0.5
    pixels, pixel_mask = pad_images(images, image_sizes, canvas)
    if architecture == NLVR2:
        pixels = pixels.reshape(batch, n_images, *pixels.shape[1:])
        pixel_mask = pixel_mask.reshape(batch, n_images, *pixel_mask.shape[1:])
    lengths = np.full(batch, text)
    if pad_text:  # right padding; at least one example really padded (when the batch has two)
        lengths = rng.integers(2, text + 1, size=batch)
        lengths[-1] = max(2, text // 2)
        if batch > 1:
            lengths[0] = text
    feeds = {
        "input_ids": rng.integers(1, config["vocab_size"], size=(batch, text)).astype(np.int64),
        "attention_mask": (np.arange(text) < lengths[:, None]).astype(np.int64),
        "token_type_ids": rng.integers(0, config.get("type_vocab_size", 2), size=(batch, text)).astype(np.int64),
        "pixel_values": pixels,
        "pixel_mask": pixel_mask,
    }
    feeds["input_ids"][feeds["attention_mask"] == 0] = 0  # [PAD]
    return feeds
