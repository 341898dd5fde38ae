"""What a served artifact offers: endpoints (Triton models), their tensors, and how a batch of
requests runs. Generic code: families add their processor endpoints through `Family.serve`.

An endpoint is one Triton model. Two kinds:
  * raw graph endpoints, one per graph, made here from the artifact's input/output specs: tensors in,
    HF output names out (`input_ids`, `visual_embeds`, ... -> `logits`);
  * processor endpoints a family declares (`vlexport/families/<name>/serve.py`): text as UTF-8
    strings and images as encoded file bytes in, the processor runs on the server, HF outputs (or
    generated text) out.

Triton's dynamic batcher hands `execute` several requests at once. Each request's first axis is
its batch; requests whose other dims agree are concatenated and run as one batch, and the outputs
are split back. A request that fails (bad token ids, a text longer than the built profile, an image
that does not decode) gets its own error, naming the input; the requests batched with it are
re-run without it, so one bad client never fails its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vlexport.errors import InputError, VlexportError

# numpy dtype name -> Triton config data type
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                "bool": "TYPE_BOOL", "bytes": "TYPE_STRING"}


@dataclass(frozen=True)
class Tensor:
    """One endpoint input or output, per example: the batch axis is implicit (Triton's
    max_batch_size > 0). dims: ints, -1 for a variable size. dtype "bytes": UTF-8 text or file bytes."""

    name: str
    dtype: str
    dims: tuple = (1,)
    optional: bool = False
    doc: str = ""

    def __post_init__(self):
        if self.dtype not in TRITON_TYPES:
            raise ValueError(f"tensor '{self.name}' has dtype {self.dtype!r}; expected one of {sorted(TRITON_TYPES)}")


@dataclass(frozen=True)
class Endpoint:
    """One served model. run(pipeline, batch) -> outputs: batch maps input names to arrays whose
    first axis is the merged batch (bytes inputs are object arrays of bytes); the outputs have the
    same first axis. `graphs`: the artifact graphs it needs (a runner loads only those)."""

    name: str  # the suffix of the Triton model name: "<artifact name>_<name>"
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    run: Callable
    max_batch: int
    graphs: tuple[str, ...] = ()
    doc: str = ""
    kind: str = "processor"  # "graph" for a raw graph endpoint
    extra: dict = field(default_factory=dict)  # e.g. the graph name of a raw endpoint


def _triton_dims(dims) -> tuple:
    return tuple(d if isinstance(d, int) else -1 for d in dims)


def graph_endpoint(artifact, graph: str, name: str | None = None) -> Endpoint:
    """The raw-tensor endpoint of one graph: its inputs and outputs as the manifest gives them."""
    specs, outs = artifact.inputs(graph), artifact.outputs(graph)
    lead = specs[0].dims[0]
    for s in (*specs, *outs):
        if not s.dims or s.dims[0] != lead:
            raise ValueError(f"graph '{graph}': '{s.name}' does not start with the '{lead}' axis; it cannot be "
                             f"served with Triton's batching")
    inputs = tuple(Tensor(s.name, s.dtype, _triton_dims(s.dims[1:]), optional=not s.required or s.default is not None,
                          doc=s.doc) for s in specs)
    outputs = tuple(Tensor(o.name, o.dtype, _triton_dims(o.dims[1:])) for o in outs)

    def run(pipeline, batch):
        return pipeline.run_graph(graph, pipeline.prepare(batch, graph))

    return Endpoint(name or graph, inputs, outputs, run, max_batch=artifact.axes[lead].max, graphs=(graph,),
                    doc=f"the '{graph}' graph: tensors in, {', '.join(o.name for o in outs)} out",
                    kind="graph", extra={"graph": graph})


def graph_endpoints(artifact) -> list[Endpoint]:
    single = len(artifact.graph_names) == 1
    return [graph_endpoint(artifact, g, "model" if single else g) for g in artifact.graph_names]


def endpoints_for(artifact) -> list[Endpoint]:
    """Every endpoint of an artifact: its raw graphs, then its family's processor endpoints."""
    from vlexport import families

    fam = families.get(artifact.family)
    out = graph_endpoints(artifact)
    if fam.serve:
        import importlib

        module, fn = fam.serve.split(":")
        out += list(getattr(importlib.import_module(module), fn)(artifact))
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ValueError(f"endpoint names clash: {names}")
    return out


