"""VisualBERT's processor: BERT WordPiece text (vlexport.processing.bert_text) plus region packing
(regions.py), without torch.

The VisualBERT checkpoints ship no tokenizer; they were trained with bert-base-uncased, so the
processor loads `tokenizer.json` or `vocab.txt` from a model/artifact folder when there is one, and
otherwise the bert-base-uncased vocab embedded in vlexport. Visual inputs are packed the way
VisualBERT's forward expects them: `visual_embeds` (B, V, D) float32, `visual_attention_mask` (B, V)
int64 and `visual_token_type_ids` (B, V) int64 (ones, VisualBERT's default).
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import InputError
from vlexport.families.visual_bert.regions import pack_visual
from vlexport.processing.bert_text import BertTextProcessor


class VisualBertProcessor(BertTextProcessor):
    """Text (BERT WordPiece) + visual-embedding processor for VisualBERT models; no torch needed.

    >>> proc = VisualBertProcessor.from_pretrained(None)   # embedded bert-base-uncased vocab
    >>> batch = proc(["what color is the cat?", "how many dogs?"], visual_embeds=[feats_a, feats_b])
    >>> batch.input_ids.shape, batch.visual_embeds.shape  # (2, T), (2, Vmax, D)
    """

    model_input_names = ["input_ids", "token_type_ids", "attention_mask", "visual_embeds",
                         "visual_token_type_ids", "visual_attention_mask"]

    regions = None  # a region detector artifact folder (or a loaded detector): enables images=...
    _detector = None

    @property
    def detector(self):
        """The region detector (loaded on first use) that turns images into visual_embeds."""
        if self._detector is None:
            if self.regions is None:
                raise InputError("images= needs a region detector: build the artifact with --regions "
                                 "unc-nlp/frcnn-vg-finetuned, or set processor.regions to a detector artifact folder "
                                 "(or pass visual_embeds from your own detector)")
            from vlexport.families.visual_bert.from_pixels import load_detector

            self._detector = self.regions if hasattr(self.regions, "extract") else load_detector(self.regions)
        return self._detector

    def __call__(self, text=None, text_pair=None, visual_embeds=None, padding=True, truncation=None,
                 max_length=None, return_tensors="np", visual_attention_mask=None, pad_to_multiple_of=None,
                 images=None):
        """Encode text (see BertTextProcessor.__call__) and pack visual features.

        visual_embeds: (V, D) for one text, (B, V, D), or a list of B (V_i, D) arrays (zero-padded to
        the longest); for multiple choice also (B, C, V, D). visual_attention_mask: optional, (B, V) or
        a list of B (V_i,) arrays; default ones over the real regions. With return_tensors=None the text
        fields are Python lists and the visual fields stay numpy.
        Returns a ModelOutput: input_ids, token_type_ids, attention_mask (int64) and, with visual_embeds,
        visual_embeds (float32), visual_token_type_ids and visual_attention_mask (int64).
        """
        if text is None:
            raise InputError("text is required: VisualBERT needs a text (question, caption or statement) "
                             "with its visual features; got text=None")
        if images is not None:
            if visual_embeds is not None:
                raise InputError("pass either images (their regions come from the detector) or visual_embeds, not both")
            from vlexport.families.visual_bert.from_pixels import regions_from_images

            n_texts = 1 if isinstance(text, str) else len(text)
            images = list(images) if isinstance(images, (list, tuple)) else [images]
            if len(images) not in (1, n_texts):
                raise InputError(f"got {len(images)} images for {n_texts} texts: give one image, or one per text")
            # (the model checks the feature width against its visual_embeds input when it runs)
            visual_embeds, visual_attention_mask, _ = regions_from_images(self.detector, images)
            if len(images) == 1 and n_texts > 1:  # several questions about one photo
                visual_embeds = np.repeat(visual_embeds, n_texts, axis=0)
                visual_attention_mask = np.repeat(visual_attention_mask, n_texts, axis=0)
            if isinstance(text, str):
                visual_embeds, visual_attention_mask = visual_embeds[0], visual_attention_mask[0]
        out, n_examples, choices = self._encode(text, text_pair, padding, truncation, max_length, return_tensors,
                                                pad_to_multiple_of)
        if visual_embeds is not None:
            emb, mask = pack_visual(visual_embeds, visual_attention_mask, n_examples, choices)
            out["visual_embeds"] = emb
            out["visual_token_type_ids"] = np.ones(mask.shape, dtype=np.int64)
            out["visual_attention_mask"] = mask
        elif visual_attention_mask is not None:
            raise InputError("visual_attention_mask was given without visual_embeds; pass both or neither")
        return self._to_torch(out) if return_tensors == "pt" else out
