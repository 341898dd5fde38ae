"""The detector's box arithmetic in numpy: anchors, box deltas, clipping, NMS, RoI max pooling, and the
two selection steps (RPN proposals; the final regions). Torch-free: the runtime runs these between the
"backbone" and "roi_heads" graphs, and the PyTorch reference runs the same functions between its
modules, so there is one implementation of each step.

Each function reproduces what the demo (transformers' research_projects/lxmert, built on detectron2
and torchvision) computes, down to the float32 arithmetic order where that decides a box:
torchvision's `nms` (stable descending sort, IoU > threshold suppresses, areas without +1) and
`roi_pool` (Caffe's RoI max pooling: rounded box corners, floor/ceil bins, empty bins are 0).
Boxes are (x1, y1, x2, y2) in pixels of the resized image unless a name says otherwise.
"""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32
SCALE_CLAMP = math.log(1000.0 / 16)  # detectron2: dw, dh are clamped so a 16 px box grows to 1000 px at most


# ----------------------------------------------------------------------------- anchors and deltas

def cell_anchors(sizes, aspect_ratios) -> np.ndarray:
    """(A, 4) anchors centred on (0, 0): for each size, each aspect ratio h/w (detectron2's order)."""
    out = []
    for size in sizes:
        area = size ** 2.0
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return np.asarray(out, F32)


def grid_anchors(cells: np.ndarray, height: int, width: int, stride: int, offset: float) -> np.ndarray:
    """(height * width * A, 4) anchors of a feature map, ordered (row, column, anchor)."""
    xs = np.arange(offset * stride, width * stride, step=stride, dtype=F32)[:width]
    ys = np.arange(offset * stride, height * stride, step=stride, dtype=F32)[:height]
    sy, sx = np.meshgrid(ys, xs, indexing="ij")
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)  # (H*W, 4)
    return (shifts[:, None, :] + cells[None, :, :]).reshape(-1, 4)


def apply_deltas(deltas: np.ndarray, boxes: np.ndarray, weights) -> np.ndarray:
    """detectron2's Box2BoxTransform.apply_deltas: deltas (N, k*4) applied to boxes (N, 4) -> (N, k*4)."""
    deltas, boxes = deltas.astype(F32, copy=False), boxes.astype(F32, copy=False)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + F32(0.5) * widths
    ctr_y = boxes[:, 1] + F32(0.5) * heights
    wx, wy, ww, wh = (F32(w) for w in weights)
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
    dw = np.minimum(deltas[:, 2::4] / ww, F32(SCALE_CLAMP))
    dh = np.minimum(deltas[:, 3::4] / wh, F32(SCALE_CLAMP))
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = np.exp(dw) * widths[:, None]
    pred_h = np.exp(dh) * heights[:, None]
    out = np.empty_like(deltas)
    out[:, 0::4] = pred_ctr_x - F32(0.5) * pred_w
    out[:, 1::4] = pred_ctr_y - F32(0.5) * pred_h
    out[:, 2::4] = pred_ctr_x + F32(0.5) * pred_w
    out[:, 3::4] = pred_ctr_y + F32(0.5) * pred_h
    return out


def clip(boxes: np.ndarray, height, width) -> np.ndarray:
    """Boxes (..., 4) clamped to the image (x to [0, width], y to [0, height])."""
    if not np.isfinite(boxes).all():
        from vlexport.errors import NumericalError

        raise NumericalError("the detector produced non-finite boxes (an overflowing graph or corrupted weights)")
    out = boxes.copy()
    out[..., 0::2] = np.clip(out[..., 0::2], 0, F32(width))
    out[..., 1::2] = np.clip(out[..., 1::2], 0, F32(height))
    return out


# ----------------------------------------------------------------------------- NMS and RoI pooling

def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, limit: int | None = None) -> np.ndarray:
    """Indices kept by greedy NMS, by decreasing score (torchvision.ops.nms); stops after `limit` kept
    boxes (the greedy order makes the first `limit` the same as cutting the full result)."""
    n = len(boxes)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i].astype(F32) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, bool)
    keep = []
    for pos in range(n):
        i = order[pos]
        if suppressed[i]:
            continue
        keep.append(i)
        if limit is not None and len(keep) >= limit:
            break
        rest = order[pos + 1:]
        rest = rest[~suppressed[rest]]
        w = np.maximum(F32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(F32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou.astype(np.float64) > threshold]] = True  # float vs double, as torchvision
    return np.asarray(keep, np.int64)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return (np.sign(x) * np.floor(np.abs(x) + F32(0.5))).astype(np.int64)  # C's round(), not numpy's