def select(endpoints: list[Endpoint], names) -> list[Endpoint]:
    """The endpoints named (all when names is empty); an unknown name is a clear error."""
    if not names:
        return endpoints
    known = {e.name: e for e in endpoints}
    missing = [n for n in names if n not in known]
    if missing:
        raise InputError(f"--endpoints: no endpoint named {missing}; this artifact serves {sorted(known)}")
    return [known[n] for n in names]


# ----------------------------------------------------------------------------- running requests
def check_request(endpoint: Endpoint, request: dict) -> dict:
    """One request's tensors against the endpoint (Triton checks names, dtypes and ranks first; this
    also covers callers that bypass it). Returns the arrays it uses."""
    known = {t.name: t for t in endpoint.inputs}
    unknown = sorted(set(request) - set(known))
    if unknown:
        raise InputError(f"unknown input(s) {unknown} for endpoint '{endpoint.name}'; it takes {sorted(known)}")
    out, n = {}, None
    for t in endpoint.inputs:
        x = request.get(t.name)
        if x is None:
            if not t.optional:
                raise InputError(f"input '{t.name}' is required by endpoint '{endpoint.name}'")
            continue
        x = np.asarray(x)
        if x.ndim != len(t.dims) + 1:
            raise InputError(f"input '{t.name}' has shape {list(x.shape)}; expected [batch, "
                             f"{', '.join(str(d) for d in t.dims)}]")
        for d, want in zip(x.shape[1:], t.dims):
            if want != -1 and d != want:
                raise InputError(f"input '{t.name}' has shape {list(x.shape)}; expected [batch, "
                                 f"{', '.join(str(d) for d in t.dims)}]")
        if n is None:
            n = x.shape[0]
        elif x.shape[0] != n:
            raise InputError(f"input '{t.name}' has batch {x.shape[0]}; the request's other inputs have {n}")
        out[t.name] = x
    if not n:
        raise InputError(f"the request to '{endpoint.name}' holds no examples (batch 0)")
    return out


