"""ViLT (Kim et al., 2021) in plain PyTorch, written for export.

Reads top to bottom: text embeddings -> patch embeddings (per-sample position grids) -> pre-LN
encoder -> final layernorm -> pooler -> the five heads (the config dataclass is in config.py,
torch-free). Module and parameter names mirror HF `transformers` so checkpoints load by their
state-dict keys (base prefix "vilt.").

Export-friendly choices (numerically equal to HF in fp32 on every deterministic output):
- HF's `visual_embed` gathers the valid patches with `nonzero`/`unique` and shuffles them with
  `torch.multinomial` (a random permutation when max_image_length=-1, padded with randomly drawn
  masked patches when the images of a batch differ in size). We keep ALL Hp*Wp patches in
  row-major order and mask the padded ones instead. Attention is permutation-equivariant and masked
  keys get zero weight, so text rows, the [CLS] rows, the pooler and every head equal HF's; only the
  order and count of the image-patch rows of `last_hidden_state` differ (ours: 1 + Hp*Wp rows after
  the text, patch (r, c) at row T + 1 + r*Wp + c; HF: 1 + max valid patches, shuffled).
- The patch mask is pixel_mask sampled at the patch grid with HF's nearest rule (row r reads pixel
  row floor(r*H/Hp)), with integer arithmetic; for H, W multiples of the patch size (all the image
  processor makes) that is row r*patch. Each sample's valid patch rectangle (h, w) is read from the
  first column / first row of that mask, as HF does.
- The 12x12 position grid is resized bilinearly (align_corners=True) to each sample's (h, w) without
  a Python loop: separable interpolation matrices Ry (B, Hp, 12) and Rx (B, Wp, 12), built from
  h and w with the hat function max(0, 1 - |src - j|), zero outside the valid rectangle (HF's
  zero padding); positions = Ry @ grid @ Rx^T, two batched matmuls.
- NLVR2 folds its images into the batch: one encoder pass over batch*num_images rows, image i with
  modality type i+1, pooled outputs concatenated per example.
- No Python control flow on tensor values; every op works for dynamic batch/text/height/width.
- The additive attention mask uses -10000 (finite in fp16) instead of finfo(float32).min.
- Input checks run in eager mode only (skipped while tracing/exporting).
"""

from __future__ import annotations


import torch
from torch import nn

from vlexport.errors import ConfigError, InputError
from vlexport.families.vilt.config import ViltConfig
from vlexport.layers import MASK_VALUE
from vlexport.layers import Pooler, Pretrained
from vlexport.layers import exporting as _exporting
from vlexport.outputs import ModelOutput
from vlexport.specs import check_inputs
from vlexport.towers.bert import PredictionHeadTransform, TextEmbeddings
from vlexport.towers.vit import VitEncoder



# ----------------------------------------------------------------------------- text embeddings

# BERT's (vlexport.towers.bert.TextEmbeddings): word + token type + absolute position, then LayerNorm.


# ----------------------------------------------------------------------------- patch embeddings

class ViltPatchEmbeddings(nn.Module):
    """Non-overlapping patch x patch Conv2d (ViT); a partial last row/column of pixels is dropped."""

    def __init__(self, c: ViltConfig):
        super().__init__()
        self.projection = nn.Conv2d(c.num_channels, c.hidden_size, kernel_size=c.patch_size, stride=c.patch_size)

    def forward(self, pixel_values):
        return self.projection(pixel_values)  # (B, 3, H, W) -> (B, C, Hp, Wp)


def patch_mask(pixel_mask, Hp: int, Wp: int):
    """(B, H, W) pixel mask -> (B, Hp, Wp) patch mask: HF's nearest interpolation, row r reading
    pixel row floor(r * H / Hp) (r * patch when H is a multiple of the patch size)."""
    H, W = pixel_mask.shape[-2:]
    dev = pixel_mask.device
    rows = torch.arange(Hp, device=dev) * H // Hp
    cols = torch.arange(Wp, device=dev) * W // Wp
    return pixel_mask.index_select(1, rows).index_select(2, cols)


