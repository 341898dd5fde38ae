"""The Visual Genome Faster R-CNN (ResNet C4) of the VisualBERT/LXMERT demos, in plain PyTorch.

Reads top to bottom: a frozen-BN conv, the bottleneck block, the ResNet trunk up to res4 (stride 16),
the region proposal head, the box head (res5 run per region, then classes, attributes and box
deltas), and the detector that drives them. Module names are the demo's (`backbone.res4.3.conv2`,
`roi_heads.box_predictor.cls_score`, ...), so `unc-nlp/frcnn-vg-finetuned`'s state dict loads by
its keys.

The detector is two graphs with numpy between them (vlexport.families.frcnn.boxes):

    backbone:  pixel_values (B, 3, H, W) -> features (B, H/16, W/16, 1024), objectness (B, A*h*w),
               anchor_deltas (B, A*h*w, 4)
    [numpy]    anchors, decoding, top-k, NMS -> proposals; RoI max pooling -> (R, 1024, 14, 14)
    roi_heads: pooled (R, 1024, 14, 14) -> roi_features (R, 2048), cls_logits (R, 1601),
               attr_logits (R, 401), box_deltas (R, 6400)
    [numpy]    per-class boxes, best class, NMS, top 36 -> boxes, ids, probabilities, features

Why the split: NMS has a data-dependent output size and the RPN's top-k is 6000 (TensorRT's TopK
stops at 3840), and ONNX's MaxRoiPool has no TensorRT implementation; the two graphs are plain
convolutions and matrix products every backend runs, in fp32 or fp16. The numpy steps take
milliseconds beside the convolutions' seconds (see benchmarks/run_regions.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlexport.families.frcnn import boxes as B
from vlexport.families.frcnn.config import DEPTHS, FrcnnConfig
from vlexport.layers import Pretrained
from vlexport.outputs import ModelOutput

STRIDE = 16  # res4's stride: the feature map the RPN and the RoI pooling read


class FrozenBatchNorm(nn.Module):
    """Inference batch norm with the checkpoint's statistics (detectron2's FrozenBN; BN's eps)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class ConvBN(nn.Conv2d):
    """A bias-free convolution followed by frozen BN (the demo's Conv2d(norm=...): keys conv.weight, conv.norm.*)."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, dilation=1, groups=1):
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                         bias=False)
        self.norm = FrozenBatchNorm(cout)

    def forward(self, x):
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 with a projection shortcut when the width changes; MSRA's stride in the 1x1."""

    def __init__(self, cin, cout, mid, stride, cfg: FrcnnConfig, dilation=1):
        super().__init__()
        s1, s3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        self.shortcut = ConvBN(cin, cout, 1, stride=stride) if cin != cout else None
        self.conv1 = ConvBN(cin, mid, 1, stride=s1)
        self.conv2 = ConvBN(mid, mid, 3, stride=s3, padding=dilation, dilation=dilation, groups=cfg.num_groups)
        self.conv3 = ConvBN(mid, cout, 1)

    def forward(self, x):
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def stage(n, cin, cout, mid, first_stride, cfg, dilation=1) -> nn.Sequential:
    return nn.Sequential(*[Bottleneck(cin if i == 0 else cout, cout, mid, first_stride if i == 0 else 1, cfg, dilation)
                           for i in range(n)])


class Stem(nn.Module):
    def __init__(self, cfg: FrcnnConfig):
        super().__init__()
        self.caffe_maxpool = cfg.caffe_maxpool
        self.conv1 = ConvBN(3, cfg.stem_out_channels, 7, stride=2, padding=3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        if self.caffe_maxpool:
            # Caffe's pool1 (no padding, sizes rounded up: ceil_mode) written as one extra row and column
            # then floor mode: the same windows and sizes for every H, W, and no ceil-mode guard for
            # torch.export's symbolic shapes. The pad is 0: x is post-ReLU, so it never wins a max.
            return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), kernel_size=3, stride=2, padding=0)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class Backbone(nn.Module):
    """The ResNet trunk up to res4: (B, 3, H, W) -> (B, 4 * res2_out, ~H/16, ~W/16)."""

    def __init__(self, cfg: FrcnnConfig):
        super().__init__()
        n2, n3, n4 = DEPTHS[cfg.depth]
        mid, out = cfg.num_groups * cfg.width_per_group, cfg.res2_out_channels
        self.stem = Stem(cfg)
        self.res2 = stage(n2, cfg.stem_out_channels, out, mid, 1, cfg)
        self.res3 = stage(n3, out, out * 2, mid * 2, 2, cfg)
        self.res4 = stage(n4, out * 2, out * 4, mid * 4, 2, cfg)

    def forward(self, x):
        return self.res4(self.res3(self.res2(self.stem(x))))