def roi_pool(features: np.ndarray, batch_index: np.ndarray, boxes: np.ndarray, size: int,
             spatial_scale: float) -> np.ndarray:
    """torchvision.ops.roi_pool on channels-last features (B, H, W, C): boxes (R, 4) of image
    batch_index[r] -> (R, C, size, size), the max over each of size x size bins (Caffe's RoIPool)."""
    R, (H, W, C) = len(boxes), features.shape[1:]
    out = np.zeros((R, C, size, size), F32)
    corners = _round_half_away(boxes.astype(F32) * F32(spatial_scale))  # (R, 4) in feature cells
    steps = np.arange(size, dtype=F32)
    for r in range(R):
        sw, sh, ew, eh = corners[r]
        bin_w = F32(max(ew - sw + 1, 1)) / F32(size)
        bin_h = F32(max(eh - sh + 1, 1)) / F32(size)
        ws = np.clip(np.floor(steps * bin_w).astype(np.int64) + sw, 0, W)
        we = np.clip(np.ceil((steps + 1) * bin_w).astype(np.int64) + sw, 0, W)
        hs = np.clip(np.floor(steps * bin_h).astype(np.int64) + sh, 0, H)
        he = np.clip(np.ceil((steps + 1) * bin_h).astype(np.int64) + sh, 0, H)
        cols_ok, rows_ok = we > ws, he > hs
        if not cols_ok.any() or not rows_ok.any():
            continue  # every bin is empty: zeros
        h0, h1, w0, w1 = hs[rows_ok].min(), he[rows_ok].max(), ws[cols_ok].min(), we[cols_ok].max()
        crop = features[batch_index[r], h0:h1, w0:w1]  # (h, w, C)
        cols = np.full((h1 - h0, size, C), -np.inf, F32)
        for p in np.flatnonzero(cols_ok):
            cols[:, p] = crop[:, ws[p] - w0:we[p] - w0].max(axis=1)
        grid = np.zeros((size, size, C), F32)
        for p in np.flatnonzero(rows_ok):
            grid[p] = cols[hs[p] - h0:he[p] - h0].max(axis=0)
        grid[:, ~cols_ok] = 0
        out[r] = grid.transpose(2, 0, 1)
    return out


# ----------------------------------------------------------------------------- the two selection steps

