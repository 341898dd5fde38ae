"""Declarative task descriptions: what goes in and out of a model, with named dynamic axes.

In the spirit of Optimum's OnnxConfig, without its inheritance: a `TaskSpec` is plain data
(inputs, outputs, axis ranges, tolerance, a dummy-input maker). The same description drives
input checking (eager PyTorch and the runtime), ONNX export (names and dynamic axes), TensorRT
optimization profiles (min/opt/max) and the validation grid. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vlexport.errors import InputError


@dataclass(frozen=True)
class AxisRange:
    """Allowed sizes of one dynamic axis; `opt` is the size TensorRT tunes for."""

    min: int
    opt: int
    max: int

    def __post_init__(self):
        if not (1 <= self.min <= self.opt <= self.max):
            raise ValueError(f"axis range needs 1 <= min <= opt <= max, got {self}")

    def as_list(self):
        return [self.min, self.opt, self.max]


@dataclass(frozen=True)
class InputSpec:
    """One model input. `dims` holds axis names (dynamic) or ints (fixed).

    `low`/`high` bound integer values (inclusive low, exclusive high); `high` may be an axis name
    or a sum of them (e.g. "text+visual"), so specs serialize to JSON as they are.
    """

    name: str
    dims: tuple
    dtype: str  # "int64" | "float32"
    low: int | None = None
    high: int | str | None = None
    required: bool = True
    doc: str = ""


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dims: tuple
    dtype: str = "float32"


@dataclass
class TaskSpec:
    """Everything export, runtime and validation need to know about one (architecture, task)."""

    architecture: str  # e.g. "VisualBertForQuestionAnswering"
    task: str  # e.g. "question-answering"
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    axes: dict[str, AxisRange]  # every axis name used in inputs/outputs -> allowed range
    tolerance: float  # fp32 max-abs tolerance, export vs reference
    make_inputs: Callable[..., dict]  # (sizes: dict[axis, int], rng, pad: bool) -> numpy feeds
    fp16_cosine: float = 0.999
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def input_names(self):
        return [i.name for i in self.inputs]

    @property
    def output_names(self):
        return [o.name for o in self.outputs]

    def dynamic_axes(self):
        """{tensor name: {dim index: axis name}} for torch.onnx.export / the manifest."""
        table = {}
        for t in list(self.inputs) + list(self.outputs):
            named = {i: d for i, d in enumerate(t.dims) if isinstance(d, str)}
            if named:
                table[t.name] = named
        return table


# CLI flag stem of each axis (--min/--opt/--max-<stem>)
FLAG_NAMES = {"batch": "batch", "text": "text-len", "visual": "visual-len", "choices": "choices",
              "phrases": "phrases", "align": "align"}


def _dtype_kind(x) -> str:
    """'int' | 'float' | 'bool' for numpy arrays and torch tensors alike (no torch import)."""
    dt = str(x.dtype).replace("torch.", "")
    if dt.startswith(("int", "uint")):
        return "int"
    if dt.startswith(("float", "bfloat", "half")):
        return "float"
    if dt == "bool":
        return "bool"
    return dt


def _bound(value, sizes):
    """An int, or axis names joined by '+' (e.g. "text+visual"), evaluated on the bound sizes."""
    if value is None or isinstance(value, int):
        return value
    return sum(sizes[name] for name in value.split("+"))


def check_inputs(specs, feeds: dict, axes: dict[str, AxisRange] | None = None, check_values: bool = True) -> dict:
    """Check names, ranks, dtypes, consistent axis sizes, axis ranges and integer value ranges.

    Works on numpy arrays and torch tensors. Returns {axis name: size}. Raises InputError that
    names the input, what was expected and what came.
    """
    known = {s.name for s in specs}
    unknown = [k for k in feeds if k not in known]
    if unknown:
        raise InputError(f"unexpected input(s) {unknown}; this model takes {sorted(known)}")
    sizes: dict[str, int] = {}
    where: dict[str, str] = {}
    for s in specs:
        x = feeds.get(s.name)
        if x is None:
            if s.required:
                raise InputError(f"missing input '{s.name}' ({s.doc or 'required by this task'})")
            continue
        shape = tuple(int(d) for d in x.shape)
        if len(shape) != len(s.dims):
            raise InputError(f"input '{s.name}' should have {len(s.dims)} dims {s.dims}, got shape {shape}")
        kind = _dtype_kind(x)
        want = "int" if s.dtype.startswith("int") else "float"
        if kind != want and not (want == "int" and kind == "bool") and not (want == "float" and kind == "int" and s.low is not None):
            raise InputError(f"input '{s.name}' should be {s.dtype}, got {x.dtype}")
        for dim, n in zip(s.dims, shape):
            if isinstance(dim, int):
                if n != dim:
                    raise InputError(f"input '{s.name}' has shape {shape}; expected {dim} for that axis ({s.dims})")
            elif dim in sizes and sizes[dim] != n:
                raise InputError(
                    f"input '{s.name}' has {dim}={n} but '{where[dim]}' has {dim}={sizes[dim]} (shape {shape})"
                )
            else:
                sizes.setdefault(dim, n)
                where.setdefault(dim, s.name)
    if axes:
        for name, n in sizes.items():
            r = axes.get(name)
            if r is not None and not (r.min <= n <= r.max):
                raise InputError(
                    f"input '{where[name]}' has {name}={n}, outside the range this model was built for "
                    f"[{r.min}, {r.max}]; rebuild with a wider range (e.g. --max-{FLAG_NAMES.get(name, name)})"
                )
    if check_values:
        for s in specs:
            x = feeds.get(s.name)
            if x is None or (s.low is None and s.high is None) or int(np.prod(x.shape)) == 0:
                continue
            lo, hi = int(x.min()), int(x.max())
            high = _bound(s.high, sizes)
            if s.low is not None and lo < s.low:
                raise InputError(f"input '{s.name}' has value {lo}; expected values >= {s.low}")
            if high is not None and hi >= high:
                raise InputError(f"input '{s.name}' has value {hi}; expected values < {high}")
    return sizes
