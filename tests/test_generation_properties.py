"""Property-based tests (hypothesis) of the generation loops (vlexport.runtime.generation) on a small
deterministic language model written here (next-token logits from a fixed table indexed by the last
token and the position, KV cache reordering checked): any settings either give well-formed ids
(the prompt first, tokens in the vocabulary, at most the total length, pad only after eos) or raise an
InputError naming the setting — never another exception."""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vlexport.errors import InputError  # noqa: E402
from vlexport.runtime.generation import GenerationSettings, LayerKVCache, beam_search, greedy_or_sample  # noqa: E402

V, START, EOS, PAD = 13, 1, 2, 0
TABLE = np.random.default_rng(0).normal(0, 2, size=(V, 64, V)).astype(np.float32)  # (last token, position, next)


class ToyModel:
    """step() reads the last token of every row from its own history, which reorder() keeps in step with the
    beams (the history plays the KV cache's part: a wrong reorder changes the answers)."""

    def __init__(self, rows):
        self.cache = LayerKVCache(1, rows, 1, 64, 1)
        self.last = np.full(rows, START)

    def step(self, input_ids, position_ids):
        self.last = input_ids[:, -1]
        new = [np.zeros((len(input_ids), 1, input_ids.shape[1], 1), np.float32)]
        self.cache.write(new, new, np.ones(input_ids.shape, np.int64))
        return TABLE[input_ids, np.minimum(position_ids, 63)]  # (R, T, V)

    def reorder(self, rows):
        self.cache.reorder(rows)
        self.last = self.last[rows]


SETTINGS = {
    "max_new_tokens": st.one_of(st.none(), st.integers(-2, 30), st.just(2.5)),
    "num_beams": st.one_of(st.integers(-1, 5), st.just("2")),
    "do_sample": st.booleans(),
    "temperature": st.one_of(st.floats(-1, 3), st.just(0.0), st.just(float("nan")), st.just(float("inf"))),
    "top_k": st.integers(-1, 20),
    "top_p": st.one_of(st.floats(-0.5, 1.5), st.just(1.0)),
    "no_repeat_ngram_size": st.integers(-1, 4),
    "min_length": st.integers(-1, 10),
    "length_penalty": st.floats(-2, 2),
    "early_stopping": st.sampled_from([True, False, "never", "sometimes"]),
    "seed": st.integers(0, 100),
}


@given(data=st.data())
def test_any_settings_give_well_formed_ids_or_a_named_error(data):
    kw = {k: data.draw(v, label=k) for k, v in SETTINGS.items() if data.draw(st.booleans(), label=f"use {k}")}
    note(str(kw))
    try:
        s = GenerationSettings.resolve({"eos_token_id": EOS, "pad_token_id": PAD, "decoder_start_token_id": START,
                                        "max_length": 12}, kw)
    except InputError as exc:
        assert any(k in str(exc) for k in kw) or "beam sampling" in str(exc), exc
        return
    B = data.draw(st.integers(1, 4), label="batch")
    rows = B * s.num_beams
    model = ToyModel(rows)
    prompt = np.full((rows, 1), START, np.int64)
    if s.num_beams > 1:
        ids = beam_search(model.step, model.reorder, prompt, s)
    else:
        ids = greedy_or_sample(model.step, prompt, s)
    assert ids.shape[0] == B and 1 < ids.shape[1] <= s.total_length(1)
    assert (ids[:, 0] == START).all() and ((ids >= 0) & (ids < V)).all()
    for row in ids:
        ended = np.flatnonzero(row[1:] == EOS)
        if ended.size and s.num_beams == 1:  # greedy/sampling pad after eos
            assert (row[2 + ended[0]:] == PAD).all()
    if s.num_beams == 1 and not s.do_sample:  # greedy: every token is the argmax the table gives
        for row in ids:
            for t in range(1, len(row)):
                if row[t - 1] == EOS or row[t - 1] == PAD and t > 1:
                    break
                logits = TABLE[row[t - 1], t - 1].copy()
                if s.min_length and t < s.min_length:
                    logits[EOS] = -np.inf
                if s.no_repeat_ngram_size:
                    break  # the n-gram ban is checked against transformers in the generate tests
                assert row[t] == int(np.argmax(logits)), (row, t)