def proposals(objectness: np.ndarray, anchor_deltas: np.ndarray, anchors: np.ndarray, image_sizes, cfg) -> list:
    """RPN proposals per image: the top pre_nms_topk anchors by objectness, decoded, clipped to the
    image, empty boxes dropped, NMS, the first post_nms_topk kept -> [(n_i, 4) boxes]."""
    out = []
    for n, (h, w) in enumerate(np.asarray(image_sizes)):
        logits = objectness[n]
        k = min(cfg.pre_nms_topk, len(logits))
        top = np.argsort(-logits, kind="stable")[:k]
        boxes = apply_deltas(anchor_deltas[n][top], anchors[top], cfg.rpn_bbox_reg_weights)
        boxes = clip(boxes, h, w)
        scores = logits[top]
        ok = ((boxes[:, 2] - boxes[:, 0]) > cfg.min_box_side) & ((boxes[:, 3] - boxes[:, 1]) > cfg.min_box_side)
        boxes, scores = boxes[ok], scores[ok]
        keep = nms(boxes, scores, cfg.rpn_nms_thresh, limit=cfg.post_nms_topk)
        out.append(boxes[keep])
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def select_regions(heads: dict, proposal_boxes: list, image_sizes, scales_yx, cfg) -> dict:
    """The demo's ROIOutputs.inference + padding to max_detections. heads: the box head's outputs for
    all proposals of all images, in order (cls_logits, attr_logits, box_deltas, roi_features).

    Per image: class-specific boxes decoded and clipped, each proposal's best non-background class,
    NMS over those boxes (class-agnostic, as the demo), the first max_detections kept; when fewer than
    min_detections survive, the next NMS threshold of the config is tried (the demo's rule; after the
    last one, what survived is kept: the demo would fail there). Boxes are scaled back to the original
    image; normalized_boxes divide them by its size."""
    counts = [len(b) for b in proposal_boxes]
    splits = np.cumsum(counts)[:-1]
    probs = softmax(heads["cls_logits"].astype(F32))
    attr = softmax(heads["attr_logits"][:, :-1].astype(F32)) if "attr_logits" in heads else None
    D = cfg.max_detections
    B = len(proposal_boxes)
    C2 = heads["roi_features"].shape[-1]
    result = {"obj_ids": np.zeros((B, D), np.int64), "obj_probs": np.zeros((B, D), F32),
              "attr_ids": np.zeros((B, D), np.int64), "attr_probs": np.zeros((B, D), F32),
              "boxes": np.zeros((B, D, 4), F32), "normalized_boxes": np.zeros((B, D, 4), F32),
              "roi_features": np.zeros((B, D, C2), F32), "preds_per_image": np.zeros(B, np.int64)}
    parts = {k: np.split(v, splits) for k, v in (("probs", probs), ("deltas", heads["box_deltas"]),
                                                  ("feats", heads["roi_features"]))}
    if attr is not None:
        parts["attr"] = np.split(attr, splits)
    for i in range(B):
        h, w = np.asarray(image_sizes)[i]
        props, p, deltas = proposal_boxes[i], parts["probs"][i][:, :-1], parts["deltas"][i]
        R, K = len(props), deltas.shape[1] // 4
        boxes = apply_deltas(deltas.reshape(R * K, 4), np.repeat(props, K, axis=0), cfg.roi_bbox_reg_weights)
        boxes = clip(boxes.reshape(R, K, 4), h, w)
        best = p.argmax(axis=1)
        best_scores = p[np.arange(R), best]
        best_boxes = boxes[np.arange(R), best if K > 1 else 0]
        for t in cfg.nms_thresh_test:
            keep = nms(best_boxes, best_scores, t, limit=D)
            if len(keep) >= cfg.min_detections:
                break
        n = len(keep)
        sy, sx = (float(s) for s in np.asarray(scales_yx)[i])
        out_boxes = best_boxes[keep].copy()
        out_boxes[:, 0::2] *= F32(sx)
        out_boxes[:, 1::2] *= F32(sy)
        raw_h, raw_w = F32(h * sy), F32(w * sx)
        result["boxes"][i, :n] = out_boxes
        result["normalized_boxes"][i, :n] = out_boxes / np.array([raw_w, raw_h, raw_w, raw_h], F32)
        result["obj_ids"][i, :n] = best[keep]
        result["obj_probs"][i, :n] = best_scores[keep]
        result["roi_features"][i, :n] = parts["feats"][i][keep]
        if attr is not None:
            a = parts["attr"][i][keep]
            result["attr_ids"][i, :n] = a.argmax(axis=1)
            result["attr_probs"][i, :n] = a.max(axis=1)
        result["preds_per_image"][i] = n
    return result


def run_heads(run, pooled: np.ndarray, chunk: int) -> dict:
    """The box head over all pooled regions in calls of at most `chunk` (run: feeds -> {name: array})."""
    heads = {}
    for s in range(0, len(pooled), chunk):
        for k, v in run(pooled[s:s + chunk]).items():
            heads.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in heads.items()}


def region_inputs(cfg, cell_anchors, features, objectness, anchor_deltas, image_sizes, stride: int = 16):
    """Between the graphs: proposals per image, their image indices, and their RoI-pooled res4 cells
    (R, C, P, P) in the order of the proposals."""
    h, w = features.shape[1:3]  # channels last (B, h, w, C)
    anchors = grid_anchors(np.asarray(cell_anchors, F32), h, w, stride, cfg.anchor_offset)
    if objectness.shape[1] != len(anchors):
        from vlexport.errors import ArtifactError

        raise ArtifactError(f"the backbone scored {objectness.shape[1]} anchors, but its {h}x{w} feature map has "
                            f"{len(anchors)} ({len(cell_anchors)} per cell): the graph and the anchors disagree")
    props = proposals(objectness, anchor_deltas, anchors, image_sizes, cfg)
    index = np.concatenate([np.full(len(p), n, np.int64) for n, p in enumerate(props)])
    pooled = roi_pool(features, index, np.concatenate(props), cfg.pooler_resolution, 1.0 / stride)
    return props, index, pooled
