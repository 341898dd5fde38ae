"""VipLlavaProcessor: transformers' `LlavaProcessor` (the processor of llava-hf/vip-llava-7b-hf) without
torch: CLIP images at 336 px, the Llama tokenizer, and every `<image>` of the text expanded to the
image's token count. numpy, tokenizers and Pillow only.

    proc = VipLlavaProcessor.from_pretrained("path/to/vip-llava-7b-hf")   # or .tiny(image_size=28, patch_size=14)
    batch = proc(text=proc.prompt("What is inside the red box?"), images=photo)
    batch.input_ids, batch.attention_mask   # (B, T) int64: one <image> became 576 image tokens
    batch.pixel_values                      # (n_images, 3, 336, 336) float32

Images: `vlexport.processing.vit_images.CLIPImageProcessor` (HF's CLIPImageProcessorPil, bit for bit)
from the folder's preprocessor_config.json, or the `image_processor` entry of its processor_config.json
(how transformers 5 saves a processor), or, with neither, vip-llava-7b-hf's settings: shortest edge 336
bicubic, center crop 336, rescale 1/255, OpenAI CLIP mean/std, RGB conversion (`VIP_LLAVA_IMAGE_CONFIG`).

Text: the folder's tokenizer.json through `vlexport.processing.text.TextProcessor`, loaded the way
transformers 5.23's AutoTokenizer loads it for this processor:
- a folder (or `config`) whose model type is vipllava / llava / llava_next: transformers forces its
  `TokenizersBackend` for these model types (their hub tokenizer_config.json names LlamaTokenizer,
  "incorrectly"), i.e. the tokenizer.json as it is: Llama-2's Prepend("▁") + Replace normalizer, so text
  right after `<image>` starts with "▁" (the "legacy" behaviour);
- otherwise a tokenizer_config.json naming LlamaTokenizer(Fast): the pipeline that class rebuilds
  (no normalizer, `Metaspace(prepend_scheme="first")`, or "always" with `legacy: true`, "never" with
  `add_prefix_space: false`; its decoder; BPE with byte fallback; `<unk>`/`<s>`/`</s>` defaults);
- `add_bos_token` / `add_eos_token` in tokenizer_config.json rebuild the post-processor, as
  TokenizersBackend does; otherwise the file's post-processor adds `<s>`, as Llama-2's.

The number of tokens one `<image>` becomes is HF LlavaProcessor's: with `patch_size` (processor_config.json)
`(height // patch_size) * (width // patch_size) + num_additional_image_tokens`, minus 1 when
`vision_feature_select_strategy == "default"`; without it, `image_seq_length` (the model config's, or
576). The token ids are expanded after tokenizing, which is what tokenizing HF's expanded string gives
(consecutive added tokens leave nothing between them; tested against HF).

Where this differs from HF, on purpose:
- padding is on by default (`padding=True`) and on the LEFT (`padding_side`, constructor argument and
  attribute; per call too), for generation; HF pads only when asked, on the tokenizer's side;
- `text` is required (HF returns only pixel_values for images alone: use `proc.image_processor(images)`);
- a prompt longer than the tokenizer's model_max_length is an InputError (HF warns, the model then fails);
- errors are vlexport InputErrors naming what was expected and what came (HF: ValueError);
- without `patch_size` HF fails (`None` in the division); we use `image_seq_length`;
- `vocab_size` counts every id, added tokens included (the rows the embedding needs: 1002 for the tiny
  tokenizer, 32002 for vip-llava's); HF's `tokenizer.vocab_size` leaves the added ones out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vlexport.errors import ArtifactError, ConfigError, InputError
from vlexport.outputs import ModelOutput
from vlexport.families.vip_llava.tokenizer import TOKENIZER_OPTIONS, config_value, load_tokenizer, read_json
from vlexport.processing import vit_images

PROMPT = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the human's questions.###Human: <image>\n{}###Assistant:")
IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_SEQ_LENGTH = 576
TINY_TOKENIZER = Path(__file__).resolve().parents[2] / "data" / "tiny-llama-tokenizer.json"
PROCESSOR_CONFIG = "processor_config.json"

# llava-hf/vip-llava-7b-hf's preprocessor_config.json (a CLIPImageProcessor)
VIP_LLAVA_IMAGE_CONFIG = {
    "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 336}, "resample": 3,
    "do_center_crop": True, "crop_size": {"height": 336, "width": 336}, "do_rescale": True,
    "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(vit_images.OPENAI_CLIP[0]),
    "image_std": list(vit_images.OPENAI_CLIP[1]), "do_convert_rgb": True}

_PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: "do_not_pad",
            "do_not_pad": "do_not_pad", None: "do_not_pad"}


def vip_llava_image_processor() -> vit_images.CLIPImageProcessor:
    """vip-llava-7b-hf's image processor (CLIP at 336 px)."""
    return vit_images.CLIPImageProcessor.from_dict(dict(VIP_LLAVA_IMAGE_CONFIG))


