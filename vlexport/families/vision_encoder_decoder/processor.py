"""The captioner's processor, torch-free: the image processor named by preprocessor_config.json (ViT,
DeiT: vlexport.processing.vit_images) and the folder's tokenizer for decoding the generated ids
(any tokenizer.json: GPT-2 byte-level BPE, RoBERTa BPE, WordPiece: vlexport.processing.text)."""

from __future__ import annotations

from pathlib import Path

from vlexport.errors import ConfigError, InputError
from vlexport.outputs import ModelOutput
from vlexport.processing import vit_images


class EncoderDecoderProcessor:
    def __init__(self, image_processor, tokenizer):
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, folder, config=None) -> "EncoderDecoderProcessor":
        from vlexport.processing.text import TextProcessor

        image = vit_images.for_vision_tower(folder, getattr(config, "encoder", None))
        # without a tokenizer.json the artifact still generates ids; decoding them says what is missing
        has_tokenizer = folder is not None and (Path(folder) / "tokenizer.json").is_file()
        return cls(image, TextProcessor.from_pretrained(folder) if has_tokenizer else None)

    @classmethod
    def tiny(cls, image_size: int = 32) -> "EncoderDecoderProcessor":
        from vlexport.processing.bert_text import BertTextProcessor

        return cls(vit_images.at_size(vit_images.ViTImageProcessor(), image_size), BertTextProcessor.tiny())

    def save_pretrained(self, folder):
        self.image_processor.save_pretrained(Path(folder))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(Path(folder))

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ConfigError("this model has no tokenizer.json, so its generated ids cannot be turned into text "
                              "(vlexport embeds no GPT-2 vocabulary): rebuild from a folder holding the tokenizer "
                              "files, or use generate() for the ids")
        return self.tokenizer

    def __call__(self, images=None, return_tensors="np", **kwargs) -> ModelOutput:
        if images is None:
            raise InputError("pass images=...: the captioner reads images")
        return self.image_processor(images, return_tensors=return_tensors, **kwargs)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return self._need_tokenizer().batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._need_tokenizer().decode(ids, skip_special_tokens=skip_special_tokens)
