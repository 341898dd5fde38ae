"""Packing region features (visual_embeds) into padded batches with their masks. numpy only."""

from __future__ import annotations

import numpy as np

from vlexport.errors import InputError


def _to_numpy(x, name):
    """numpy view of an array-like (numpy, torch tensor, nested lists); InputError if not numeric."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} must be a numeric array; converting it failed: {exc}") from None
    # complex ('c': the imaginary part was silently dropped) and timedelta ('m', an np.number) are refused
    if arr.dtype == object or arr.dtype.kind in "cm" or not (np.issubdtype(arr.dtype, np.number)
                                                            or arr.dtype == np.bool_):
        raise InputError(f"{name} must be a numeric array (float features); got dtype {arr.dtype}")
    return arr


_F32_MAX = float(np.finfo(np.float32).max)


def _check_features(arr, name):
    """NaN/inf features, or float64 values beyond float32 (they became inf in the float32 output with
    only a RuntimeWarning), are an InputError naming the input instead of a silently poisoned batch."""
    if arr.size and arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if not bad.any() and arr.dtype.itemsize > 4:
            bad = np.abs(arr) > _F32_MAX
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"{name} holds {arr[at]} at index {at}: features must be finite float32 values "
                             f"(|x| <= {_F32_MAX:.4g})")
    return arr


def _check_mask(m, name):
    """Mask values must be 0 or 1 (bool or numbers); 0.5 or NaN were silently cast to int64."""
    if m.size and not ((m == 0) | (m == 1)).all():
        at = tuple(int(i) for i in np.argwhere(~((m == 0) | (m == 1)))[0])
        raise InputError(f"{name} holds {m[at]} at index {at}; expected 0 (padding) or 1 (a real region)")
    return m


def pack_visual(visual_embeds, visual_attention_mask, n: int, choices: int | None = None):
    """Region features for n examples -> (float32 embeds (B, V, D) or (B, C, V, D), int64 mask).

    visual_embeds: one (V, D) array (n == 1), a (B, V, D) / (B, C, V, D) array, or a list of n (V_i, D)
    arrays, zero-padded to the longest with mask 0 on the padding."""
    if isinstance(visual_embeds, (list, tuple)):
        arrays = [_check_features(_to_numpy(x, f"visual_embeds[{i}]"), f"visual_embeds[{i}]")
                  for i, x in enumerate(visual_embeds)]
        if len(arrays) != n:
            raise InputError(f"visual_embeds has {len(arrays)} entries but there are {n} texts; give one "
                             f"(regions, features) array per text")
        for i, a in enumerate(arrays):
            if a.ndim != 2:
                raise InputError(f"visual_embeds[{i}] must be 2-D (regions, features); got shape {a.shape}")
        dims = {a.shape[1] for a in arrays}
        if len(dims) != 1:
            raise InputError(f"visual_embeds: every array must have the same feature size; got feature "
                             f"sizes {[a.shape[1] for a in arrays]}")
        d = dims.pop()
        lengths = [a.shape[0] for a in arrays]
        vmax = max(lengths)
        emb = np.zeros((n, vmax, d), dtype=np.float32)
        for i, a in enumerate(arrays):
            emb[i, :a.shape[0]] = a
        mask = (np.arange(vmax)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
        if visual_attention_mask is not None:
            mask = _pack_mask(visual_attention_mask, lengths, vmax)
    else:
        emb = _check_features(_to_numpy(visual_embeds, "visual_embeds"), "visual_embeds")
        if emb.ndim == 2:
            if n != 1:
                raise InputError(f"visual_embeds is one (regions, features) array of shape {emb.shape} but "
                                 f"there are {n} texts; give (batch, regions, features) or a list of {n} arrays")
            emb = emb[None]
        elif emb.ndim == 4 and choices:
            if emb.shape[:2] != (n, choices):
                raise InputError(f"visual_embeds of shape {emb.shape} does not match the multiple-choice batch "
                                 f"({n} examples x {choices} choices)")
        elif emb.ndim != 3:
            raise InputError("visual_embeds must be 2-D (regions, features), 3-D (batch, regions, features)"
                             + (" or 4-D (batch, choices, regions, features)" if choices else "")
                             + f" or a list of 2-D arrays; got shape {emb.shape}")
        if emb.shape[0] != n:
            raise InputError(f"visual_embeds has batch size {emb.shape[0]} but there are {n} texts")
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if visual_attention_mask is None:
            mask = np.ones(emb.shape[:-1], dtype=np.int64)
        else:
            if isinstance(visual_attention_mask, (list, tuple)) and emb.ndim == 3:
                mask = _pack_mask(visual_attention_mask, [emb.shape[1]] * n, emb.shape[1])
            else:
                mask = _check_mask(_to_numpy(visual_attention_mask, "visual_attention_mask"), "visual_attention_mask")
                if mask.ndim == 1 and emb.shape[0] == 1:
                    mask = mask[None]
                if mask.shape != emb.shape[:-1]:
                    raise InputError(f"visual_attention_mask must have shape {emb.shape[:-1]} (matching "
                                     f"visual_embeds {emb.shape}); got {mask.shape}")
                mask = mask.astype(np.int64)
    if choices and emb.ndim == 3:  # one set of regions per example, shared by its choices
        emb = np.ascontiguousarray(np.broadcast_to(emb[:, None], (n, choices) + emb.shape[1:]))
        mask = np.ascontiguousarray(np.broadcast_to(mask[:, None], (n, choices) + mask.shape[1:]))
    return emb, mask

def _pack_mask(masks, lengths, vmax):
    if not isinstance(masks, (list, tuple)) or len(masks) != len(lengths):
        got = len(masks) if isinstance(masks, (list, tuple)) else type(masks).__name__
        raise InputError(f"visual_attention_mask must be a list of {len(lengths)} 1-D arrays (one per "
                         f"visual_embeds entry); got {got}")
    out = np.zeros((len(lengths), vmax), dtype=np.int64)
    for i, (m, length) in enumerate(zip(masks, lengths)):
        m = _check_mask(_to_numpy(m, f"visual_attention_mask[{i}]"), f"visual_attention_mask[{i}]")
        if m.shape != (length,):
            raise InputError(f"visual_attention_mask[{i}] must have shape ({length},) like visual_embeds[{i}]; "
                             f"got {m.shape}")
        out[i, :length] = m
    return out
