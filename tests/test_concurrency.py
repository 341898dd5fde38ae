"""Concurrency: one loaded model called from many threads gives exactly the serial answers.

8 threads x 200 calls each on one pipeline, with mixed shapes (batch, text length, region count,
padding), on every CPU backend (ONNX Runtime fp32 / fp16 / int8 and the torch reference); every
result must be bitwise identical (np.array_equal) to the serial call with the same inputs, with no
error and no hang. Bitwise equality holds on these backends (measured: ORT and torch CPU kernels do
not depend on how many other calls are in flight), so that is what is asserted.

Also: the lazy `model.processor` property hit by 8 threads at once yields one object, and one
processor (whose tokenizer's padding/truncation state is set per call) encodes concurrently with
different settings exactly as it does serially.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import vlexport
from vlexport import families

THREADS, CALLS = 8, 200
BACKENDS = [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8"), ("torch", "fp32")]
TINY = next(tid for fam in families.all_families() if fam.name == "visual_bert" for tid in fam.tiny)


@pytest.fixture(scope="module")
def artifact(tiny_artifacts):
    return tiny_artifacts[TINY]  # fp32 + fp16 + int8, the session's shared build


QUESTIONS = ["what color is the cat?", "how many dogs are there", "is it red", "a", "",
             "what is the person holding in the left hand near the table?"]


def _feed_sets(proc, dim: int) -> list[dict]:
    """16 input sets of different shapes: batch 1-5, text 3-32 tokens, 1-12 regions, padded text
    (longest or max_length) and padded regions (lists of different lengths -> mask zeros)."""
    rng = np.random.default_rng(0)
    sets = []
    for k in range(16):
        batch = [1, 2, 3, 5][k % 4]
        texts = [QUESTIONS[(k + j) % len(QUESTIONS)] for j in range(batch)]
        regions = [int(rng.integers(1, 13)) for _ in range(batch)]
        visual = [rng.standard_normal((v, dim)).astype(np.float32) for v in regions]
        kw = dict(padding="max_length", max_length=[16, 32][k % 2], truncation=True) if k % 3 == 0 else {}
        enc = proc(texts, visual_embeds=visual, **kw)
        sets.append(dict(enc))
    assert len({(f["input_ids"].shape, f["visual_embeds"].shape) for f in sets}) >= 8
    return sets


def _hammer(fn, n_items):
    """Run fn(k) from THREADS threads, CALLS each, items interleaved differently per thread;
    -> ([(thread, call, k, result)], errors). Fails on a hang."""
    results, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def work(t):
        barrier.wait()
        local = []
        for i in range(CALLS):
            k = (t * 5 + i * (t + 1)) % n_items
            try:
                local.append((t, i, k, fn(k)))
            except BaseException as exc:  # noqa: BLE001 - every failure is reported, none may happen
                with lock:
                    errors.append(f"thread {t} call {i} item {k}: {type(exc).__name__}: {exc}")
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "threads hung"
    return results, errors


@pytest.mark.parametrize("backend,precision", BACKENDS, ids=["ort-fp32", "ort-fp16", "ort-int8", "torch"])
def test_threads_give_the_serial_answers_bitwise(artifact, backend, precision):
    model = vlexport.load(artifact, backend=backend, precision=precision)
    dim = next(s for s in model.artifact.inputs(model.graph) if s.name == "visual_embeds").dims[-1]
    feeds = _feed_sets(model.processor, dim)
    serial = [{k: np.asarray(v) for k, v in model(**f).items()} for f in feeds]
    for f, ref in zip(feeds, serial):  # serial repeats are bitwise stable too
        again = model(**f)
        assert all(np.array_equal(again[k], ref[k]) for k in ref)
        assert all(np.isfinite(v).all() for v in ref.values())

    results, errors = _hammer(lambda k: {n: np.asarray(v) for n, v in model(**feeds[k]).items()}, len(feeds))
    assert not errors, errors[:5]
    assert len(results) == THREADS * CALLS
    bad = [(t, i, k) for t, i, k, out in results
           if set(out) != set(serial[k]) or not all(np.array_equal(out[n], serial[k][n]) for n in out)]
    assert not bad, f"{len(bad)} of {len(results)} threaded results differ from the serial ones, e.g. {bad[:5]}"
    model.close()


def test_lazy_processor_is_created_once_under_contention(artifact):
    for _ in range(5):  # fresh pipelines: the property is first hit by 8 threads at once
        model = vlexport.load(artifact, backend="onnxruntime")
        barrier = threading.Barrier(THREADS)
        got, errors = [], []

        def grab():
            barrier.wait()
            try:
                got.append(model.processor)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=grab, daemon=True) for _ in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert not errors and len(got) == THREADS
        assert all(p is got[0] for p in got), f"{len({id(p) for p in got})} processor objects were made"
        assert model.processor is got[0]
        model.close()


def test_one_processor_encodes_concurrently_as_serially(artifact):
    """The tokenizer's padding/truncation state is per call (set under the processor's lock)."""
    proc = vlexport.load(artifact, backend="onnxruntime").processor
    cases = [(QUESTIONS[k % 6], QUESTIONS[(k + 2) % 6] if k % 2 else None,
              [dict(), dict(padding="max_length", max_length=24, truncation=True),
               dict(padding=True, truncation=True, max_length=5), dict(pad_to_multiple_of=8)][k % 4])
             for k in range(12)]

    def encode(k):
        text, pair, kw = cases[k]
        enc = proc([text, "a cat"], text_pair=[pair, "dog"] if pair else None, **kw)
        return {n: np.asarray(v) for n, v in enc.items()}

    serial = [encode(k) for k in range(len(cases))]
    results, errors = _hammer(encode, len(cases))
    assert not errors, errors[:5]
    bad = [(t, i, k) for t, i, k, out in results if not all(np.array_equal(out[n], serial[k][n]) for n in serial[k])]
    assert not bad, f"{len(bad)} concurrent encodings differ from the serial ones, e.g. {bad[:5]}"