class RPNHead(nn.Module):
    def __init__(self, cfg: FrcnnConfig):
        super().__init__()
        cin = cfg.res4_channels
        hidden = cin if cfg.rpn_hidden_channels == -1 else cfg.rpn_hidden_channels
        A = cfg.num_anchors
        self.conv = nn.Conv2d(cin, hidden, 3, padding=1)
        self.objectness_logits = nn.Conv2d(hidden, A, 1)
        self.anchor_deltas = nn.Conv2d(hidden, A * 4, 1)

    def forward(self, features):
        t = F.relu(self.conv(features))
        logits, deltas = self.objectness_logits(t), self.anchor_deltas(t)  # (B, A, h, w), (B, A*4, h, w)
        N, A, h, w = logits.shape
        logits = logits.permute(0, 2, 3, 1).reshape(N, -1)  # (B, h*w*A): row, column, anchor
        deltas = deltas.view(N, A, 4, h, w).permute(0, 3, 4, 1, 2).reshape(N, -1, 4)  # (B, h*w*A, 4)
        return logits, deltas


class ProposalGenerator(nn.Module):
    def __init__(self, cfg: FrcnnConfig):
        super().__init__()
        self.rpn_head = RPNHead(cfg)
        self.anchor_generator = AnchorGenerator(cfg)


class AnchorGenerator(nn.Module):
    """Holds the cell anchors: checkpoints store them (cell_anchors.0), so they load with the weights."""

    def __init__(self, cfg: FrcnnConfig):
        super().__init__()
        self.register_buffer("cell_anchors", torch.from_numpy(B.cell_anchors(cfg.anchor_sizes,
                                                                             cfg.anchor_aspect_ratios)))


