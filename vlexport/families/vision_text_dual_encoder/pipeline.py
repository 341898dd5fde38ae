"""The dual encoder at run time: HF's VisionTextDualEncoderModel API on the "vision" and "text" graphs.

    model = vlexport.load("engines/tiny-dual-encoder")
    inputs = model.processor(text=["a cat", "a dog"], images=[photo])
    out = model(**inputs)                      # logits_per_image (1, 2), logits_per_text, text/image_embeds
    model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output   # projected, not normalized
    model.zero_shot(photo, ["a cat", "a dog"])  # label probabilities (softmax over logits_per_image)
    model.embed_images(paths_or_images)        # (N, P) L2-normalized rows, in batches

The towers run independently (each call runs only the graph it needs); HF's forward outputs are
derived here from the projected features: L2-normalized embeds, logits = exp(logit_scale) * cosine,
with logit_scale read from the manifest (checked: a finite number).
"""

from __future__ import annotations

import math

import numpy as np

from vlexport.errors import ArtifactError, InputError
from vlexport.outputs import ModelOutput
from vlexport.runtime.pipelines import Pipeline

_TEXT_FIELDS = ("input_ids", "attention_mask", "token_type_ids")


def _normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, np.finfo(x.dtype).tiny)


class DualEncoderPipeline(Pipeline):
    def __init__(self, artifact, backends, family, chosen_because=""):
        super().__init__(artifact, backends, family, chosen_because)
        self.require_graphs("dual_encoder", "vision", "text")
        scale = (artifact.manifest.get("model_facts") or {}).get("logit_scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or abs(scale) > 100:
            raise ArtifactError(f"{artifact.path}/manifest.json: model_facts.logit_scale must be a finite number, "
                                f"got {scale!r}")
        self.logit_scale = float(scale)
        self.text_inputs = [s.name for s in self._specs["text"]]

    # ---- HF's API
    def get_image_features(self, pixel_values=None, **extra) -> ModelOutput:
        """`pooler_output`: (B, projection_dim) projected, unnormalized image features (as HF 5)."""
        _no_extra(extra, ("return_dict",))
        out = self.run_graph("vision", self.prepare({"pixel_values": pixel_values}, "vision"))
        return ModelOutput(pooler_output=out["image_embeds"])

    def get_text_features(self, input_ids=None, attention_mask=None, token_type_ids=None, **extra) -> ModelOutput:
        """`pooler_output`: (B, projection_dim) projected, unnormalized text features (as HF 5)."""
        _no_extra(extra, ("return_dict", "position_ids"))
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if token_type_ids is not None and "token_type_ids" not in self.text_inputs:
            if np.any(np.asarray(token_type_ids) != 0):
                raise InputError("input 'token_type_ids' is not used by this text tower (it takes "
                                 f"{self.text_inputs}); only all-zero segment ids are accepted")
            feeds.pop("token_type_ids")
        out = self.run_graph("text", self.prepare(feeds, "text"))
        return ModelOutput(pooler_output=out["text_embeds"])

    def __call__(self, input_ids=None, pixel_values=None, attention_mask=None, token_type_ids=None,
                 **extra) -> ModelOutput:
        """HF's forward: logits_per_image (B_img, B_txt), logits_per_text, text_embeds, image_embeds (normalized)."""
        if input_ids is None or pixel_values is None:
            raise InputError("the dual encoder's forward needs input_ids and pixel_values (use get_text_features / "
                             "get_image_features for one tower)")
        _no_extra(extra, ("return_dict", "return_loss", "position_ids"))
        image = self.get_image_features(pixel_values).pooler_output
        text = self.get_text_features(input_ids, attention_mask, token_type_ids).pooler_output
        return self.similarity(image, text)

    forward = __call__

    def similarity(self, image: np.ndarray, text: np.ndarray) -> ModelOutput:
        """HF's four outputs from projected image and text features."""
        image, text = _normalize(image), _normalize(text)
        logits_per_text = (text @ image.T) * np.float32(math.exp(self.logit_scale))
        return ModelOutput(logits_per_image=np.ascontiguousarray(logits_per_text.T), logits_per_text=logits_per_text,
                           text_embeds=text, image_embeds=image)

    # ---- conveniences on raw inputs (the processor runs here)
    @property
    def max_batch(self) -> int:
        return self._axes["batch"].max

    def _chunks(self, items, batch_size):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        step = min(batch_size, self.max_batch)
        for i in range(0, len(items), step):
            yield items[i:i + step]

    def embed_images(self, images, batch_size: int = 32, normalize: bool = True) -> np.ndarray:
        """Images (PIL, arrays, paths) -> (N, projection_dim) embeddings, in batches."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        rows = [self.get_image_features(self.processor.image_processor(chunk)["pixel_values"]).pooler_output
                for chunk in self._chunks(images, batch_size)]
        out = np.concatenate(rows) if rows else np.zeros((0, self._outputs["vision"][0].dims[-1]), np.float32)
        return _normalize(out) if normalize else out

    def embed_texts(self, texts, batch_size: int = 32, normalize: bool = True) -> np.ndarray:
        """Texts -> (N, projection_dim) embeddings, in batches; texts longer than the built text range are
        truncated to it."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for chunk in self._chunks(texts, batch_size):
            enc = self.processor.tokenizer(chunk, padding=True, truncation=True, max_length=self._axes["text"].max)
            rows.append(self.get_text_features(**{k: enc[k] for k in self.text_inputs if k in enc}).pooler_output)
        out = np.concatenate(rows) if rows else np.zeros((0, self._outputs["text"][0].dims[-1]), np.float32)
        return _normalize(out) if normalize else out

    def zero_shot(self, images, labels, template: str = "{}") -> np.ndarray:
        """(N_images, N_labels) probabilities: softmax over exp(logit_scale) * cosine(image, template(label))."""
        if isinstance(labels, str):
            labels = [labels]
        labels = [str(x) for x in labels]
        if not labels or any(not x.strip() for x in labels):
            raise InputError(f"labels must be one or more non-empty strings, got {labels!r}")
        if not isinstance(template, str) or "{}" not in template:
            raise InputError(f"template must be a str holding '{{}}' where the label goes, got {template!r}")
        image = self.embed_images(images, normalize=False)
        text = self.embed_texts([template.format(x) for x in labels], normalize=False)
        logits = self.similarity(image, text).logits_per_image.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _no_extra(extra: dict, harmless: tuple):
    used = sorted(k for k, v in extra.items() if not (k in harmless and (v is None or v is False or k == "return_dict")))
    if used:
        raise InputError(f"unexpected input(s) {used}: the dual encoder takes input_ids, attention_mask, "
                         f"token_type_ids and pixel_values")
