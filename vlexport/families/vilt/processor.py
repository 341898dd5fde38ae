"""ViLT's processor, torch-free: BERT WordPiece text and ViltImageProcessor images, as HF's ViltProcessor.

Text: the checkpoint folder's tokenizer.json / vocab.txt (else the embedded bert-base-uncased vocab),
at most `max_length` = 40 tokens (ViLT's position table); longer texts are truncated by default, and
`truncation=False` makes them an InputError instead. Images: see image_processor.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vlexport.errors import InputError
from vlexport.families.vilt.image_processor import ViltImageProcessor
from vlexport.outputs import ModelOutput
from vlexport.processing.bert_text import BertTextProcessor


class ViltProcessor:
    """processor(images=..., text=...) -> input_ids, token_type_ids, attention_mask, pixel_values, pixel_mask."""

    model_input_names = ["input_ids", "token_type_ids", "attention_mask", "pixel_values", "pixel_mask"]

    def __init__(self, tokenizer: BertTextProcessor | None = None, image_processor: ViltImageProcessor | None = None,
                 max_length: int = 40):
        self.tokenizer = tokenizer if tokenizer is not None else BertTextProcessor()
        self.image_processor = image_processor if image_processor is not None else ViltImageProcessor()
        self.max_length = int(max_length)

    @classmethod
    def from_pretrained(cls, folder=None, max_length: int | None = None) -> "ViltProcessor":
        tok = BertTextProcessor.from_pretrained(folder)
        image = ViltImageProcessor.from_pretrained(folder) if folder is not None else ViltImageProcessor()
        if max_length is None:
            max_length = 40
            cfg = Path(folder) / "config.json" if folder is not None else None
            if cfg is not None and cfg.is_file():
                try:
                    max_length = int(json.loads(cfg.read_text()).get("max_position_embeddings", 40))
                except (ValueError, TypeError, AttributeError):
                    pass
        return cls(tok, image, max_length)

    @classmethod
    def tiny(cls, image_size: int = 128) -> "ViltProcessor":
        from vlexport.processing.vocab import tiny_vocab

        return cls(BertTextProcessor(vocab=tiny_vocab(), model_max_length=40),
                   ViltImageProcessor(size={"shortest_edge": image_size}), 40)

    def save_pretrained(self, folder) -> tuple:
        return tuple(self.tokenizer.save_pretrained(folder)) + (str(self.image_processor.save_pretrained(folder)),)

    # what predict and users need from the tokenizer
    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def mask_token_id(self):
        return self.tokenizer.mask_token_id

    def convert_ids_to_tokens(self, ids):
        return self.tokenizer.convert_ids_to_tokens(ids)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    def __call__(self, images=None, text=None, padding=True, truncation=True, max_length=None,
                 return_tensors="np", images_per_text: int = 1) -> ModelOutput:
        """images: one image or a list (PIL, numpy HWC, file paths); text: a str or a list of them.
        images_per_text > 1 (NLVR2): the images come in groups of that many per text, and
        pixel_values gets an images axis (batch, images, 3, H, W)."""
        if text is None:
            raise InputError("text is required: ViLT answers a text (question, statement, caption) about an image")
        max_length = self.max_length if max_length is None else int(max_length)
        texts = [text] if isinstance(text, str) else text
        if truncation is False or truncation is None:
            enc = self.tokenizer(texts, padding=padding, truncation=False, return_tensors="np")
            longest = int(enc["attention_mask"].sum(1).max()) if len(enc["attention_mask"]) else 0
            if longest > max_length:
                raise InputError(f"text has {longest} tokens; this model reads at most {max_length} "
                                 f"(pass truncation=True to cut it)")
        else:
            enc = self.tokenizer(texts, padding=padding, truncation=True, max_length=max_length, return_tensors="np")
        out = ModelOutput(enc)
        if images is not None:
            pix = self.image_processor(images if isinstance(images, (list, tuple)) else [images])
            n = int(images_per_text)
            if n < 1:
                raise InputError(f"images_per_text must be >= 1, got {images_per_text}")
            b = len(texts)
            if pix["pixel_values"].shape[0] != b * n:
                raise InputError(f"images: {pix['pixel_values'].shape[0]} image(s) for {b} text(s) x {n} image(s) "
                                 f"per text; give {b * n}")
            values, mask = pix["pixel_values"], pix["pixel_mask"]
            if n > 1:
                values = values.reshape(b, n, *values.shape[1:])
                mask = mask.reshape(b, n, *mask.shape[1:])
            out["pixel_values"], out["pixel_mask"] = values, mask
        if return_tensors == "pt":
            from vlexport._deps import require

            torch = require("torch", "ViltProcessor(return_tensors='pt')")
            for k, v in out.items():
                out[k] = torch.from_numpy(np.ascontiguousarray(v))
        elif return_tensors != "np":
            raise InputError(f"return_tensors must be 'np' or 'pt'; got {return_tensors!r}")
        return out