def interpolation_matrix(n: int, valid, grid: int, dtype):
    """(B, n, grid) weights resizing a `grid`-long axis to `valid[b]` samples with bilinear
    align_corners=True (src = i * (grid-1)/(valid-1)), rows i >= valid[b] zero (HF pads with zeros)."""
    i = torch.arange(n, device=valid.device).to(dtype)  # (n,)
    v = valid.to(dtype)[:, None]  # (B, 1)
    scale = (grid - 1) / (v - 1).clamp(min=1)  # valid == 1 -> every sample reads grid row 0, as torch
    src = i[None, :] * scale  # (B, n)
    j = torch.arange(grid, device=valid.device).to(dtype)
    weights = (1.0 - (src[:, :, None] - j).abs()).clamp(min=0.0)  # hat function: the two nearest rows
    return weights * (i[None, :] < v).to(dtype)[:, :, None]


class ViltEmbeddings(nn.Module):
    """Text embeddings and patch embeddings (with per-image position grids), each plus its
    modality-type embedding, concatenated: (B, T + 1 + Hp*Wp, H) and the matching 0/1 mask."""

    def __init__(self, c: ViltConfig):
        super().__init__()
        self.grid = c.grid_size
        self.text_embeddings = TextEmbeddings(c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.patch_embeddings = ViltPatchEmbeddings(c)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, c.hidden_size))
        self.token_type_embeddings = nn.Embedding(c.modality_type_vocab_size, c.hidden_size)

    def visual_embed(self, pixel_values, pixel_mask):
        x = self.patch_embeddings(pixel_values)  # (B, C, Hp, Wp)
        B, C, Hp, Wp = x.shape
        mask = patch_mask(pixel_mask, Hp, Wp)  # (B, Hp, Wp)
        h = mask[:, :, 0].sum(1)  # valid patch rows (first column), as HF
        w = mask[:, 0, :].sum(1)  # valid patch columns (first row)
        G = self.grid
        grid = self.position_embeddings[0, 1:].transpose(0, 1).reshape(1, C, G, G)  # (1, C, Gy, Gx)
        ry = interpolation_matrix(Hp, h, G, x.dtype)[:, None]  # (B, 1, Hp, G)
        rx = interpolation_matrix(Wp, w, G, x.dtype)[:, None]  # (B, 1, Wp, G)
        pos = torch.matmul(torch.matmul(ry, grid), rx.transpose(-1, -2))  # (B, C, Hp, Wp)
        patches = (x + pos).flatten(2).transpose(1, 2)  # (B, Hp*Wp, C), row-major
        cls = (self.cls_token + self.position_embeddings[:, :1]).expand(B, -1, -1)  # (B, 1, C)
        keep = torch.cat([torch.ones_like(mask[:, :1, 0]), mask.flatten(1)], dim=1)  # (B, 1 + Hp*Wp)
        return torch.cat([cls, patches], dim=1), keep

    def forward(self, input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, image_token_type_idx):
        # image_token_type_idx: (B,) modality type of each row's image (1; i+1 for NLVR2's image i)
        text = self.text_embeddings(input_ids, token_type_ids)
        text = text + self.token_type_embeddings(torch.zeros_like(input_ids))
        image, image_mask = self.visual_embed(pixel_values, pixel_mask)
        image = image + self.token_type_embeddings(image_token_type_idx)[:, None, :]
        keep = torch.cat([attention_mask.to(image_mask.dtype), image_mask], dim=1)
        return torch.cat([text, image], dim=1), keep


# ----------------------------------------------------------------------------- encoder
# The pre-LN ViT encoder (vlexport.towers.vit.VitEncoder): HF's ViltLayer is ViT's layer, same names.


# ----------------------------------------------------------------------------- input checks

def _input_specs(model, images: bool) -> list:
    """What a head takes, from the family's description (built once per model); masks and segment
    ids have HF's defaults there, so they may be omitted. images=True: NLVR2's (B, N, ...) inputs."""
    cache = model.__dict__.setdefault("_input_specs", {})
    if images not in cache:
        from vlexport.families.vilt.describe import NLVR2, describe

        cache[images] = describe(NLVR2 if images else "ViltModel", model.config).graphs[0].inputs
    return cache[images]


