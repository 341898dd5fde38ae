"""Declarative model descriptions: graphs, their inputs and outputs, named dynamic axes.

In the spirit of Optimum's OnnxConfig, without its inheritance. A `ModelSpec` names the component
graphs of one exported model (one for a classifier; vision + text for a dual encoder; encoder +
decoder for generation) and the runtime pipeline that drives them. Each `GraphSpec` is plain data
(inputs, outputs, tolerance, fp16 policy) plus a dummy-input maker. The same description drives
input checking (eager PyTorch and the runtime), ONNX export (names and dynamic axes), TensorRT
optimization profiles (min/opt/max) and the validation grids. No torch here.

Dims are ints (fixed), axis names ("batch"), or derived sizes written as a sum of axis names and
integers ("text+visual", "past+1"). `AXES` below is the one place that defines axis names and
their command-line flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vlexport.errors import InputError

# axis name -> (CLI flag stem for --min/--opt/--max-<stem>, what it counts)
AXES = {
    "batch": ("batch", "examples per call"),
    "text": ("text-len", "tokens per text"),
    "visual": ("visual-len", "regions per example"),
    "choices": ("choices", "answer choices per example"),
    "phrases": ("phrases", "phrases per example"),
    "align": ("align", "aligned text positions per region"),
    "images": ("images", "images per example"),
    "height": ("height", "image height in pixels"),
    "width": ("width", "image width in pixels"),
    "past": ("past-len", "cached positions of a decoder"),
    "rois": ("rois", "pooled regions per call of a detector's box head"),
}
DTYPES = ("float32", "float16", "int32", "int64", "bool")
MAX_AXIS = 1 << 24  # no axis of a real model is longer (a bound for untrusted manifests)
_TERM = re.compile(r"^[a-z_][a-z0-9_]*$|^\d+$")


def flag(axis: str) -> str:
    return AXES.get(axis, (axis.replace("_", "-"), ""))[0]


def cache_names(layers: int, kind: str) -> list[str]:
    """A decoder's per-layer cache tensors, in graph order: "past" -> past_key.0, past_value.0,
    past_key.1, ...; "new" -> new_key.0, ...; "cross" -> cross_key.0, cross_value.0, ..."""
    return [f"{kind}_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]


@dataclass(frozen=True)
class AxisRange:
    """Allowed sizes of one dynamic axis: min..max in steps of `step`; `opt` is what TensorRT tunes for."""

    min: int
    opt: int
    max: int
    step: int = 1

    def __post_init__(self):
        values = (self.min, self.opt, self.max, self.step)
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"axis range values must be integers, got {values}")
        if not (1 <= self.min <= self.opt <= self.max <= MAX_AXIS) or self.step < 1:
            raise ValueError(f"axis range needs 1 <= min <= opt <= max <= {MAX_AXIS} and step >= 1, got "
                             f"min={self.min} opt={self.opt} max={self.max} step={self.step}")
        if self.step > 1 and any(v % self.step for v in (self.min, self.opt, self.max)):
            raise ValueError(f"axis range min/opt/max must be multiples of its step {self.step}, got "
                             f"{self.min}/{self.opt}/{self.max}")

    def contains(self, n: int) -> bool:
        return self.min <= n <= self.max and n % self.step == 0

    def as_list(self) -> list[int]:
        return [self.min, self.opt, self.max] + ([self.step] if self.step != 1 else [])

    @classmethod
    def from_list(cls, value) -> "AxisRange":
        if not isinstance(value, (list, tuple)) or len(value) not in (3, 4):
            raise ValueError(f"expected [min, opt, max] or [min, opt, max, step], got {value!r}")
        return cls(*value)

    def describe(self) -> str:
        return f"[{self.min}, {self.max}]" + (f" in steps of {self.step}" if self.step != 1 else "")


def merge_axes(defaults: dict, axes: dict | None, architecture: str, hint=None) -> dict:
    """A description's default ranges with the caller's overrides; an axis the model lacks is a
    ConfigError naming its axes (`hint(name)`: extra words for that error, e.g. the flag that adds it)."""
    from vlexport.errors import ConfigError

    ranges = dict(defaults)
    for name, r in (axes or {}).items():
        if name not in ranges:
            raise ConfigError(f"axis '{name}' does not exist for {architecture}" + (hint(name) if hint else "")
                              + f"; its axes are {sorted(ranges)}")
        ranges[name] = r
    return ranges


def dim_terms(dim) -> list:
    """'text+visual' -> ['text', 'visual']; 'past+1' -> ['past', 1]; 'batch' -> ['batch']."""
    if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool):
        return [int(dim)]
    if not isinstance(dim, str) or not dim:
        raise ValueError(f"a dim is an int, an axis name or a sum like 'text+visual'; got {dim!r}")
    parts = [p.strip() for p in dim.split("+")]
    if not all(_TERM.match(p) for p in parts):
        raise ValueError(f"a dim is an int, an axis name or a sum like 'text+visual'; got {dim!r}")
    return [int(p) if p.isdigit() else p for p in parts]


def resolve_dim(dim, sizes: dict) -> int | None:
    """The size of a dim given bound axis sizes; None when an axis it uses is unbound."""
    total = 0
    for t in dim_terms(dim):
        if isinstance(t, int):
            total += t
        elif t in sizes:
            total += sizes[t]
        else:
            return None
    return total


@dataclass(frozen=True)
class InputSpec:
    """One graph input. `low`/`high` bound integer values (inclusive low, exclusive high; `high` may be
    a dim expression like "text+visual"). `default`: the value HF fills in when the caller omits the
    input (its shape follows from the dims); None means the caller must pass it when `required`."""

    name: str
    dims: tuple
    dtype: str
    low: int | None = None
    high: int | str | None = None
    required: bool = True
    default: float | int | None = None
    doc: str = ""

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"input '{self.name}' has dtype {self.dtype!r}; expected one of {DTYPES}")
        number = (int, float)
        if self.default is not None and (isinstance(self.default, bool) or not isinstance(self.default, number)):
            raise ValueError(f"input '{self.name}' has default {self.default!r}; expected a number or null")
        if self.low is not None and (isinstance(self.low, bool) or not isinstance(self.low, int)):
            raise ValueError(f"input '{self.name}' has low bound {self.low!r}; expected an integer or null")
        if self.high is not None and (isinstance(self.high, bool) or not isinstance(self.high, (int, str))):
            raise ValueError(f"input '{self.name}' has high bound {self.high!r}; expected an integer, a dim or null")
        for d in self.dims:
            dim_terms(d)  # raises ValueError on a malformed dim


@dataclass(frozen=True)
class OutputSpec:
    """One graph output. classes=True: the last axis holds class scores (top-1 agreement is gated).
    masked_below: entries at or below this value are masked (e.g. finfo.min on padded regions)."""

    name: str
    dims: tuple
    dtype: str = "float32"
    classes: bool = False
    masked_below: float | None = None
    row_axes: tuple | None = None  # axes of one cosine row (default: the last); see metrics.parity

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"output '{self.name}' has dtype {self.dtype!r}; expected one of {DTYPES}")
        if self.masked_below is not None and (isinstance(self.masked_below, bool)
                                              or not isinstance(self.masked_below, (int, float))):
            raise ValueError(f"output '{self.name}' has masked_below {self.masked_below!r}; expected a number or null")
        if self.row_axes is not None and (not isinstance(self.row_axes, tuple) or not self.row_axes or any(
                isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < len(self.dims) for a in self.row_axes)
                or len(set(self.row_axes)) != len(self.row_axes)):
            raise ValueError(f"output '{self.name}' has row_axes {self.row_axes!r}; expected distinct axes of its "
                             f"{len(self.dims)} dims")
        for d in self.dims:
            dim_terms(d)


@dataclass
class GraphSpec:
    """One exported graph: its I/O, tolerance, fp16 policy and a dummy-input maker."""

    name: str
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    make_inputs: Callable[..., dict] | None = None  # (sizes: {axis: int}, rng, pad: bool) -> numpy feeds
    # (sizes, rng, pad, processor) -> feeds as users send them (real texts/photos through the processor):
    # what reduced precisions are gated and calibrated on; make_inputs' random ones stay a stress case
    make_real_inputs: Callable[..., dict] | None = None
    # graphs built before this one whose fp32 runners make_real_inputs takes as run=(name, feeds) -> outputs
    # (a decoder's real inputs are token embeddings and the keys/values of a real prefix)
    real_inputs_use: tuple = ()
    tolerance: float = 1e-4  # fp32 max-abs error against the PyTorch reference (plus rtol 1e-4)
    fp16_keep_fp32_ops: tuple = ()  # op types kept fp32 in the fp16 graph, on top of the defaults
    fp16_cosine: float = 0.999
    int8_cosine: float = 0.99  # worst per-row cosine of the int8 graph against fp32 on the validation inputs
    int8_keep_fp32_weights: tuple = ()  # 2-D weight shapes whose MatMuls stay fp32 in the int8 graph
    # output heads (the MatMuls computing a graph output) stay fp32 in int8 graphs: a classifier costs little and
    # its error goes straight into the answer. True: try them quantized first (a language-model head over a
    # large vocabulary is a quarter of a decode step); the gate decides, and a miss keeps them fp32
    int8_quantize_heads: bool = False
    int8_refused: str = ""  # why --int8 builds no int8 graph for this one (the build says so and goes on)
    # random examples a reduced precision is gated on (on top of the shape grid), when fewer than the
    # build's default: graphs whose every call takes seconds (a detector's per-region res5)
    precision_samples: int | None = None
    fp16_io: tuple = ()  # inputs/outputs that are float16 in the fp16 graph (a KV cache); the rest stay float32

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def file_stem(self) -> str:
        return "model" if self.name == "model" else self.name

    def axes_used(self) -> list[str]:
        seen = []
        for t in list(self.inputs) + list(self.outputs):
            for d in t.dims:
                for term in dim_terms(d):
                    if isinstance(term, str) and term not in seen:
                        seen.append(term)
        return seen

    def to_json(self) -> dict:
        return {"inputs": [{"name": i.name, "dims": list(i.dims), "dtype": i.dtype, "low": i.low, "high": i.high,
                            "required": i.required, "default": i.default, "doc": i.doc} for i in self.inputs],
                "outputs": [{"name": o.name, "dims": list(o.dims), "dtype": o.dtype, "classes": o.classes,
                             "masked_below": o.masked_below,
                             **({"row_axes": list(o.row_axes)} if o.row_axes else {})} for o in self.outputs],
                "tolerance": self.tolerance}


@dataclass
class ModelSpec:
    """Everything export, runtime and validation need to know about one (family, architecture)."""

    family: str
    architecture: str
    task: str
    graphs: list[GraphSpec]
    axes: dict[str, AxisRange]
    pipeline: str = "classify"
    options: dict = field(default_factory=dict)  # family build options (recorded in the manifest)
    notes: str = ""

    def graph(self, name: str) -> GraphSpec:
        for g in self.graphs:
            if g.name == name:
                return g
        raise KeyError(f"no graph '{name}'; this model has {[g.name for g in self.graphs]}")

    def axes_for(self, graph: GraphSpec) -> dict[str, AxisRange]:
        return {k: self.axes[k] for k in graph.axes_used() if k in self.axes}


# ----------------------------------------------------------------------------- parsing manifests

def input_from_json(d: dict) -> InputSpec:
    return InputSpec(str(d["name"]), tuple(d["dims"]), str(d["dtype"]), d.get("low"), d.get("high"),
                     bool(d.get("required", True)), d.get("default"), str(d.get("doc") or ""))


def output_from_json(d: dict) -> OutputSpec:
    rows = d.get("row_axes")
    return OutputSpec(str(d["name"]), tuple(d["dims"]), str(d.get("dtype", "float32")), bool(d.get("classes", False)),
                      d.get("masked_below"), tuple(rows) if isinstance(rows, list) else rows)


def check_io(inputs, outputs, axes: dict) -> None:
    """Every input dim is well formed and names a known axis; raises ValueError saying which. Output
    dims may also use a name no input binds (e.g. a 1 + patches sequence length): it only names
    that output axis in the graph (outputs are checked for form by OutputSpec)."""
    for t in list(inputs):
        for d in t.dims:
            for term in dim_terms(d):
                if isinstance(term, str) and term not in axes:
                    raise ValueError(f"'{t.name}' uses axis '{term}', which has no range (axes: {sorted(axes)})")
    for i in inputs:
        for bound in (i.low, i.high):
            if bound is not None and not isinstance(bound, int):
                for term in dim_terms(bound):
                    if isinstance(term, str) and term not in axes:
                        raise ValueError(f"'{i.name}' bounds its values by unknown axis '{term}'")


# ----------------------------------------------------------------------------- checking inputs

def dtype_kind(x) -> str:
    """'int' | 'float' | 'bool' for numpy arrays and torch tensors alike (no torch import)."""
    dt = str(x.dtype).replace("torch.", "")
    if dt.startswith(("int", "uint")):
        return "int"
    if dt.startswith(("float", "bfloat", "half")):
        return "float"
    if dt == "bool":
        return "bool"
    return dt


def _accepts(spec_dtype: str, kind: str, has_low: bool) -> bool:
    if spec_dtype.startswith("int"):
        return kind in ("int", "bool")
    if spec_dtype == "bool":
        return kind in ("bool", "int")
    return kind == "float" or (kind == "int" and has_low)


def _shape(x) -> tuple:
    shape = getattr(x, "shape", None)
    if shape is None and hasattr(x, "__cuda_array_interface__"):
        shape = x.__cuda_array_interface__["shape"]
    return tuple(int(d) for d in shape)


def check_inputs(specs, feeds: dict, axes: dict[str, AxisRange] | None = None, check_values: bool = True) -> dict:
    """Check names, ranks, dtypes, consistent axis sizes, axis ranges, integer value ranges and (for
    float inputs) finiteness. Works on numpy arrays and torch tensors; device tensors get the shape
    checks only. Returns {axis name: size}. Raises InputError naming the input, what was expected
    and what came."""
    known = {s.name for s in specs}
    unknown = [k for k in feeds if k not in known]
    if unknown:
        raise InputError(f"unexpected input(s) {unknown}; this model takes {sorted(known)}")
    sizes: dict[str, int] = {}
    where: dict[str, str] = {}
    derived = []
    for s in specs:
        x = feeds.get(s.name)
        if x is None:
            if s.required and s.default is None:
                raise InputError(f"missing input '{s.name}' ({s.doc or 'required by this model'})")
            continue
        shape = _shape(x)
        if len(shape) != len(s.dims):
            raise InputError(f"input '{s.name}' should have {len(s.dims)} dims {tuple(s.dims)}, got shape {shape}")
        if hasattr(x, "dtype") and not _accepts(s.dtype, dtype_kind(x), s.low is not None):
            raise InputError(f"input '{s.name}' should be {s.dtype}, got {x.dtype}")
        for dim, n in zip(s.dims, shape):
            terms = dim_terms(dim)
            if len(terms) == 1 and isinstance(terms[0], int):
                if n != terms[0]:
                    raise InputError(f"input '{s.name}' has shape {shape}; expected {terms[0]} for that axis "
                                     f"{tuple(s.dims)}")
            elif len(terms) > 1:
                derived.append((s.name, dim, n, shape))
            elif dim in sizes and sizes[dim] != n:
                raise InputError(f"input '{s.name}' has {dim}={n} but '{where[dim]}' has {dim}={sizes[dim]} "
                                 f"(shape {shape})")
            else:
                sizes.setdefault(dim, n)
                where.setdefault(dim, s.name)
    for name, dim, n, shape in derived:
        want = resolve_dim(dim, sizes)
        if want is not None and want != n:
            raise InputError(f"input '{name}' has shape {shape}: its '{dim}' axis should be {want}, got {n}")
    if axes:
        for name, n in sizes.items():
            r = axes.get(name)
            if r is not None and not r.contains(n):
                raise InputError(
                    f"input '{where[name]}' has {name}={n}, outside the range this model was built for "
                    f"{r.describe()}; rebuild with a wider range (e.g. --max-{flag(name)})")
    if check_values:
        for s in specs:
            x = _host_view(feeds.get(s.name))
            if x is None or x.size == 0:
                continue
            if s.dtype.startswith("float"):
                if x.dtype.kind == "f" and not np.isfinite(x).all():
                    bad = np.argwhere(~np.isfinite(x))[0]
                    raise InputError(f"input '{s.name}' holds NaN or inf (first at index {tuple(int(i) for i in bad)}, "
                                     f"value {x[tuple(bad)]}); non-finite features give meaningless answers")
                # a wider float (float64) beyond the spec dtype's range became inf in prepare()'s cast:
                # ONNX Runtime then answered with a NumericalError about the output, not this input
                limit = float(np.finfo(np.dtype(s.dtype)).max)
                if x.dtype.kind == "f" and x.dtype.itemsize > np.dtype(s.dtype).itemsize and np.abs(x).max() > limit:
                    bad = np.argwhere(np.abs(x) > limit)[0]
                    raise InputError(f"input '{s.name}' holds {x[tuple(bad)]} (first at index "
                                     f"{tuple(int(i) for i in bad)}), beyond the {s.dtype} range (|x| <= {limit:.4g}) "
                                     f"this model takes")
                continue
            if x.dtype.kind not in "iub":
                continue
            lo, hi = int(x.min()), int(x.max())
            if s.dtype.startswith("int"):
                info = np.iinfo(np.dtype(s.dtype))
                if lo < info.min or hi > info.max:  # the cast to the spec dtype would wrap around silently
                    raise InputError(f"input '{s.name}' has value {lo if lo < info.min else hi}, outside "
                                     f"the {s.dtype} range this model takes")
            if s.low is None and s.high is None:
                continue
            high = s.high if s.high is None or isinstance(s.high, int) else resolve_dim(s.high, sizes)
            if s.low is not None and lo < s.low:
                raise InputError(f"input '{s.name}' has value {lo}; expected values >= {s.low}")
            if high is not None and hi >= high:
                raise InputError(f"input '{s.name}' has value {hi}; expected values < {high}"
                                 + (f" ({s.doc})" if s.doc else ""))
    return sizes


def _host_view(x):
    """numpy view of a host array or CPU torch tensor (no torch import); None for device tensors."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and getattr(getattr(x, "device", None), "type", "cpu") == "cpu":
        return x.detach().numpy()
    return None


def default_value(spec: InputSpec, sizes: dict) -> np.ndarray | None:
    """The array HF would use for an omitted input (None when its shape is not known yet)."""
    if spec.default is None:
        return None
    shape = [resolve_dim(d, sizes) for d in spec.dims]
    if any(n is None for n in shape):
        return None
    return np.full(shape, spec.default, dtype=np.dtype(spec.dtype))
