"""DualEncoderProcessor: HF's VisionTextDualEncoderProcessor without torch. The image processor named
by the folder's preprocessor_config.json (ViT, DeiT, CLIP: vlexport.processing.vit_images) and the
folder's tokenizer (tokenizer.json, WordPiece or byte-level BPE: vlexport.processing.text; a BERT
vocab.txt or the embedded bert-base-uncased vocab otherwise)."""

from __future__ import annotations

from pathlib import Path

from vlexport.errors import ConfigError, InputError
from vlexport.outputs import ModelOutput
from vlexport.processing import vit_images

def _tokenizer(folder, text_config=None):
    from vlexport.processing.bert_text import BertTextProcessor
    from vlexport.processing.text import TextProcessor

    if folder is not None and (Path(folder) / "tokenizer.json").is_file():
        return TextProcessor.from_pretrained(folder)
    if folder is not None and (Path(folder) / "vocab.txt").is_file():
        return BertTextProcessor.from_pretrained(folder)
    if text_config is not None and text_config.model_type != "bert":
        raise ConfigError(f"the {text_config.model_type} text tower needs its tokenizer: "
                          f"{'pass a folder holding its tokenizer.json' if folder is None else f'{folder} has no tokenizer.json'}"
                          f" (vlexport embeds only BERT's uncased vocabulary)")
    return BertTextProcessor.from_pretrained(None)


class DualEncoderProcessor:
    def __init__(self, image_processor, tokenizer):
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, folder, config=None) -> "DualEncoderProcessor":
        """A model or artifact folder (preprocessor_config.json + tokenizer files)."""
        v = getattr(config, "vision_config", None)
        t = getattr(config, "text_config", None)
        return cls(vit_images.for_vision_tower(folder, v), _tokenizer(folder, t))

    @classmethod
    def from_parts(cls, vision_folder, text_folder, config) -> "DualEncoderProcessor":
        """A composed model: the image processor of the vision tower's folder, the text tower's tokenizer."""
        return cls(vit_images.for_vision_tower(vision_folder, config.vision_config), _tokenizer(text_folder, config.text_config))

    @classmethod
    def tiny(cls, image_size: int = 32) -> "DualEncoderProcessor":
        from vlexport.processing.bert_text import BertTextProcessor

        return cls(vit_images.at_size(vit_images.ViTImageProcessor(), image_size), BertTextProcessor.tiny())

    def save_pretrained(self, folder):
        folder = Path(folder)
        self.image_processor.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def __call__(self, text=None, images=None, return_tensors="np", padding=True, truncation=None,
                 max_length=None, **kwargs) -> ModelOutput:
        """Text and/or images -> the fields both graphs take (input_ids, attention_mask[, token_type_ids],
        pixel_values). Texts are padded to the batch's longest by default."""
        if text is None and images is None:
            raise InputError("pass text=..., images=... or both")
        out = ModelOutput()
        if text is not None:
            out.update(self.tokenizer(text, padding=padding, truncation=truncation, max_length=max_length,
                                      return_tensors=return_tensors, **kwargs))
        if images is not None:
            out.update(self.image_processor(images, return_tensors=return_tensors))
        return out

    def __repr__(self):
        return f"DualEncoderProcessor({self.image_processor!r}, {self.tokenizer!r})"