def _check(model, feeds: dict, images: bool = False):
    """Eager-mode input checks (skipped while exporting)."""
    if _exporting():
        return
    sizes = check_inputs(_input_specs(model, images), {k: v for k, v in feeds.items() if v is not None})
    c = model.config
    if sizes.get("text", 0) > c.max_position_embeddings:
        raise InputError(f"input 'input_ids' has {sizes['text']} tokens; this model's "
                         f"max_position_embeddings is {c.max_position_embeddings}")
    for axis in ("height", "width"):
        if sizes.get(axis, c.patch_size) < c.patch_size:
            raise InputError(f"input 'pixel_values' has {axis}={sizes[axis]}, smaller than one "
                             f"{c.patch_size}-pixel patch")


def _no_extra(extra: dict):
    """HF-only keyword arguments are accepted when they change nothing (return_dict, output_* False,
    None); anything else (inputs_embeds, image_embeds, labels, a typo...) is refused."""
    used = sorted(k for k, v in extra.items() if k != "return_dict" and v is not None and v is not False)
    if used:
        raise InputError(f"unexpected input(s) {used}: vlexport's ViLT takes input_ids, attention_mask, "
                         f"token_type_ids, pixel_values, pixel_mask")


# ----------------------------------------------------------------------------- base model

class _Pretrained(Pretrained):
    def checkpoint_aliases(self) -> dict:
        """{checkpoint key: our key}: transformers 4.x stored the MLM bias as `mlm_score.bias` too."""
        return {"mlm_score.bias": "mlm_score.decoder.bias"}


class ViltModel(_Pretrained, nn.Module):
    def __init__(self, config: ViltConfig, add_pooling_layer: bool = True):
        super().__init__()
        config.validate()
        self.config = config
        self.embeddings = ViltEmbeddings(config)
        self.encoder = VitEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = Pooler(config.hidden_size) if add_pooling_layer else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, pixel_values=None, pixel_mask=None,
                image_token_type_idx=None, **_):
        """last_hidden_state (B, T + 1 + Hp*Wp, H): text rows, the image [CLS], then every patch in
        row-major order (padded patches included, masked); pooler_output (B, H)."""
        _no_extra(_)
        _check(self, dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          pixel_values=pixel_values, pixel_mask=pixel_mask))
        if pixel_values is None:
            raise InputError("missing input 'pixel_values' (batch, channels, height, width)")
        # HF's defaults: all text and pixels valid, segment 0, image modality type 1
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        pixel_mask = torch.ones_like(pixel_values[:, 0], dtype=torch.long) if pixel_mask is None else pixel_mask
        if image_token_type_idx is None or isinstance(image_token_type_idx, int):
            image_token_type_idx = torch.full(input_ids.shape[:1], 1 if image_token_type_idx is None
                                              else image_token_type_idx, dtype=torch.long, device=input_ids.device)
        h, keep = self.embeddings(input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask,
                                  image_token_type_idx)
        additive_mask = ((1.0 - keep.to(h.dtype)) * MASK_VALUE)[:, None, None, :]  # (B, 1, 1, S)
        h = self.layernorm(self.encoder(h, additive_mask))
        pooled = self.pooler(h) if self.pooler is not None else None
        return ModelOutput(last_hidden_state=h, pooler_output=pooled)