class BoxPredictor(nn.Module):
    """Classes (+ background, last), class-specific box deltas, and VG attributes conditioned on the
    embedding of the region's best class (background included, as the demo's argmax)."""

    def __init__(self, cfg: FrcnnConfig):
        super().__init__()
        d = cfg.res5_channels
        self.use_attributes = cfg.use_attributes
        self.cls_score = nn.Linear(d, cfg.num_classes + 1)
        self.bbox_pred = nn.Linear(d, (1 if cfg.cls_agnostic_bbox_reg else cfg.num_classes) * 4)
        if cfg.use_attributes:
            self.cls_embedding = nn.Embedding(cfg.num_classes + 1, d // 8)
            self.fc_attr = nn.Linear(d + d // 8, d // 4)
            self.attr_score = nn.Linear(d // 4, cfg.num_attributes + 1)

    def forward(self, x):
        out = {"cls_logits": self.cls_score(x), "box_deltas": self.bbox_pred(x)}
        if self.use_attributes:
            emb = self.cls_embedding(out["cls_logits"].argmax(-1))  # (R, d/8)
            out["attr_logits"] = self.attr_score(F.relu(self.fc_attr(torch.cat([x, emb], -1))))
        return out


class RoIHeads(nn.Module):
    """Per region: res5 on the pooled 14x14 res4 cells, the mean over the grid (the 2048-d region
    feature VisualBERT reads), then the predictor."""

    def __init__(self, cfg: FrcnnConfig):
        super().__init__()
        out, mid = cfg.res5_channels, cfg.num_groups * cfg.width_per_group * 8
        # the VG model (res5_halve False) keeps res5 at the pooled resolution: stride 1, dilation 2
        stride, dilation = (2, 1) if cfg.res5_halve else (1, 2)
        self.res5 = stage(3, out // 2, out, mid, stride, cfg, dilation)
        self.box_predictor = BoxPredictor(cfg)

    def forward(self, pooled):
        feats = self.res5(pooled).mean(dim=(2, 3))  # (R, 2048)
        return {"roi_features": feats, **self.box_predictor(feats)}


class GeneralizedRCNN(Pretrained, nn.Module):
    def __init__(self, config: FrcnnConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.proposal_generator = ProposalGenerator(config)
        self.roi_heads = RoIHeads(config)

    # ---- loading (vlexport.weights.load_into)
    def checkpoint_aliases(self) -> dict:
        return {"proposal_generator.anchor_generator.cell_anchors.0": "proposal_generator.anchor_generator.cell_anchors"}

    def checkpoint_ignored(self, key: str) -> bool:
        return key.endswith("num_batches_tracked")

    def random_init(self, generator: torch.Generator):
        """Random weights that keep a 100-layer ResNet's activations near unit scale
        (vlexport.reference.init_random): weights at std gain/sqrt(fan_in), the stem's gain taking
        the 0..255-scale pixels down, residual branches damped, the box deltas small (as the demo's
        init), BN statistics near (0, 1). Real-looking proposals and several classes per image follow."""
        g = generator
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                elif p.dim() >= 2:
                    gain = (1 / 64 if name.startswith("backbone.stem") else 0.3 if ".conv3." in name
                            else 0.1 if ("anchor_deltas" in name or "bbox_pred" in name) else 1.0)
                    p.copy_(torch.randn(p.shape, generator=g) * (gain / math.sqrt(p[0].numel())))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
            for name, b in self.named_buffers():
                if name.endswith("running_mean"):
                    b.copy_(0.1 * torch.randn(b.shape, generator=g))
                elif name.endswith("running_var"):
                    b.copy_(0.5 + torch.rand(b.shape, generator=g))
        return self

    def artifact_facts(self) -> dict:
        """The runtime's anchors: the checkpoint's cell anchors (they need not be the config's formula)."""
        return {"cell_anchors": self.proposal_generator.anchor_generator.cell_anchors.tolist(), "stride": STRIDE}

    def graph_modules(self) -> dict:
        return {"backbone": _BackboneGraph(self), "roi_heads": _RoIHeadsGraph(self)}

    # ---- the demo's forward
    @torch.no_grad()
    def forward(self, pixel_values, image_sizes, scales_yx=None, roi_chunk: int = 300, **_) -> ModelOutput:
        """pixel_values (B, 3, H, W) from the processor, image_sizes (B, 2) [h, w] before padding,
        scales_yx (B, 2) original / resized size -> the demo's output_dict (padded to max_detections)."""
        image_sizes = np.asarray(image_sizes, np.int64)
        scales = np.ones((len(image_sizes), 2), np.float32) if scales_yx is None else np.asarray(scales_yx, np.float32)
        out = _BackboneGraph(self)(torch.as_tensor(pixel_values, dtype=torch.float32))
        feats = out["features"].numpy()
        props, pooled_index, pooled = B.region_inputs(self.config, self.artifact_facts()["cell_anchors"], feats,
                                                    out["objectness"].numpy(), out["anchor_deltas"].numpy(),
                                                    image_sizes)
        heads = B.run_heads(lambda p: {k: v.numpy() for k, v in self.roi_heads(torch.from_numpy(p)).items()},
                            pooled, roi_chunk)
        result = B.select_regions(heads, props, image_sizes, scales, self.config)
        result["sizes"] = image_sizes
        result["original_sizes"] = np.rint(image_sizes * scales).astype(np.int64)  # (B, 2) h, w before resizing
        return ModelOutput(**result)


class _BackboneGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        features = self.model.backbone(pixel_values)  # (B, 1024, h, w)
        objectness, deltas = self.model.proposal_generator.rpn_head(features)
        # channels last (B, h, w, 1024): each position's feature vector is one row (what the RoI pooling
        # reads contiguously, and a meaningful unit for the per-row precision gates)
        return {"features": features.permute(0, 2, 3, 1), "objectness": objectness, "anchor_deltas": deltas}


class _RoIHeadsGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pooled):
        return self.model.roi_heads(pooled)
