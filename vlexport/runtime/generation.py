"""Token generation in numpy, no torch: greedy, beam search and sampling over a `step` callback, with a
preallocated KV cache. Family pipelines (an image captioner; a chat decoder) supply `step`; the
loops here are HF `generate()`'s, ported so the same settings give the same token ids.

    step(input_ids (R, T), position_ids (R, T)) -> logits (R, T, V); it reads and fills `cache`
    cache.reorder(rows) after each beam-search step (rows: the beam each new beam came from)

Settings (GenerationSettings) come from generation_config.json / the model config, then keyword
arguments, as in HF: max_length (prompt included) or max_new_tokens, min_length, num_beams,
do_sample, temperature, top_k, top_p, seed, no_repeat_ngram_size, length_penalty, early_stopping,
eos_token_id, pad_token_id. Sampling draws from numpy's Generator(seed): the same seed gives the
same tokens here, not HF's torch random stream.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from vlexport.errors import ArtifactError, InputError

NEG = -1.0e9  # HF's "impossible" beam score


@dataclass
class GenerationSettings:
    max_length: int = 20
    max_new_tokens: int | None = None
    min_length: int = 0
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    seed: int | None = None
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    decoder_start_token_id: int | None = None

    @classmethod
    def resolve(cls, defaults: dict, overrides: dict) -> "GenerationSettings":
        """Defaults (generation_config.json / config values) under the caller's keyword arguments."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InputError(f"unknown generation argument(s) {unknown}; known: {sorted(names)}")
        kw = {k: v for k, v in defaults.items() if k in names and v is not None}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        for k in ("eos_token_id", "pad_token_id"):
            if isinstance(kw.get(k), list):
                if len(kw[k]) != 1:
                    raise InputError(f"{k}: one id is supported, got {kw[k]}")
                kw[k] = kw[k][0]
        s = cls(**kw)
        s.check()
        return s

    def check(self):
        def positive_int(name, v, zero=False):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if zero else 1):
                raise InputError(f"{name} must be a {'non-negative' if zero else 'positive'} integer, got {v!r}")
        positive_int("max_length", self.max_length)
        if self.max_new_tokens is not None:
            positive_int("max_new_tokens", self.max_new_tokens)
        positive_int("num_beams", self.num_beams)
        positive_int("min_length", self.min_length, zero=True)
        positive_int("no_repeat_ngram_size", self.no_repeat_ngram_size, zero=True)
        positive_int("top_k", self.top_k, zero=True)
        if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature < math.inf):
            raise InputError(f"temperature must be a positive number, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise InputError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.early_stopping not in (True, False, "never"):
            raise InputError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if self.do_sample and self.num_beams > 1:
            raise InputError("beam sampling (do_sample with num_beams > 1) is not supported; use one of them")

    def total_length(self, prompt_len: int) -> int:
        if self.max_new_tokens is not None:
            return prompt_len + self.max_new_tokens
        if self.max_length <= prompt_len and prompt_len > 1:  # HF refuses it too (decoder-only prompts)
            raise InputError(f"max_length is {self.max_length} but the prompt already has {prompt_len} tokens; "
                             f"raise max_length or, better, set max_new_tokens")
        return self.max_length


def read_generation_config(folder) -> dict:
    """generation_config.json of a model/artifact folder as a dict ({} when absent)."""
    f = Path(folder) / "generation_config.json"
    if not f.is_file():
        return {}
    try:
        d = json.loads(f.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{f} is not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ArtifactError(f"{f} must hold a JSON object")
    return d


class LayerKVCache:
    """Self-attention keys/values of every layer in two preallocated layer-major (L, R, heads, capacity,
    head) buffers and the (R, capacity) fill mask, for decoders that take one key and one value input per
    layer: layer i's (R, heads, capacity, head) view is contiguous and a backend reads it in place. A step
    writes its new slots in place (no per-step copy of the cache); beam search reorders rows, as HF's
    reorder_cache does. The fill mask comes from the caller (left-padded prompts write slots that stay
    masked)."""

    def __init__(self, layers: int, rows: int, heads: int, capacity: int, head_size: int, dtype=np.float32):
        self.keys = np.zeros((layers, rows, heads, capacity, head_size), dtype)  # layer-major
        self.values = np.zeros_like(self.keys)
        self.mask = np.zeros((rows, capacity), np.int64)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    def _slots(self, T: int) -> slice:
        """The next T slots (refused past the capacity)."""
        if self.length + T > self.capacity:
            raise InputError(f"the KV cache holds {self.capacity} positions; generating past it was asked for")
        return slice(self.length, self.length + T)

    def write(self, new_keys: list, new_values: list, new_mask):
        """Layer i's new keys/values (R, heads, T, head); new_mask (R, T): 1 for real tokens."""
        slots = self._slots(new_mask.shape[1])
        for i, (k, v) in enumerate(zip(new_keys, new_values)):
            self.keys[i, :, :, slots] = k
            self.values[i, :, :, slots] = v
        self.mask[:, slots] = new_mask
        self.length = slots.stop

    def reorder(self, rows):
        self.keys, self.values, self.mask = self.keys[:, rows], self.values[:, rows], self.mask[rows]


# ----------------------------------------------------------------------------- logits processors (HF's)

def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def process(scores, sequences, cur_len, s: GenerationSettings):
    """HF's default processors, in HF's order: min_length, no_repeat_ngram (scores (R, V), sequences (R, cur_len))."""
    if s.min_length and s.eos_token_id is not None and cur_len < s.min_length:
        scores[:, s.eos_token_id] = -np.inf
    n = s.no_repeat_ngram_size
    if n and cur_len + 1 >= n:
        for r in range(scores.shape[0]):
            seq = sequences[r, :cur_len].tolist()
            prefix = tuple(seq[cur_len - n + 1:]) if n > 1 else ()
            banned = [seq[i + n - 1] for i in range(cur_len - n + 1) if tuple(seq[i:i + n - 1]) == prefix]
            scores[r, banned] = -np.inf
    return scores


def _warp(scores, s: GenerationSettings):
    """Sampling warpers in HF's order: temperature, top-k, top-p (min_tokens_to_keep 1)."""
    scores = scores / s.temperature
    V = scores.shape[-1]
    if s.top_k and s.top_k < V:
        kth = np.sort(scores, axis=-1)[:, -s.top_k][:, None]
        scores = np.where(scores < kth, -np.inf, scores)
    if s.top_p < 1.0:
        order = np.argsort(scores, axis=-1, kind="stable")  # ascending, as HF
        sorted_scores = np.take_along_axis(scores, order, axis=-1)
        probs = np.exp(_log_softmax(sorted_scores))
        remove = np.cumsum(probs, axis=-1) <= 1 - s.top_p
        remove[:, -1] = False
        mask = np.zeros_like(remove)
        np.put_along_axis(mask, order, remove, axis=-1)
        scores = np.where(mask, -np.inf, scores)
    return scores


# ----------------------------------------------------------------------------- the loops

def greedy_or_sample(step, prompt, s: GenerationSettings, streamer=None) -> np.ndarray:
    """(R, P) prompt ids -> (R, <= total length) ids; finished rows are padded with pad_token_id."""
    R, P = prompt.shape
    total = s.total_length(P)
    seqs = np.full((R, total), s.pad_token_id if s.pad_token_id is not None else 0, np.int64)
    seqs[:, :P] = prompt
    unfinished = np.ones(R, bool)
    rng = np.random.default_rng(s.seed) if s.do_sample else None
    cur, feed = P, prompt
    while cur < total:
        positions = np.broadcast_to(np.arange(cur - feed.shape[1], cur, dtype=np.int64), feed.shape)
        logits = step(feed, positions)[:, -1].astype(np.float32)
        scores = process(logits, seqs, cur, s)
        if s.do_sample:
            probs = np.exp(_log_softmax(_warp(scores.astype(np.float64), s)))
            nxt = np.array([rng.choice(probs.shape[1], p=p / p.sum()) for p in probs], np.int64)
        else:
            nxt = scores.argmax(axis=-1)
        if s.pad_token_id is not None:
            nxt = np.where(unfinished, nxt, s.pad_token_id)
        seqs[:, cur] = nxt
        cur += 1
        if streamer is not None:
            streamer(nxt.copy())
        if s.eos_token_id is not None:
            unfinished &= nxt != s.eos_token_id
        if not unfinished.any():
            break
        feed = nxt[:, None]
    return seqs[:, :cur]


def beam_search(step, reorder, prompt, s: GenerationSettings) -> np.ndarray:
    """HF's vectorized beam search (transformers 5 `_beam_search`), one returned sequence per input.
    prompt: (B * num_beams, P) ids, beams of one input adjacent."""
    nb = s.num_beams
    BR, P = prompt.shape
    B = BR // nb
    total = s.total_length(P)
    keep = max(2, 1 + (s.eos_token_id is not None)) * nb
    top_mask = np.arange(keep) < nb
    # HF's `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`: a pad id of 0 is falsy
    # there, so such beams are filled with eos; copied so the ids match
    fill = (s.pad_token_id or s.eos_token_id) if s.eos_token_id is not None else -1
    running = np.full((B, nb, total), fill, np.int64)
    running[:, :, :P] = prompt.reshape(B, nb, P)
    sequences = running.copy()
    running_scores = np.zeros((B, nb), np.float32)
    running_scores[:, 1:] = NEG
    scores = np.full((B, nb), NEG, np.float32)
    finished = np.zeros((B, nb), bool)
    open_ = np.ones((B, 1), bool)  # HF's is_early_stop_heuristic_unsatisfied
    generated = np.zeros((B, nb), np.int64)  # tokens generated per kept sequence (for the output length)
    running_gen = np.zeros((B, nb), np.int64)
    cur, feed = P, prompt
    batch_rows = np.arange(B)[:, None]
    while True:
        positions = np.broadcast_to(np.arange(cur - feed.shape[1], cur, dtype=np.int64), feed.shape)
        logits = step(feed, positions)[:, -1].astype(np.float32)
        logp = process(_log_softmax(logits), running.reshape(BR, total), cur, s)
        V = logp.shape[-1]
        acc = (logp.reshape(B, nb, V) + running_scores[:, :, None]).reshape(B, nb * V)
        idx = np.argsort(-acc, axis=1, kind="stable")[:, :keep]  # torch.topk, sorted
        top_scores = np.take_along_axis(acc, idx, axis=1)
        src_beam, token = idx // V, idx % V
        cand = running[batch_rows, src_beam].copy()  # (B, keep, total)
        cand[:, :, cur] = token
        cand_gen = running_gen[batch_rows, src_beam] + 1
        hits = cur + 1 >= total
        done = np.full((B, keep), hits) | ((token == s.eos_token_id) if s.eos_token_id is not None else False)
        # the best unfinished continuations keep running
        live = top_scores + done.astype(np.float32) * NEG
        nxt = np.argsort(-live, axis=1, kind="stable")[:, :nb]
        running = cand[batch_rows, nxt]
        running_scores = np.take_along_axis(live, nxt, axis=1)
        running_gen = cand_gen[batch_rows, nxt]
        beam_rows = (np.take_along_axis(src_beam, nxt, axis=1) + np.arange(B)[:, None] * nb).reshape(-1)
        # finished hypotheses enter the kept set when they beat it
        just = done & top_mask[None, :]
        fin = top_scores / ((cur + 1 - P) ** s.length_penalty)
        full = finished.all(axis=1, keepdims=True) & (s.early_stopping is True)
        fin = fin + full * NEG + (~open_) * NEG + (~just) * NEG
        merged_scores = np.concatenate([scores, fin.astype(np.float32)], axis=1)
        pick = np.argsort(-merged_scores, axis=1, kind="stable")[:, :nb]
        sequences = np.concatenate([sequences, cand], axis=1)[batch_rows, pick]
        scores = np.take_along_axis(merged_scores, pick, axis=1)
        finished = np.take_along_axis(np.concatenate([finished, just], axis=1), pick, axis=1)
        generated = np.take_along_axis(np.concatenate([generated, cand_gen], axis=1), pick, axis=1)
        reorder(beam_rows)
        cur += 1
        length = (total - P) if (s.early_stopping == "never" and s.length_penalty > 0) else (cur - P)
        best_running = running_scores[:, :1] / (length ** s.length_penalty)
        worst = np.where(finished, scores.min(axis=1, keepdims=True), NEG)
        open_ = open_ & (best_running > worst).any(axis=1, keepdims=True)
        stop = (not open_.any()) or (finished.all() and s.early_stopping is True) or done.all()
        if stop:
            break
        feed = running.reshape(BR, total)[:, cur - 1:cur]
    out = sequences[:, 0]
    return out[:, :P + int(generated[:, 0].max())]
