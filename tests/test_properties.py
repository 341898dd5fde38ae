"""Property-based tests (hypothesis) of the runtime and processor entry points, for every family.

Entry points: `model(**feeds)` on ONNX Runtime fp32, fp16, int8 and the torch backend, for every
built-in tiny model of every registered family (`families.all_families()`, each family's `tiny`
ids: a new family is picked up without editing this file; each graph of a multi-graph artifact
through the pipeline's generic `prepare` + `run_graph`), and `model.processor(...)`
(VisualBERT-specific strategies; other families' processors are skipped with a note until they
get theirs).

The contract every drawn case is held to: the call either gives the reference answer - the same
numbers as a clean call with contiguous arrays of the graph's own dtypes (int64/float32) on the
same backend, and for fp32 ONNX Runtime the torch backend within the graph's tolerance - or
raises a documented vlexport error (a `VlexportError` subclass) whose message names the input at
fault. No other exception type, no crash, no NaN/inf in a returned output. A valid input must not
be refused, and an invalid one must not be answered.

Profiles (tests/conftest.py): "ci" by default (a few dozen derandomized examples per test), and
the full run of >= 1000 examples per entry point:

    VLEXPORT_HYPOTHESIS=full pytest tests/test_properties.py -q -p no:cacheprovider --hypothesis-show-statistics

The resource-bound tests at the end (max_chars, max_batch_tokens) are ordinary tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import vlexport  # noqa: E402
from vlexport import families  # noqa: E402
from vlexport.errors import InputError, NumericalError, VlexportError  # noqa: E402
from vlexport.specs import dim_terms, resolve_dim  # noqa: E402

TINY_IDS = [tid for fam in families.all_families() for tid in fam.tiny]


def _graphs(tid):
    fam, cfg, _ = families.embedded(tid)
    arch = (cfg.get("architectures") or [next(iter(fam.architectures))])[0]
    return [g.name for g in fam.describe(arch, fam.config_from_dict(cfg)).graphs]


# every graph of every tiny model: a multi-graph artifact's graphs are driven one by one through the
# runtime's generic entry (pipeline.prepare + run_graph), one-graph ones through model(**feeds)
TINY_GRAPHS = [(tid, g) for tid in TINY_IDS for g in _graphs(tid)]
BACKENDS = [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8"), ("torch", "fp32")]
BACKEND_IDS = ["ort-fp32", "ort-fp16", "ort-int8", "torch"]
_NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


# ----------------------------------------------------------------------------- fixtures

class _Built(SimpleNamespace):
    def __repr__(self):  # hypothesis prints the arguments of a failing case: keep it short
        return f"built({self.id!r})"


_ARTIFACTS: dict = {}


@pytest.fixture(scope="module", params=TINY_GRAPHS, ids=lambda p: p[0] if len(_graphs(p[0])) == 1 else f"{p[0]}:{p[1]}")
def built(request, tiny_artifacts):
    """One artifact per tiny model (fp32 + fp16 + int8 graphs, built once per session), and its
    pipelines on every CPU backend, loaded on first use; `call(model, feeds)` runs the graph under test."""
    tid, graph = request.param
    if tid not in _ARTIFACTS:  # the session's shared --fp16 --int8 build (conftest.py)
        _ARTIFACTS[tid] = (tiny_artifacts[tid], {})
    out, models = _ARTIFACTS[tid]

    def model(backend="onnxruntime", precision="fp32"):
        key = (backend, precision)
        if key not in models:
            models[key] = vlexport.load(out, backend=backend, precision=precision)
        return models[key]

    first = model()
    if len(first.artifact.graph_names) == 1:
        def call(m, feeds):
            return m(**feeds)
    else:
        def call(m, feeds):
            return dict(m.run_graph(graph, m.prepare(feeds, graph)))
    return _Built(id=tid, path=out, model=model, family=families.get(first.artifact.family), call=call,
                           graph=graph, specs=first.artifact.inputs(graph), outputs=first.artifact.outputs(graph),
                           axes=first.artifact.axes)


# ----------------------------------------------------------------------------- generic feed strategies

def _axes_of(specs) -> list[str]:
    seen = []
    for s in specs:
        for d in s.dims:
            for t in dim_terms(d):
                if isinstance(t, str) and t not in seen:
                    seen.append(t)
    return seen


def _uses(spec, axis) -> bool:
    return any(axis in dim_terms(d) for d in spec.dims)


def _shape(spec, sizes) -> tuple:
    return tuple(resolve_dim(d, sizes) for d in spec.dims)


def _high(spec, sizes):
    if spec.high is None or isinstance(spec.high, int):
        return spec.high
    return resolve_dim(spec.high, sizes)


def _clean(spec, sizes, rng, scale) -> np.ndarray:
    """A valid value of the input in its own dtype (int64 ids in [low, high), float32 features)."""
    shape = _shape(spec, sizes)
    if spec.dtype.startswith("float"):
        return (rng.standard_normal(shape) * scale).astype(_NP[spec.dtype])
    if spec.dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    low = spec.low if spec.low is not None else 0
    high = _high(spec, sizes)
    high = high if high is not None else low + 1000
    return rng.integers(low, max(high, low + 1), shape).astype(_NP[spec.dtype])


def _valid_sizes(data, axes, names) -> dict:
    sizes = {}
    for name in names:
        r = axes[name]
        values = list(range(r.min, r.max + 1, r.step))
        # mostly small (fast), but the range's extremes and opt come up too
        sizes[name] = data.draw(st.one_of(st.sampled_from(values[:6]), st.sampled_from(sorted({r.min, r.opt, r.max}))),
                                label=f"size {name}")
    return sizes


def _bad_size(data, r) -> int:
    options = sorted({0, r.min - 1, r.max + 1, r.max + r.step, 2 * r.max + 1} - {-1}
                     | ({r.min + 1} if r.step > 1 and r.min + 1 < r.max else set()))
    return data.draw(st.sampled_from([n for n in options if n >= 0 and not r.contains(n)]), label="bad size")


def _present(data, name, values: np.ndarray):
    """values -> (what the caller passes, the clean array it must act like). Random dtype (int32,
    int64, bool, float16, float64...), layout (strided, transposed, negative strides, Fortran),
    read-only flag and container (numpy, list, torch tensor)."""
    kind = values.dtype.kind
    dtypes = ["same"]
    if kind in "iu":
        dtypes += ["int32", "int64"] if values.size == 0 or (np.abs(values) < 2 ** 31).all() else ["int64"]
        if values.size == 0 or np.isin(values, (0, 1)).all():
            dtypes.append("bool")
        if values.size == 0 or ((values >= 0) & (values < 256)).all():
            dtypes.append("uint8")
    elif kind == "f":
        dtypes += ["float16", "float64", "longdouble"]
    elif kind == "b":
        dtypes += ["int32", "int64"]
    dt = data.draw(st.sampled_from(dtypes), label=f"{name} dtype")
    v = values if dt == "same" else values.astype(dt)
    reference = v  # the numbers the model must see (float16 rounding included)
    layout = data.draw(st.sampled_from(["contiguous", "strided", "transposed", "negative", "fortran"]),
                       label=f"{name} layout")
    if layout == "strided" and v.ndim:
        ax = data.draw(st.integers(0, v.ndim - 1), label=f"{name} stride axis")
        step = data.draw(st.integers(2, 3), label=f"{name} step")
        big_shape = list(v.shape)
        big_shape[ax] = max(1, v.shape[ax] * step)
        big = np.zeros(big_shape, v.dtype)
        sl = [slice(None)] * v.ndim
        sl[ax] = slice(0, v.shape[ax] * step, step)
        big[tuple(sl)] = v
        v = big[tuple(sl)]
    elif layout == "transposed" and v.ndim >= 2:
        v = np.ascontiguousarray(np.swapaxes(v, 0, -1)).swapaxes(0, -1)
    elif layout == "negative" and v.ndim:
        ax = data.draw(st.integers(0, v.ndim - 1), label=f"{name} flip axis")
        v = np.flip(np.ascontiguousarray(np.flip(v, ax)), ax)
    elif layout == "fortran":
        v = np.asfortranarray(v)
    assert np.array_equal(v, reference, equal_nan=True)
    container = data.draw(st.sampled_from(["numpy", "numpy", "readonly", "list", "torch"]), label=f"{name} container")
    if container == "readonly":
        v = v.view()
        v.flags.writeable = False
    elif container == "list":
        if v.dtype.kind == "f" and v.dtype.itemsize > 8:
            v = v.astype(np.float64)  # tolist() of longdouble gives longdouble scalars; lists hold floats
        v = v.tolist()
    elif container == "torch":
        import torch

        if v.dtype.itemsize > 8:  # torch has no longdouble
            v = v.astype(np.float64)
        base = torch.from_numpy(np.ascontiguousarray(v))
        # a non-contiguous tensor view now and then (torch has no negative strides)
        if base.ndim >= 2 and data.draw(st.booleans(), label=f"{name} torch view"):
            base = base.transpose(0, -1).contiguous().transpose(0, -1)
        v = base
    event(f"container: {container}")
    event(f"dtype: {dt if dt != 'same' else values.dtype}")
    event(f"layout: {layout}")
    return v, reference


def _outcome(fn):
    """('ok', outputs) | ('error', exception); anything not a VlexportError propagates (a failure)."""
    try:
        out = fn()
    except VlexportError as exc:
        return "error", exc
    return "ok", {k: np.asarray(v) for k, v in out.items()}


def _finite(outputs, what):
    for k, v in outputs.items():
        assert np.isfinite(v).all(), f"{what}: output '{k}' holds NaN/inf"


# about 40% of the cases are valid (answered, equal to the clean call), the rest break one thing
MUTATIONS = ["none"] * 8 + ["nan", "f32_overflow", "id_low", "id_high", "size", "inconsistent", "dtype",
             "rank", "drop", "unknown", "container"]


def _draw_case(data, b):
    """(feeds the caller passes, clean reference feeds or None, names the error may name or None)."""
    specs, axes = b.specs, b.axes
    names = _axes_of(specs)
    sizes = _valid_sizes(data, axes, names)
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    scale = data.draw(st.sampled_from([1e-3, 1.0, 10.0, 1e3]), label="feature scale")
    mutation = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    event(f"mutation: {mutation}")
    floats = [s for s in specs if s.dtype.startswith("float")]
    ints = [s for s in specs if not s.dtype.startswith("float")]

    bad_sizes = dict(sizes)
    culprits = None
    if mutation == "size":
        axis = data.draw(st.sampled_from(names), label="axis out of range")
        bad_sizes[axis] = _bad_size(data, axes[axis])
        event(f"size: {axis}={'0' if bad_sizes[axis] == 0 else 'out of range'}")
        culprits = [s.name for s in specs if _uses(s, axis)]
    clean = {}
    for s in specs:
        shape_sizes = bad_sizes if mutation == "size" else sizes
        # values stay within the *valid* sizes' ranges, so the size is the only thing wrong
        arr = _clean(s, shape_sizes, rng, scale)
        if s.high is not None and not isinstance(s.high, int) and arr.size:
            arr = np.minimum(arr, max(_high(s, sizes) - 1, s.low or 0)).astype(arr.dtype)
        clean[s.name] = arr
    feeds, reference = {}, {}
    for s in specs:
        feeds[s.name], seen = _present(data, s.name, clean[s.name])
        reference[s.name] = np.ascontiguousarray(seen, dtype=_NP[s.dtype])  # the clean int64/float32 call
    if mutation == "size":
        return feeds, None, culprits

    def target(pool):
        return data.draw(st.sampled_from(pool), label="mutated input")

    if mutation == "nan" and floats:
        s = target(floats)
        arr = np.array(clean[s.name], dtype=data.draw(st.sampled_from(["float32", "float16", "float64"]), label="nan dtype"))
        if arr.size == 0:
            return feeds, reference, None
        idx = tuple(int(rng.integers(0, n)) for n in arr.shape)
        arr[idx] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="non-finite")
        feeds[s.name], _ = _present(data, s.name, arr)
        return feeds, None, [s.name]
    if mutation == "f32_overflow" and floats:
        s = target(floats)
        arr = clean[s.name].astype(np.float64)
        if arr.size == 0:
            return feeds, reference, None
        arr.flat[int(rng.integers(0, arr.size))] = data.draw(st.sampled_from([1e39, -1e39, 1e300]), label="huge")
        feeds[s.name] = arr
        return feeds, None, [s.name]
    if mutation in ("id_low", "id_high"):
        pool = [s for s in ints if (s.low if mutation == "id_low" else s.high) is not None]
        if not pool:
            return feeds, reference, None
        s = target(pool)
        arr = clean[s.name].astype(np.int64)
        if arr.size == 0:
            return feeds, reference, None
        if mutation == "id_low":
            bad = s.low - data.draw(st.sampled_from([1, 2, 1000, 2 ** 40]), label="below low")
        else:
            bad = _high(s, sizes) + data.draw(st.sampled_from([0, 1, 1000, 2 ** 40]), label="above high")
        arr.flat[int(rng.integers(0, arr.size))] = bad
        as32 = abs(bad) < 2 ** 31 and data.draw(st.booleans(), label="as int32")
        feeds[s.name], _ = _present(data, s.name, arr.astype(np.int32) if as32 else arr)
        return feeds, None, [s.name]
    if mutation == "inconsistent":
        shared = [a for a in names if sum(_uses(s, a) for s in specs) >= 2]
        if not shared:
            return feeds, reference, None
        axis = data.draw(st.sampled_from(shared), label="inconsistent axis")
        users = [s for s in specs if _uses(s, axis)]
        s = data.draw(st.sampled_from(users), label="inconsistent input")
        other = dict(sizes)
        r = axes[axis]
        alternatives = [n for n in range(r.min, min(r.max, r.min + 8 * r.step) + 1, r.step) if n != sizes[axis]]
        if not alternatives:
            return feeds, reference, None
        other[axis] = data.draw(st.sampled_from(alternatives), label="other size")
        arr = _clean(s, other, rng, scale)
        if s.high is not None and arr.size:
            arr = np.minimum(arr, max(_high(s, sizes) - 1, s.low or 0)).astype(arr.dtype)
        feeds[s.name] = arr
        return feeds, None, [u.name for u in users]
    if mutation == "dtype":
        s = target(specs)
        if s.dtype.startswith("float"):
            choices = ["complex64", "int64", "bool", "U", "object", "datetime64[s]"]
        else:
            choices = ["float32", "float64", "float16", "complex128", "U", "object"]
        dt = data.draw(st.sampled_from(choices), label="wrong dtype")
        arr = clean[s.name]
        if dt == "U":
            wrong = arr.astype(str)
        elif dt == "datetime64[s]":
            wrong = arr.astype(np.int64).astype(dt)
        else:
            wrong = arr.astype(dt)
        feeds[s.name] = wrong
        if s.dtype.startswith("float") and dt in ("int64",) and s.low is not None:
            return feeds, None, None  # a float input with a value range takes ints; not wrong here
        return feeds, None, [s.name]
    if mutation == "rank":
        s = target(specs)
        arr = clean[s.name]
        feeds[s.name] = arr[..., None] if data.draw(st.booleans(), label="more dims") or arr.ndim < 2 else arr[0]
        return feeds, None, [s.name]
    if mutation == "drop":
        s = target(specs)
        del feeds[s.name]
        if s.required and s.default is None:
            return feeds, None, [s.name]
        if s.default is None:  # optional without a default: the model runs without it
            del reference[s.name]
        else:
            reference[s.name] = np.full(reference[s.name].shape, s.default, _NP[s.dtype])
        event("drop: defaulted input")
        return feeds, reference, None
    if mutation == "unknown":
        name = data.draw(st.sampled_from(["pixel_values", "labels", "input_idz", "past_key_values"]), label="unknown")
        if name in feeds:
            return feeds, reference, None
        feeds[name] = np.zeros((1, 2), np.int64)
        return feeds, None, [name]
    if mutation == "container":
        s = target(specs)
        wrong = data.draw(st.sampled_from(["str", "dict", "set", "ragged", "none_in_list", "bytes", "object"]),
                          label="wrong container")
        feeds[s.name] = {"str": "0 1 2", "dict": {"a": 1}, "set": {1, 2}, "bytes": b"\x00\x01",
                         "ragged": [[1, 2, 3], [1]], "none_in_list": [[None, 1]] * 2, "object": object()}[wrong]
        return feeds, None, [s.name]
    return feeds, reference, None


def _names_one_of(exc, names) -> bool:
    msg = str(exc)
    return any(f"'{n}'" in msg for n in names)


def _run_case(b, backend, precision, data):
    model = b.model(backend, precision)
    feeds, reference, culprits = _draw_case(data, b)
    note(f"feeds: { {k: (type(v).__name__, getattr(v, 'dtype', None), getattr(v, 'shape', None)) for k, v in feeds.items()} }")
    kind, got = _outcome(lambda: b.call(model, feeds))
    event(f"outcome: {kind if kind == 'ok' else type(got).__name__}")
    if reference is None:  # an invalid input: a vlexport error naming the input at fault
        assert kind == "error", f"an invalid input was answered (culprits {culprits})"
        if culprits:
            assert _names_one_of(got, culprits), f"the error does not name any of {culprits}: {got}"
        assert isinstance(got, InputError), f"{type(got).__name__} for an invalid input: {got}"
        return
    ref_kind, ref = _outcome(lambda: b.call(model, reference))
    if ref_kind == "error":  # e.g. an fp16 overflow: the same documented error for both
        assert kind == "error" and isinstance(ref, NumericalError) and type(got) is type(ref), (ref, got)
        return
    assert kind == "ok", f"a valid input was refused: {got}"
    _finite(got, f"{backend} {precision}")
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape, k
        assert np.array_equal(got[k], ref[k]), f"output '{k}' differs from the clean call: max diff " \
                                                f"{np.abs(got[k] - ref[k]).max()}"
    if backend == "onnxruntime" and precision == "fp32":
        t_kind, theirs = _outcome(lambda: b.call(b.model("torch"), reference))
        assert t_kind == "ok", theirs
        tol = 1e-4
        for k in ref:
            # float32 sums carry errors on the scale of their terms, not of the result: an element near 0 among
            # logits of +-600 (arbitrary inputs to a detector head) differs by ~1e-4 between two correct kernels
            scale = max(1.0, float(np.abs(np.asarray(ref[k], np.float64)).max(initial=0)))
            np.testing.assert_allclose(ref[k], theirs[k], rtol=tol, atol=tol * scale, err_msg=f"fp32 ORT vs torch, '{k}'")


@pytest.mark.parametrize("backend,precision", BACKENDS, ids=BACKEND_IDS)
@given(data=st.data())
def test_runtime_call_gives_the_reference_answer_or_a_named_error(built, backend, precision, data):
    if precision == "int8":
        refused = families.describe_artifact(vlexport.artifact.Artifact(built.path)).graph(built.graph).int8_refused
        if refused:
            pytest.skip(f"'{built.graph}' builds no int8 graph: {refused}")
    _run_case(built, backend, precision, data)


# ----------------------------------------------------------------------------- the processor (VisualBERT)

def _visual_bert(built):
    if built.family.name != "visual_bert":
        pytest.skip(f"no processor strategies for the '{built.family.name}' family yet (add them here)")


@pytest.fixture(scope="module")
def hf_tokenizer(built):
    """transformers' BertTokenizerFast from the artifact's own tokenizer files: the reference."""
    _visual_bert(built)
    transformers = pytest.importorskip("transformers")
    return transformers.BertTokenizerFast.from_pretrained(str(built.path))


@pytest.fixture(scope="module")
def small_limit_processor(built):
    """A processor of its own (not the model's) with max_chars lowered, so the limit comes up cheaply."""
    _visual_bert(built)
    from vlexport.families.visual_bert.processor import VisualBertProcessor

    proc = VisualBertProcessor.from_pretrained(built.path)
    proc.max_chars = 300
    return proc


_SPECIALS = ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", "[cls]"]


def _text():
    words = st.sampled_from(["the", "cat", "what", "color", "is", "dog", "red", "?", ".", "Café", "naïve", "日本",
                             "😀", "don't", "state-of-the-art", "a\u0301", "\u200b", "\x00", "\t", "\n", "İ", "ß",
                             "한국어", "x" * 120] + _SPECIALS)
    return st.one_of(
        st.text(max_size=40),  # any unicode (no surrogates)
        st.text(st.characters(exclude_categories=()), max_size=20),  # lone surrogates included
        st.lists(words, max_size=30).map(" ".join),
        st.just(""),
        st.builds(lambda w, n: (w + " ") * n, words, st.integers(1, 200)),  # long: hundreds of tokens
        st.builds(lambda c, n: c * n, st.sampled_from(["a", "ab ", "日", "é"]), st.integers(250, 350)),  # near max_chars
    )


def _text_arg(batch, valid_only=False):
    """(value, kind) for text / text_pair: str, list, nested list (multiple choice) or a wrong type."""
    t = _text()
    good = [
        t.map(lambda s: (s, "str")),
        st.lists(t, min_size=batch, max_size=batch).map(lambda x: (x, "list")),
        st.lists(st.lists(t, min_size=2, max_size=2), min_size=batch, max_size=batch).map(lambda x: (x, "nested")),
    ]
    if valid_only:
        return st.one_of(*good)
    return st.one_of(
        *good,
        st.sampled_from([7, None, b"bytes", {"a": "b"}, [], [[]], ["a", 3], [["a"], ["b", "c"]], ("a", None),
                         np.array(["a", "b"])]).map(lambda x: (x, "wrong")),
    )


PADDING = [True, False, "longest", "max_length", "do_not_pad", "bogus"]
TRUNCATION = [None, True, False, "longest_first", "only_first", "only_second", "do_not_truncate", "bogus"]
MAX_LENGTH = [None, None, 1, 2, 3, 5, 8, 16, 64, 100, 0, -1, 10 ** 10, 2 ** 70, 5.0, True]
MULTIPLE = [None, None, 1, 3, 8, 0, -2, 10 ** 9, 2.0]
TENSORS = ["np", "np", None, "pt", "tf"]
ARGS = ("text", "text_pair", "padding", "truncation", "max_length", "pad_to_multiple_of", "return_tensors",
        "visual_embeds", "visual_attention_mask")


def _names_an_argument(exc) -> bool:
    return any(a in str(exc) for a in ARGS)


def _canonical(kw) -> bool:
    """Arguments transformers takes as they are (no bogus values), so its answer is the reference."""
    return (kw["padding"] != "bogus" and kw["truncation"] != "bogus" and kw["return_tensors"] in ("np", None)
            and (kw["max_length"] is None or (type(kw["max_length"]) is int and 1 <= kw["max_length"] <= 10 ** 6))
            and (kw["pad_to_multiple_of"] is None or (type(kw["pad_to_multiple_of"]) is int and kw["pad_to_multiple_of"] >= 1)))


def _hf_reference(hf, text, text_kind, pair, pair_kind, kw):
    """transformers' answer for our call. Multiple choice (a nested list) is ours, not HF's: it is
    flattened to B*C (text, pair) rows, as the processor documents, and reshaped back."""
    import warnings

    choices = len(text[0]) if text_kind == "nested" else len(pair[0]) if pair_kind == "nested" else 0

    def flat(x, k):
        if k == "nested":
            return [s for row in x for s in row]
        return [s for s in x for _ in range(choices)]

    a, b = (flat(text, text_kind), flat(pair, pair_kind) if pair is not None else None) if choices else (text, pair)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf(a, text_pair=b, **kw)
    if not choices:
        return out
    res = {}
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        v = out[key]
        if kw["return_tensors"] is None:
            res[key] = [v[i * choices:(i + 1) * choices] for i in range(len(v) // choices)]
        else:
            res[key] = np.asarray(v).reshape(-1, choices, np.asarray(v).shape[-1])
    return res


def _longest_chars(x):
    if isinstance(x, str):
        return len(x)
    if isinstance(x, (list, tuple)):
        return max((_longest_chars(t) for t in x), default=0)
    return 0


def _check_text_fields(enc, proc, kw):
    """Invariants of every encoding: int64 fields of one shape, ids in the vocab, right-padded 0/1
    masks, [PAD]/type 0 on padding, [CLS] first."""
    ids, tt, am = (enc[k] for k in ("input_ids", "token_type_ids", "attention_mask"))
    if kw["return_tensors"] is None:
        assert isinstance(ids, list) and isinstance(tt, list) and isinstance(am, list)
        return
    if kw["return_tensors"] == "pt":
        ids, tt, am = (x.numpy() for x in (ids, tt, am))
    for name, x in (("input_ids", ids), ("token_type_ids", tt), ("attention_mask", am)):
        assert x.dtype == np.int64, (name, x.dtype)
    assert ids.shape == tt.shape == am.shape
    assert ((ids >= 0) & (ids < len(proc))).all()
    assert np.isin(am, (0, 1)).all() and np.isin(tt, (0, 1)).all()
    flat = am.reshape(-1, am.shape[-1])
    assert (np.diff(flat, axis=-1) <= 0).all(), "attention_mask is not right-padded"
    assert (ids[am == 0] == proc.pad_token_id).all() and (tt[am == 0] == 0).all()
    assert (ids[..., 0] == proc.cls_token_id).all()


@given(data=st.data())
def test_processor_text_gives_transformers_answer_or_a_named_error(built, hf_tokenizer, small_limit_processor, data):
    proc = small_limit_processor
    batch = data.draw(st.integers(1, 3), label="batch")
    # half the cases draw only well-formed arguments, so many are answered and checked against HF
    valid_only = data.draw(st.booleans(), label="well-formed arguments only")
    text, text_kind = data.draw(_text_arg(batch, valid_only), label="text")
    pair, pair_kind = data.draw(st.one_of(st.just((None, "none")), _text_arg(batch, valid_only)), label="text_pair")
    if pair is None:
        pair_kind = "none"  # text_pair=None is no pair, not a wrong type

    def pick(values, ok):
        return data.draw(st.sampled_from([v for v in values if ok(v)] if valid_only else values))

    kw = dict(padding=pick(PADDING, lambda v: v != "bogus"), truncation=pick(TRUNCATION, lambda v: v != "bogus"),
              max_length=pick(MAX_LENGTH, lambda v: v is None or (type(v) is int and 1 <= v <= 100)),
              pad_to_multiple_of=pick(MULTIPLE, lambda v: v is None or (type(v) is int and 1 <= v <= 8)),
              return_tensors=pick(TENSORS, lambda v: v != "tf"))
    event(f"text {text_kind}, pair {pair_kind}")
    try:
        enc = proc(text=text, text_pair=pair, **kw)
    except VlexportError as exc:
        event(f"processor: {type(exc).__name__}")
        assert isinstance(exc, InputError) and _names_an_argument(exc), exc
        return
    event("processor: ok")
    assert text_kind != "wrong" and pair_kind != "wrong", "a wrong-typed text was encoded"
    assert max(_longest_chars(text), _longest_chars(pair)) <= proc.max_chars, "a text beyond max_chars was encoded"
    _check_text_fields(enc, proc, kw)
    if _canonical(kw):
        theirs = _hf_reference(hf_tokenizer, text, text_kind, pair, pair_kind, kw)
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            a, b = enc[key], theirs[key]
            if kw["return_tensors"] is None:
                assert a == b, f"{key} differs from transformers"
            else:
                assert np.array_equal(np.asarray(a), np.asarray(b)), f"{key} differs from transformers"
        event("processor: compared with transformers")


def _visual_value(data, n_texts, dim):
    """(visual_embeds argument, its kind) - arrays of odd shapes/dtypes/layouts, lists of arrays, lists.
    Half the cases are drawn well-formed (right batch and feature size, a numeric dtype, finite)."""
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="visual seed")
    rng = np.random.default_rng(seed)
    good = data.draw(st.booleans(), label="well-formed")
    forms = ["array", "array", "list", "nested_lists", "torch"] + ([] if good else ["scalar", "string"])
    form = data.draw(st.sampled_from(forms), label="visual form")
    dtypes = ["float32", "float16", "float64", "int64", "int32", "uint8", "bool"]
    if not good:
        dtypes += ["complex64", "object", "U4", "datetime64[s]", "timedelta64[s]"]
    dtype = data.draw(st.sampled_from(dtypes), label="visual dtype")

    def make(shape):
        x = np.asarray(rng.standard_normal(shape) * data.draw(st.sampled_from([1.0, 100.0]), label="scale"))
        if dtype.startswith(("U", "datetime", "timedelta", "object")):
            return x.astype(np.int64).astype(dtype)
        x = np.asarray(x.astype(dtype))
        if not good and x.dtype.kind == "f" and x.size and data.draw(st.integers(0, 4), label="poison?") == 0:
            x.flat[int(rng.integers(0, x.size))] = data.draw(st.sampled_from(
                [np.nan, np.inf, -np.inf] + ([1e39] if x.dtype == np.float64 else [])), label="poison")
        return x

    if form in ("array", "torch"):
        ndim = data.draw(st.sampled_from((([2] if n_texts == 1 else []) + [3]) if good else [0, 1, 2, 2, 3, 3, 3, 4, 5]),
                         label="ndim")
        shape = tuple(data.draw(st.sampled_from([0, 1, 2, 3, 5, dim, dim]), label="extent") for _ in range(ndim))
        if ndim == 3 and (good or data.draw(st.booleans(), label="right batch")):
            shape = (n_texts,) + shape[1:]
        if ndim >= 2 and (good or data.draw(st.booleans(), label="right dim")):
            shape = shape[:-1] + (dim,)
        x = make(shape)
        layout = data.draw(st.sampled_from(["c", "strided", "negative", "readonly"]), label="visual layout")
        if layout == "strided" and x.ndim:
            x = np.repeat(x, 2, axis=-1)[..., ::2]  # same values, non-contiguous
        elif layout == "negative" and x.ndim:
            x = np.flip(np.ascontiguousarray(np.flip(x, 0)), 0)
        elif layout == "readonly":
            x = x.view()
            x.flags.writeable = False
        if form == "torch" and x.dtype.kind in "fiub":
            import torch

            return torch.from_numpy(np.ascontiguousarray(x)), "torch"
        return x, "array"
    if form in ("list", "nested_lists"):
        n = n_texts if good else data.draw(st.sampled_from([n_texts, n_texts, 0, n_texts + 1]), label="list length")
        arrays = []
        for _ in range(n):
            v = data.draw(st.sampled_from([1, 3, 6] if good else [0, 1, 3, 6]), label="regions")
            d = dim if good or data.draw(st.integers(0, 5), label="odd dim?") else dim + 1
            a = make((v, d) if good or data.draw(st.integers(0, 5), label="odd ndim?") else (v,))
            arrays.append(a.tolist() if form == "nested_lists" and a.dtype.kind in "fiub" else a)
        return arrays, form
    if form == "scalar":
        return 3.5, "scalar"
    return "features", "string"


def _visual_valid(value, kind, n_texts) -> bool | None:
    """Whether the processor must accept these visual_embeds (None: not decided here)."""
    def ok_array(a):
        a = np.asarray(a) if not hasattr(a, "numpy") else a.numpy()
        if a.dtype == object or a.dtype.kind not in "fiub":
            return False
        if a.dtype.kind == "f" and a.size and (not np.isfinite(a).all() or np.abs(a.astype(np.float64)).max() > 3.4028234e38):
            return False
        return True

    if kind in ("scalar", "string"):
        return False
    if kind in ("array", "torch"):
        a = value.numpy() if kind == "torch" else value
        if not ok_array(a):
            return False
        return (a.ndim == 2 and n_texts == 1) or (a.ndim == 3 and a.shape[0] == n_texts)
    try:
        arrays = [np.asarray(a) for a in value]
    except ValueError:
        return False
    if len(arrays) != n_texts or any(a.ndim != 2 or not ok_array(a) for a in arrays):
        return False
    return len({a.shape[1] for a in arrays}) == 1


@given(data=st.data())
def test_processor_visual_embeds_pack_or_give_a_named_error(built, data):
    _visual_bert(built)
    model = built.model()
    proc = model.processor
    dim = next(s for s in built.specs if s.name == "visual_embeds").dims[-1]
    n = data.draw(st.integers(1, 3), label="texts")
    texts = ["what is on the table?", "a cat", ""][:n]
    value, kind = _visual_value(data, n, dim)
    mask = None
    if data.draw(st.integers(0, 3), label="mask?") == 0:
        shape = np.asarray(value.numpy() if kind == "torch" else value).shape[:-1] if kind in ("array", "torch") else None
        if shape is not None:
            fill = data.draw(st.sampled_from([0, 1, 0.5, 2, np.nan, True]), label="mask value")
            mask = np.ones(shape, dtype=float if isinstance(fill, float) else np.int64)
            if mask.size:
                mask.flat[0] = fill
    note(f"visual kind {kind}: {type(value).__name__} {getattr(value, 'dtype', '')} "
         f"{getattr(value, 'shape', len(value) if isinstance(value, list) else '')}; mask {mask!r}")
    event(f"visual {kind}")
    try:
        enc = proc(texts if n > 1 else texts[0], visual_embeds=value, visual_attention_mask=mask)
    except VlexportError as exc:
        event(f"processor visual: {type(exc).__name__}")
        assert isinstance(exc, InputError) and ("visual_embeds" in str(exc) or "visual_attention_mask" in str(exc)), exc
        valid = _visual_valid(value, kind, n)
        mask_ok = mask is None or np.isin(mask, (0, 1)).all()
        assert not (valid and mask_ok), f"valid visual_embeds were refused: {exc}"
        return
    event("processor visual: ok")
    assert _visual_valid(value, kind, n), "invalid visual_embeds were packed"
    emb, vmask, vtt = enc["visual_embeds"], enc["visual_attention_mask"], enc["visual_token_type_ids"]
    assert emb.dtype == np.float32 and emb.flags.c_contiguous and emb.ndim == 3 and emb.shape[0] == n
    assert np.isfinite(emb).all(), "NaN/inf in packed visual_embeds"
    assert vmask.dtype == np.int64 and vmask.shape == emb.shape[:2] and np.isin(vmask, (0, 1)).all()
    assert vtt.dtype == np.int64 and (vtt == 1).all()
    if mask is not None:
        assert np.array_equal(vmask, np.asarray(mask).reshape(vmask.shape).astype(np.int64))
    if kind in ("array", "torch"):
        src = np.asarray(value.numpy() if kind == "torch" else value)
        assert np.array_equal(emb, src.reshape(emb.shape).astype(np.float32))
    else:
        for i, a in enumerate(value):
            a = np.asarray(a, dtype=np.float32)
            assert np.array_equal(emb[i, :len(a)], a) and (emb[i, len(a):] == 0).all()
            assert (vmask[i, :len(a)] == 1).all() and (vmask[i, len(a):] == 0).all()
    # end to end: the fp32 model answers, or names the input outside what it was built for
    kind_, got = _outcome(lambda: model(**enc))
    event(f"model on processor output: {kind_}")
    v, d = emb.shape[1], emb.shape[2]
    fits = d == dim and built.axes["visual"].contains(v) and built.axes["text"].contains(enc["input_ids"].shape[-1])
    if fits:
        assert kind_ == "ok", got
        _finite(got, "processor -> model")
    else:
        assert kind_ == "error" and isinstance(got, InputError), got


# ----------------------------------------------------------------------------- resource bounds

def test_text_longer_than_max_chars_is_refused_naming_it(built):
    _visual_bert(built)
    proc = type(built.model().processor).from_pretrained(built.path)
    assert proc.max_chars == 100_000
    ok = ("cat " * 25_000)[:100_000]
    enc = proc([ok, "a"], padding=True, truncation=True, max_length=64)
    assert enc["input_ids"].shape == (2, 64)
    for kwargs, where in [(dict(text=ok + "x"), "text"), (dict(text=["a", "b", ok + "x"]), "text[2]"),
                          (dict(text=["a"], text_pair=[ok + "x"]), "text_pair[0]"),
                          (dict(text=[["a", ok + "x"]]), "text[0][1]")]:
        with pytest.raises(InputError, match=r"100000") as info:
            proc(**kwargs, truncation=True, max_length=64)
        assert str(info.value).startswith(where + " ") and "max_chars" in str(info.value)
    proc.max_chars = 200_000  # users can raise it
    assert proc(ok + "x", truncation=True, max_length=64)["input_ids"].shape == (1, 64)


@pytest.mark.filterwarnings("ignore:Token indices sequence length")
def test_padding_and_max_length_beyond_the_token_budget_are_refused(built):
    _visual_bert(built)
    proc = type(built.model().processor).from_pretrained(built.path)
    with pytest.raises(InputError, match="max_length.*max_batch_tokens"):
        proc("a", padding="max_length", max_length=10 ** 10)  # tokenizers aborted the process on this
    with pytest.raises(InputError, match="pad_to_multiple_of.*max_batch_tokens"):
        proc(["a", "b"], padding=True, pad_to_multiple_of=10 ** 9)
    # truncation alone with an enormous max_length truncates nothing (OverflowError from tokenizers before)
    assert proc("a b", truncation=True, max_length=2 ** 70)["input_ids"].shape == (1, 4)
    proc.max_batch_tokens = 1000
    with pytest.raises(InputError, match="text.*1000 token slots"):
        proc(["cat"] * 10 + ["cat " * 200], padding=True)  # 11 rows padded to 600+ tokens
    enc = proc(["cat"] * 10 + ["cat " * 20], padding=True)  # 11 rows of 62 tokens
    assert enc["input_ids"].shape[0] == 11 and enc["input_ids"].size <= 1000


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    # Linux keeps a process's RSS high-water mark across fork + exec: reset it, or the child reports the
    # parent pytest's peak (3 GiB after the trained-decoder tests) instead of its own
    try:
        open("/proc/self/clear_refs", "w").write("5")
    except OSError:
        pass
    cap = int(sys.argv[2]) << 20
    from vlexport.errors import InputError
    from vlexport.families.visual_bert.processor import VisualBertProcessor
    proc = VisualBertProcessor.from_pretrained(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    long = ("cat dog red " * 10_000)[:100_000]
    results = {}

    def attempt(name, fn):
        try:
            results[name] = ["ok", list(fn()["input_ids"].shape)]
        except InputError as exc:
            results[name] = ["InputError", str(exc)[:200]]

    # one long text padded with 4000 short ones: 4000 x 50k padded slots (tokenizers alone: > 10 GB)
    attempt("pad_to_longest", lambda: proc(["a"] * 4000 + [long], padding=True))
    attempt("max_length_1e9", lambda: proc(["a"] * 8, padding="max_length", max_length=10 ** 9))
    # many long texts, unpadded: encoding stops at the budget instead of tokenizing them all
    proc.max_batch_tokens = 300_000
    attempt("many_long_unpadded", lambda: proc([long] * 5000, padding=False, return_tensors=None))
    del proc.max_batch_tokens
    # a legal batch of long texts still works within the memory cap
    attempt("eight_long", lambda: proc([long] * 8, padding=True))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; inherited, unless VmHWM says otherwise
    try:
        peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    print(json.dumps({"results": results, "peak_rss_mib": peak // 1024}))
""")


def test_many_long_texts_stay_within_a_memory_cap(built, tmp_path):
    """In a child process whose address space is capped (RLIMIT_AS), batches of long texts either
    encode or are refused with an InputError; before the bounds, tokenizers' padding allocation
    aborted the whole process (Rust's OOM handler) on the first of these."""
    _visual_bert(built)
    script = tmp_path / "memory.py"
    script.write_text(_MEMORY_SCRIPT)
    cap_mib = 3072
    proc = subprocess.run([sys.executable, str(script), str(built.path), str(cap_mib)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"the capped child died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    res = report["results"]
    assert res["pad_to_longest"][0] == "InputError" and "max_batch_tokens" in res["pad_to_longest"][1]
    assert res["max_length_1e9"][0] == "InputError" and "max_length" in res["max_length_1e9"][1]
    assert res["many_long_unpadded"][0] == "InputError" and "text" in res["many_long_unpadded"][1]
    assert res["eight_long"][0] == "ok" and res["eight_long"][1][0] == 8 and res["eight_long"][1][1] > 20_000
    # measured ~150 MiB alone, up to ~1.1 GiB in a CI run (tokenizers' worker threads and allocator
    # arenas): bounded well under the 3 GiB cap, where the unbounded code needed > 10 GB
    assert report["peak_rss_mib"] < 2048