def decode_texts(name: str, x) -> list[str]:
    """A (batch, 1) BYTES tensor -> Python strings; a clear error for anything that is not UTF-8."""
    texts = []
    for i, v in enumerate(np.asarray(x, dtype=object).reshape(len(x), -1)[:, 0]):
        if isinstance(v, str):
            texts.append(v)
            continue
        if not isinstance(v, (bytes, np.bytes_)):
            raise InputError(f"input '{name}'[{i}] is {type(v).__name__}; expected UTF-8 text bytes")
        try:
            texts.append(bytes(v).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(f"input '{name}'[{i}] is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return texts


def decode_images(name: str, x) -> list:
    """(batch, n) BYTES tensor of encoded image files -> per row a list of n PIL images (opened with
    vlexport.processing.images.open_image: the size is checked from the header before decoding)."""
    from PIL import Image

    from vlexport.processing.images import open_image

    rows = []
    arr = np.asarray(x, dtype=object)
    arr = arr.reshape(len(arr), -1)
    for i, row in enumerate(arr):
        images = []
        for j, v in enumerate(row):
            if not isinstance(v, (bytes, np.bytes_)) or not len(v):
                raise InputError(f"input '{name}'[{i}][{j}] is {'empty' if isinstance(v, bytes) else type(v).__name__}"
                                 f"; expected the bytes of an image file (JPEG, PNG, ...)")
            img = open_image(bytes(v), f"input '{name}'[{i}][{j}]")
            try:
                img.load()
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise InputError(f"input '{name}'[{i}][{j}] is not a readable image file "
                                 f"({type(exc).__name__}: {str(exc)[:100]})") from None
            images.append(img)
        rows.append(images)
    return rows


# ----------------------------------------------------------------------------- helpers for serve.py files
def nonempty_texts(name: str, x) -> list[str]:
    """decode_texts, refusing empty / whitespace-only texts (a processor would encode them as [CLS][SEP])."""
    texts = decode_texts(name, x)
    for i, t in enumerate(texts):
        if not t.strip():
            raise InputError(f"input '{name}'[{i}] is empty; expected a non-empty UTF-8 text")
    return texts


def decode_ints(name: str, x, low: int, high: int | None = None, why: str = "") -> list[int]:
    """A (batch, 1) integer tensor -> per-row Python ints in [low, high] (why: says where high comes from)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise InputError(f"input '{name}' is {arr.dtype}; expected integers")
    values = [int(v) for v in arr.reshape(len(arr), -1)[:, 0]]
    for i, v in enumerate(values):
        if v < low or (high is not None and v > high):
            raise InputError(f"input '{name}'[{i}] is {v}; expected {low}.."
                             f"{high if high is not None else ''}{f' ({why})' if why else ''}")
    return values


def check_lengths(name: str, lengths, limit: int, what: str = "tokens", hint: str = "--max-text-len") -> None:
    """Refuse a row longer than the artifact was built for (the graph would too, naming its own input, e.g.
    input_ids). lengths may come from tokenizing with truncation at limit + 1: only "> limit" is told."""
    for i, n in enumerate(lengths):
        if int(n) > limit:
            raise InputError(f"input '{name}'[{i}] is more than {limit} {what} long, the most this artifact takes "
                             f"(rebuild with a larger {hint})")


def row_groups(keys: list, size: Callable) -> list[tuple]:
    """(key, row indices) for the rows of a merged batch grouped by equal key (e.g. their generation
    settings: a generate call takes one setting for all its rows), each group cut into chunks of at most
    size(key) rows (e.g. the decoder's batch over the beams)."""
    by_key: dict = {}
    for i, k in enumerate(keys):
        by_key.setdefault(k, []).append(i)
    out = []
    for k, rows in by_key.items():
        n = max(1, int(size(k)))
        out += [(k, rows[j:j + n]) for j in range(0, len(rows), n)]
    return out


def text_tensor(texts) -> np.ndarray:
    """Python strings -> the (batch, 1) BYTES output tensor (UTF-8)."""
    out = np.empty((len(texts), 1), dtype=object)
    out[:, 0] = [t.encode("utf-8") for t in texts]
    return out


class naming:
    """`with naming("image"): processor(...)`: an InputError raised inside (a processor's, which names its
    own argument, e.g. images[0]) is re-raised naming the endpoint input the client sent."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, InputError) and f"input '{self.name}'" not in str(exc):
            raise InputError(f"input '{self.name}': {exc}") from None
        return False


def _signature(req: dict) -> tuple:
    return tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in req.items()))


def _concat(reqs: list[dict]) -> dict:
    return {k: np.concatenate([r[k] for r in reqs], axis=0) for k in reqs[0]}


def _split(endpoint: Endpoint, outputs: dict, sizes: list[int]) -> list[dict]:
    names = [t.name for t in endpoint.outputs]
    missing = [n for n in names if n not in outputs]
    if missing:
        raise RuntimeError(f"endpoint '{endpoint.name}' produced no {missing}")
    total = sum(sizes)
    for n in names:
        if len(outputs[n]) != total:
            raise RuntimeError(f"endpoint '{endpoint.name}': output '{n}' has {len(outputs[n])} rows for {total} examples")
    out, start = [], 0
    for s in sizes:
        out.append({n: np.ascontiguousarray(outputs[n][start:start + s]) for n in names})
        start += s
    return out


def _user_error(exc: BaseException) -> bool:
    return isinstance(exc, (VlexportError, ValueError, TypeError, KeyError, IndexError))


def execute(pipeline, endpoint: Endpoint, requests: list[dict]) -> list:
    """Run a list of requests (name -> array, batch first) through an endpoint. Returns, per request,
    its outputs (name -> array) or the exception that request caused. Requests with equal per-example
    shapes run as one batch (never more than the endpoint's max batch); if a merged batch fails, its
    requests are retried one by one so that each error lands on the request that caused it."""
    results: list = [None] * len(requests)
    checked = {}
    for i, req in enumerate(requests):
        try:
            checked[i] = check_request(endpoint, req)
        except VlexportError as exc:
            results[i] = exc
    groups: dict[tuple, list[int]] = {}
    for i, req in checked.items():
        groups.setdefault(_signature(req), []).append(i)
    for idx in groups.values():
        chunks, cur, size = [], [], 0
        for i in idx:  # fill batches up to the endpoint's max batch
            n = len(next(iter(checked[i].values())))
            if cur and size + n > endpoint.max_batch:
                chunks.append(cur)
                cur, size = [], 0
            cur.append(i)
            size += n
        chunks.append(cur)
        for chunk in chunks:
            _run_chunk(pipeline, endpoint, [checked[i] for i in chunk], chunk, results)
    return results


def _run_chunk(pipeline, endpoint, reqs, where, results):
    sizes = [len(next(iter(r.values()))) for r in reqs]
    try:
        outs = _split(endpoint, endpoint.run(pipeline, _concat(reqs)), sizes)
    except Exception as exc:
        if len(reqs) == 1 or not _user_error(exc):
            for i in where:
                results[i] = exc
            return
        for r, i in zip(reqs, where):  # find the request(s) that caused it
            _run_chunk(pipeline, endpoint, [r], [i], results)
        return
    for i, o in zip(where, outs):
        results[i] = o