def tiny_token_ids() -> dict:
    """The ids of the committed tiny tokenizer (vlexport/data/tiny-llama-tokenizer.json) that a model
    config needs: vocab_size (every id, added tokens included), image_token_index, pad/bos/eos."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TINY_TOKENIZER))
    return {"vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "image_token_index": tok.token_to_id(IMAGE_TOKEN), "pad_token_id": tok.token_to_id("<pad>"),
            "bos_token_id": tok.token_to_id("<s>"), "eos_token_id": tok.token_to_id("</s>")}


def _image_processor(folder: Path, processor_config: dict):
    if (folder / vit_images.CONFIG_NAME).is_file():
        return vit_images.image_processor_from_pretrained(folder, default="CLIPImageProcessor")
    nested = processor_config.get("image_processor")
    if isinstance(nested, dict):  # transformers 5 saves the image processor inside processor_config.json
        kind = vit_images.hf_class_name(nested) or "CLIPImageProcessor"
        if kind not in vit_images.IMAGE_PROCESSORS:
            raise ConfigError(f"{folder / PROCESSOR_CONFIG}: image processor type {kind!r} is not supported here; "
                              f"vlexport has {', '.join(sorted(vit_images.IMAGE_PROCESSORS))}")
        untyped = {k: v for k, v in nested.items() if k not in ("image_processor_type", "feature_extractor_type")}
        try:
            return vit_images.IMAGE_PROCESSORS[kind].from_dict(untyped)
        except ConfigError as e:
            raise ConfigError(f"{folder / PROCESSOR_CONFIG} (image_processor): {e}") from None
    return vip_llava_image_processor()


def _positive_int(v, name, zero=False):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if zero else 1):
        raise ConfigError(f"{name} must be a {'non-negative' if zero else 'positive'} int, got {v!r}")
    return int(v)


# ---------------------------------------------------------------------------------- processor

class VipLlavaProcessor:
    """HF's LlavaProcessor for VipLlava, torch-free (see the module docstring).

    image_processor: a vlexport image processor (`vit_images.CLIPImageProcessor`); tokenizer: a
    `vlexport.processing.text.TextProcessor` holding `image_token` as one token. Tokens per image:
    from `patch_size` (+ num_additional_image_tokens, - 1 for vision_feature_select_strategy "default"),
    as HF, or `image_seq_length` when patch_size is None. padding_side: "left" (default, for generation)
    or "right". Thread-safe: a call changes no state.
    """

    PROMPT = PROMPT

    def __init__(self, image_processor, tokenizer, image_token: str = IMAGE_TOKEN,
                 image_seq_length: int | None = DEFAULT_IMAGE_SEQ_LENGTH, *, patch_size: int | None = None,
                 num_additional_image_tokens: int = 0, vision_feature_select_strategy: str | None = None,
                 padding_side: str = "left", tokenizer_options: dict | None = None):
        from vlexport.processing.text import TextProcessor

        if not isinstance(tokenizer, TextProcessor):
            raise ConfigError(f"tokenizer must be a vlexport TextProcessor, got {type(tokenizer).__name__}")
        if not callable(image_processor) or not hasattr(image_processor, "save_pretrained"):
            raise ConfigError(f"image_processor must be a vlexport image processor, got "
                              f"{type(image_processor).__name__}")
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        if not isinstance(image_token, str) or not image_token:
            raise ConfigError(f"image_token must be a non-empty string, got {image_token!r}")
        self.image_token = image_token
        tid = tokenizer.tokenizer.token_to_id(image_token)
        if tid is None or tokenizer.tokenizer.encode(image_token, add_special_tokens=False).ids != [tid]:
            raise ConfigError(f"the image token {image_token!r} is not one token of the tokenizer's vocabulary "
                              f"({len(tokenizer)} tokens); add it as a special token (vip-llava's is id 32000)")
        self._image_token_id = tid
        self.patch_size = None if patch_size is None else _positive_int(patch_size, "patch_size")
        self.num_additional_image_tokens = _positive_int(num_additional_image_tokens, "num_additional_image_tokens",
                                                         zero=True)
        if vision_feature_select_strategy not in (None, "default", "full"):
            raise ConfigError(f"vision_feature_select_strategy must be 'default', 'full' or None, got "
                              f"{vision_feature_select_strategy!r}")
        self.vision_feature_select_strategy = vision_feature_select_strategy
        if self.patch_size is None:
            if image_seq_length is None:
                raise ConfigError("give patch_size (to count the image tokens as HF does) or image_seq_length")
            self._fixed_seq_length = _positive_int(image_seq_length, "image_seq_length")
        else:
            self._fixed_seq_length = None
            crop = getattr(image_processor, "crop_size", None)
            if getattr(image_processor, "do_center_crop", False) and crop:
                self.tokens_per_image(crop["height"], crop["width"])  # a ConfigError now, not at the first call
        self.tokenizer_options = {k: v for k, v in (tokenizer_options or {}).items() if k in TOKENIZER_OPTIONS}
        self.padding_side = padding_side

    # ------------------------------------------------------------------------- construction

    @classmethod
    def from_pretrained(cls, folder, config=None, *, padding_side: str = "left") -> "VipLlavaProcessor":
        """A model or artifact folder: tokenizer.json (+ tokenizer_config.json, special_tokens_map.json),
        preprocessor_config.json (or processor_config.json's image_processor; neither: vip-llava-7b-hf's
        CLIP at 336 px) and processor_config.json (image_token, patch_size, num_additional_image_tokens,
        vision_feature_select_strategy). Without patch_size there, one <image> becomes
        `config.image_seq_length` tokens (config: the model config, an object or a dict), or 576."""
        if folder is None or not Path(folder).is_dir():
            raise ArtifactError(f"VipLlavaProcessor.from_pretrained: '{folder}' is not a folder; expected a model or "
                                f"artifact folder with a tokenizer.json")
        folder = Path(folder)
        pc = read_json(folder / PROCESSOR_CONFIG, "processor config") if (folder / PROCESSOR_CONFIG).is_file() else {}
        tokenizer, options, _ = load_tokenizer(folder, config)
        seq = pc.get("image_seq_length")
        if seq is None and config is not None:
            seq = config_value(config, "image_seq_length")
        try:
            return cls(_image_processor(folder, pc), tokenizer, image_token=pc.get("image_token") or IMAGE_TOKEN,
                       image_seq_length=DEFAULT_IMAGE_SEQ_LENGTH if seq is None else seq,
                       patch_size=pc.get("patch_size"),
                       num_additional_image_tokens=pc.get("num_additional_image_tokens") or 0,
                       vision_feature_select_strategy=pc.get("vision_feature_select_strategy"),
                       padding_side=padding_side, tokenizer_options=options)
        except ConfigError as e:
            raise ConfigError(f"{folder}: {e}") from None

    @classmethod
    def tiny(cls, image_size: int = 28, patch_size: int = 14, *, padding_side: str = "left") -> "VipLlavaProcessor":
        """The tiny built-in model's processor: the committed tiny Llama-style tokenizer
        (vlexport/data/tiny-llama-tokenizer.json) and CLIP processing at image_size px; one <image> is
        (image_size // patch_size) ** 2 tokens (HF's count with num_additional_image_tokens=1 and the
        "default" strategy, as vip-llava's)."""
        from vlexport.processing.text import TextProcessor

        image_size = _positive_int(image_size, "image_size")
        patch_size = _positive_int(patch_size, "patch_size")
        if patch_size > image_size:
            raise ConfigError(f"patch_size {patch_size} is larger than image_size {image_size}")
        tok = TextProcessor(TINY_TOKENIZER, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                            tokenizer_class="TokenizersBackend", padding_side=padding_side)
        return cls(vit_images.at_size(vip_llava_image_processor(), image_size), tok, patch_size=patch_size,
                   num_additional_image_tokens=1, vision_feature_select_strategy="default",
                   padding_side=padding_side, tokenizer_options={"add_bos_token": True, "add_eos_token": False})

    def save_pretrained(self, folder) -> list[str]:
        """Write preprocessor_config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json and
        processor_config.json: what from_pretrained (and transformers' AutoProcessor) reads back."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [str(self.image_processor.save_pretrained(folder))]
        paths += list(self.tokenizer.save_pretrained(folder))
        tc_path = folder / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text(encoding="utf-8"))
        tc.update(self.tokenizer_options)
        tc["padding_side"] = self.padding_side
        tc["processor_class"] = "LlavaProcessor"
        tc_path.write_text(json.dumps(tc, indent=2) + "\n", encoding="utf-8")
        pc = {"processor_class": "LlavaProcessor", "image_token": self.image_token}
        if self.patch_size is not None:
            pc.update(patch_size=self.patch_size, num_additional_image_tokens=self.num_additional_image_tokens,
                      vision_feature_select_strategy=self.vision_feature_select_strategy)
        else:  # vlexport's key (HF's LlavaProcessor needs patch_size)
            pc["image_seq_length"] = self._fixed_seq_length
        (folder / PROCESSOR_CONFIG).write_text(json.dumps(pc, indent=2) + "\n", encoding="utf-8")
        return paths + [str(folder / PROCESSOR_CONFIG)]

    # ---------------------------------------------------------------------------- properties

    @property
    def padding_side(self) -> str:
        return self._padding_side

    @padding_side.setter
    def padding_side(self, side):
        if side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {side!r}")
        self._padding_side = side
        self.tokenizer.padding_side = side  # what save_pretrained writes

    image_token_id = property(lambda self: self._image_token_id, doc="id of the <image> token")
    pad_token_id = property(lambda self: self.tokenizer.pad_token_id, doc="id of the pad token, or None")
    eos_token_id = property(lambda self: self.tokenizer.eos_token_id, doc="id of the eos token, or None")
    bos_token_id = property(lambda self: self.tokenizer.bos_token_id, doc="id of the bos token, or None")

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, added tokens (<image>, <pad>) included."""
        return len(self.tokenizer)

    def tokens_per_image(self, height: int, width: int) -> int:
        """How many image tokens one <image> becomes for pixel_values of that size (HF's rule)."""
        if self.patch_size is None:
            return self._fixed_seq_length
        n = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        n -= self.vision_feature_select_strategy == "default"
        if n < 1:
            raise ConfigError(f"{height}x{width} pixel values in patches of {self.patch_size} give {n} image tokens "
                              f"(num_additional_image_tokens={self.num_additional_image_tokens}, "
                              f"vision_feature_select_strategy={self.vision_feature_select_strategy!r})")
        return n

    @property
    def image_seq_length(self) -> int | None:
        """Tokens per image for the image processor's output size (None when that size varies per image)."""
        if self.patch_size is None:
            return self._fixed_seq_length
        p = self.image_processor
        if getattr(p, "do_center_crop", False) and getattr(p, "crop_size", None):
            return self.tokens_per_image(p.crop_size["height"], p.crop_size["width"])
        size = getattr(p, "size", {}) or {}
        if getattr(p, "do_resize", False) and "height" in size and "width" in size:
            return self.tokens_per_image(size["height"], size["width"])
        return None

    def prompt(self, question):
        """vip-llava's chat prompt (PROMPT) around a question (or a list of questions -> a list)."""
        if isinstance(question, (list, tuple)):
            return [self.prompt(q) for q in question]
        if not isinstance(question, str):
            raise InputError(f"question must be a str (or a list of str), got {type(question).__name__}")
        return PROMPT.format(question)

    # ------------------------------------------------------------------------------- calling

    def __call__(self, text=None, images=None, padding=True, return_tensors="np", *, padding_side=None,
                 max_length=None) -> ModelOutput:
        """Prompts (str or list of str, one `<image>` per image, in order) and images -> input_ids,
        attention_mask (int64, (B, T)) and pixel_values (float32, (n_images, 3, S, S)) when images are given.
        padding: True/"longest" (default), "max_length" (to max_length, else the tokenizer's
        model_max_length), False. padding_side: this call's ("left"/"right"; default the processor's).
        return_tensors: "np", "pt" (torch) or None (lists)."""
        if return_tensors not in ("np", "pt", None):
            raise InputError(f"return_tensors must be 'np', 'pt' or None, got {return_tensors!r}")
        if text is None:
            raise InputError("text is required: a prompt with one <image> placeholder per image (proc.prompt(question) "
                             "makes vip-llava's); for pixel values alone use proc.image_processor(images)")
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            inner = (f" holding {sorted({type(t).__name__ for t in texts})}"
                     if isinstance(texts, (list, tuple)) else "")
            raise InputError(f"text must be a str or a list of str, got a {type(text).__name__}{inner}")
        if not texts:
            raise InputError("text is an empty list; expected at least one prompt")
        texts = list(texts)
        side = self._padding_side if padding_side is None else padding_side
        if side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {side!r}")
        try:
            strategy = _PADDING[padding]
        except (KeyError, TypeError):
            raise InputError(f"padding must be True/'longest', 'max_length' or False/'do_not_pad', got {padding!r}") \
                from None

        counts = [t.count(self.image_token) for t in texts]
        n_images = 0
        if images is not None:
            flatten = getattr(type(self.image_processor), "_flatten", None)  # HF's make_flat_list_of_images
            flat = flatten(images) if flatten else images if isinstance(images, (list, tuple)) else [images]
            n_images = len(flat)
            if n_images == 0:
                raise InputError("images is empty; pass one image per <image> placeholder, or images=None")
        if sum(counts) != n_images:
            where = f" (per text: {counts})" if len(texts) > 1 else ""
            raise InputError(f"the text holds {sum(counts)} {self.image_token} placeholder(s){where} but {n_images} "
                             f"image(s) were given; every {self.image_token} takes one image, in order"
                             + ("" if sum(counts) else f" (put {self.image_token} where the image goes: proc.prompt("
                                                       "question) does)"))

        out = ModelOutput()
        pixel_values = None
        n_tokens = 0
        if images is not None:
            pixel_values = self.image_processor(images, return_tensors="np")["pixel_values"]
            n_tokens = self.tokens_per_image(*pixel_values.shape[2:])

        enc = self.tokenizer(texts, padding=False, return_tensors=None)
        rows = []
        for i, ids in enumerate(enc["input_ids"]):
            found = sum(1 for t in ids if t == self._image_token_id)
            if found != counts[i]:  # only a text holding the token's id some other way, e.g. a merged piece
                raise InputError(f"text[{i}] tokenizes to {found} {self.image_token} token(s) but holds "
                                 f"{counts[i]} {self.image_token} placeholder(s)")
            if found:
                row = []
                for t in ids:
                    row.extend([t] * n_tokens if t == self._image_token_id else (t,))
                ids = row
            rows.append(ids)
        lengths = [len(r) for r in rows]
        limit = self.tokenizer.model_max_length
        if limit and limit < 1e20 and max(lengths) > limit:
            i = int(np.argmax(lengths))
            raise InputError(f"text[{i}] is {lengths[i]} tokens long with its image tokens ({counts[i]} x {n_tokens}), "
                             f"more than the tokenizer's model_max_length of {limit}")

        target = None
        if strategy == "longest":
            target = max(lengths)
        elif strategy == "max_length":
            target = max_length if max_length is not None else (limit if limit and limit < 1e20 else None)
            if target is None:
                raise InputError("padding='max_length' needs max_length= (the tokenizer sets no model_max_length)")
            if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 1:
                raise InputError(f"max_length must be a positive int, got {max_length!r}")
            target = int(target)
        elif max_length is not None:
            raise InputError("max_length is only used with padding='max_length' (there is no truncation)")
        if target is not None and self.pad_token_id is None:
            raise InputError(f"padding={padding!r} needs a pad token and this tokenizer has none; pass padding=False "
                             f"(one text at a time)")
        budget = self.tokenizer.max_batch_tokens
        if len(rows) * max([target or 0] + lengths) > budget:
            raise InputError(f"text: {len(rows)} row(s) of up to {max([target or 0] + lengths)} tokens, more than the "
                             f"limit of {budget} token slots per call (TextProcessor.max_batch_tokens)")

        ids_out, mask_out = [], []
        for r in rows:
            fill = max(0, (target or 0) - len(r))
            pad, ones = [self.pad_token_id] * fill, [1] * len(r)
            ids_out.append(pad + r if side == "left" else r + pad)
            mask_out.append([0] * fill + ones if side == "left" else ones + [0] * fill)
        if return_tensors is None:
            out["input_ids"], out["attention_mask"] = ids_out, mask_out
            if pixel_values is not None:
                out["pixel_values"] = list(pixel_values)
            return out
        widths = {len(r) for r in ids_out}
        if len(widths) > 1:
            raise InputError(f"text: cannot make a {return_tensors!r} tensor from prompts of different lengths "
                             f"{sorted(widths)} tokens; pass padding=True or return_tensors=None")
        out["input_ids"] = np.array(ids_out, dtype=np.int64).reshape(len(ids_out), -1)
        out["attention_mask"] = np.array(mask_out, dtype=np.int64).reshape(len(ids_out), -1)
        if pixel_values is not None:
            out["pixel_values"] = pixel_values
        if return_tensors == "pt":
            from vlexport._deps import require

            torch = require("torch", "VipLlavaProcessor(return_tensors='pt')")
            for k in list(out):
                out[k] = torch.from_numpy(np.ascontiguousarray(out[k]))
        return out

    # ------------------------------------------------------------------------------ decoding

    def _ids(self, ids, what):
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            ids = [ids]
        if not isinstance(ids, (list, tuple)):
            raise InputError(f"{what} must be a sequence of token ids, got {type(ids).__name__}")
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
                raise InputError(f"{what} must hold non-negative int token ids, got {t!r}")
        return [int(t) for t in ids]

    def decode(self, ids, skip_special_tokens: bool = False, **kwargs) -> str:
        """The text of one sequence of ids, as HF's processor.decode (skip_special_tokens drops <s>, </s>,
        <pad>, <image>, ...)."""
        return self.tokenizer.decode(self._ids(ids, "ids"), skip_special_tokens=skip_special_tokens, **kwargs)

    def batch_decode(self, sequences, skip_special_tokens: bool = False, **kwargs) -> list[str]:
        """One text per row of ids (a 2-D array or a list of lists), as HF's processor.batch_decode."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        if not isinstance(sequences, (list, tuple)):
            raise InputError(f"sequences must be a batch of token id sequences, got {type(sequences).__name__}")
        return [self.tokenizer.decode(self._ids(s, f"sequences[{i}]"), skip_special_tokens=skip_special_tokens,
                                      **kwargs) for i, s in enumerate(sequences)]

    def __repr__(self):
        return (f"VipLlavaProcessor(image_token={self.image_token!r} (id {self.image_token_id}), "
                f"tokens_per_image={self.image_seq_length}, padding_side={self.padding_side!r}, "
                f"{self.image_processor!r}, {self.tokenizer!r})")


class VipLlavaImageProcessorOnly:
    """The processor of a VipLlava artifact without a tokenizer (a `--random-weights` build: vlexport embeds
    no Llama-2 vocabulary): CLIP images work, text does not, and says why. generate() still takes token ids."""

    def __init__(self, image_processor=None):
        self.image_processor = image_processor or vip_llava_image_processor()
        self.tokenizer = None

    @classmethod
    def from_pretrained(cls, folder=None) -> "VipLlavaImageProcessorOnly":
        if folder is not None and (Path(folder) / vit_images.CONFIG_NAME).is_file():
            return cls(vit_images.image_processor_from_pretrained(folder, default="CLIPImageProcessor"))
        return cls()

    def save_pretrained(self, folder) -> list[str]:
        return [str(self.image_processor.save_pretrained(Path(folder)))]

    def _no_tokenizer(self, *_, **__):
        raise ConfigError("this VipLlava artifact has no tokenizer.json (built with --random-weights: vlexport embeds "
                          "no Llama-2 vocabulary), so it cannot turn text into ids or ids into text: rebuild from a "
                          "folder holding the checkpoint's tokenizer files, or call generate(input_ids=...) with ids")

    prompt = decode = batch_decode = _no_tokenizer

    def __call__(self, text=None, images=None, **kwargs) -> ModelOutput:
        if text is not None:
            self._no_tokenizer()
        if images is None:
            raise InputError("pass images=...: without a tokenizer this processor only prepares images")
        return self.image_processor(images, return_tensors=kwargs.get("return_tensors", "np"))