class _WithBase(_Pretrained, nn.Module):
    """A head on top of `self.vilt` (the HF base-model prefix)."""

    pooling = True

    def __init__(self, config: ViltConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.vilt = ViltModel(config, add_pooling_layer=self.pooling)

    def encode(self, input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, extra):
        _no_extra(extra)  # the inputs are checked by self.vilt (same config)
        return self.vilt(input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask)


def _classifier(n_in: int, n_hidden: int, n_out: int):
    """Linear -> LayerNorm -> GELU -> Linear (keys classifier.0/1/3); nn.LayerNorm's default eps 1e-5
    (not the config's 1e-12) and exact GELU, as HF."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.LayerNorm(n_hidden), nn.GELU(), nn.Linear(n_hidden, n_out))


# ----------------------------------------------------------------------------- heads

class ViltMLMHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transform = PredictionHeadTransform(c)  # BERT's
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)

    def forward(self, h):
        return self.decoder(self.transform(h))


class ViltForMaskedLM(_WithBase):
    """Masked-LM logits over the text positions (B, T, vocab)."""

    _TIED = {"mlm_score.decoder.weight": "vilt.embeddings.text_embeddings.word_embeddings.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.mlm_score = ViltMLMHead(config)
        # transformers 5 ties the decoder to the word embeddings (its config forces it) and drops it on
        # save; the original and 4.x checkpoints store their own: loading one that differs unties
        self.mlm_score.decoder.weight = self.vilt.embeddings.text_embeddings.word_embeddings.weight

    def tied_weights(self) -> dict:
        return dict(self._TIED)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, pixel_values=None, pixel_mask=None, **_):
        h = self.encode(input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, _).last_hidden_state
        return ModelOutput(logits=self.mlm_score(h[:, :input_ids.shape[1]]))


class ViltForQuestionAnswering(_WithBase):
    """VQA logits (B, labels): an MLP (H -> 2H -> labels) on the pooler output; answer scores are
    sigmoid(logits) (VQA's soft targets), applied by the caller as in HF."""

    def __init__(self, config):
        super().__init__(config)
        self.classifier = _classifier(config.hidden_size, 2 * config.hidden_size, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, pixel_values=None, pixel_mask=None, **_):
        out = self.encode(input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, _)
        return ModelOutput(logits=self.classifier(out.pooler_output))


class ViltForImagesAndTextClassification(_WithBase):
    """NLVR2: pixel_values (B, N, 3, H, W), pixel_mask (B, N, H, W), N = config.num_images. The N
    images are folded into the batch (one encoder pass over B*N rows, image i with modality type
    i+1, the text repeated), the N pooled outputs concatenated -> an MLP (NH -> NH -> labels)."""

    def __init__(self, config):
        super().__init__(config)
        n = config.num_images
        if n < 1:
            raise ConfigError(f"ViltForImagesAndTextClassification needs num_images >= 1, got {n}")
        if config.modality_type_vocab_size < n + 1:
            raise ConfigError(f"num_images {n} needs modality_type_vocab_size >= {n + 1} (image i has type i+1), "
                              f"got {config.modality_type_vocab_size}")
        self.classifier = _classifier(n * config.hidden_size, n * config.hidden_size, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, pixel_values=None, pixel_mask=None, **_):
        _no_extra(_)
        if pixel_values is not None and pixel_values.ndim == 4:  # one image per example, as HF
            pixel_values = pixel_values.unsqueeze(1)
            pixel_mask = None if pixel_mask is None else pixel_mask.unsqueeze(1)
        _check(self, dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          pixel_values=pixel_values, pixel_mask=pixel_mask), images=True)
        N, (B, T) = self.config.num_images, input_ids.shape
        # (B, T) -> (B*N, T) and (B, N, ...) -> (B*N, ...), example-major: row b*N + i is image i of example b
        text = [None if t is None else t[:, None].expand(-1, N, -1).reshape(-1, T)
                for t in (input_ids, attention_mask, token_type_ids)]
        images = [None if t is None else t.flatten(0, 1) for t in (pixel_values, pixel_mask)]
        image_types = torch.arange(1, N + 1, device=input_ids.device).repeat(B)  # (B*N,): image i -> type i+1
        out = self.vilt(*text, *images, image_token_type_idx=image_types)
        pooled = out.pooler_output.reshape(B, N * self.config.hidden_size)  # [pool(image 0) | pool(image 1) ...]
        return ModelOutput(logits=self.classifier(pooled))


class ViltForImageAndTextRetrieval(_WithBase):
    """Image-text matching score (B, 1): a linear layer on the pooler output."""

    def __init__(self, config):
        super().__init__(config)
        self.rank_output = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, pixel_values=None, pixel_mask=None, **_):
        out = self.encode(input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, _)
        return ModelOutput(logits=self.rank_output(out.pooler_output))


class ViltForTokenClassification(_WithBase):
    """Per-token logits over the text positions (B, T, labels); the base model has no pooler."""

    pooling = False

    def __init__(self, config):
        super().__init__(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, pixel_values=None, pixel_mask=None, **_):
        h = self.encode(input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask, _).last_hidden_state
        return ModelOutput(logits=self.classifier(h[:, :input_ids.shape[1]]))


ARCHITECTURES = {
    cls.__name__: cls
    for cls in (ViltModel, ViltForMaskedLM, ViltForQuestionAnswering, ViltForImagesAndTextClassification,
                ViltForImageAndTextRetrieval, ViltForTokenClassification)
}
