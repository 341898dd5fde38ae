"""Pipelines: the small classes that own the control flow between an artifact's graphs.

A pipeline holds one backend session per graph and is what `vlexport.load` returns. The manifest
names its pipeline ("classify" for one-graph models); families with other control flow (embed
two towers, generate with a KV cache) declare their class in `Family.pipelines` (a plugin or a test
may also call `register_pipeline`). Every call is
checked against the graph's input specs before a backend sees it, defaults HF applies to omitted
inputs are filled in from the description, and outputs are checked to be finite (an fp16 graph
that overflows on some input gives a NumericalError, never NaN answers).

Thread safety: a pipeline may be called from many threads at once. Backends are thread-safe
(ONNX Runtime sessions; TensorRT serializes on a lock per engine), the processor is created once
under a lock, and nothing else is mutated after construction.
"""

from __future__ import annotations

import threading

import numpy as np

from vlexport.errors import ArtifactError, InputError, NumericalError
from vlexport.outputs import ModelOutput
from vlexport.specs import check_inputs, default_value


def to_array(name: str, value):
    """numpy view of a host array/tensor (DLPack, no torch import); device values pass through."""
    if isinstance(value, np.ndarray):
        return value
    if type(value).__name__ == "OrtValue" or hasattr(value, "__cuda_array_interface__"):
        return value  # a device value: the backend binds it (or refuses it on CPU)
    if hasattr(value, "__dlpack__"):
        dev = getattr(value, "__dlpack_device__", None)
        if dev is not None:
            try:
                if int(dev()[0]) not in (1, 3):  # kDLCPU, kDLCUDAHost
                    return value  # a CUDA tensor: the backend binds it by pointer
            except Exception:
                pass
        try:
            return np.from_dlpack(value)
        except (RuntimeError, TypeError, BufferError, ValueError) as exc:
            raise InputError(f"input '{name}' could not be read through DLPack ({exc}); pass a numpy "
                             f"array or a CPU tensor") from None
    if isinstance(value, (list, tuple, int, float, bool)):
        try:
            arr = np.asarray(value)
        except ValueError as exc:
            raise InputError(f"input '{name}' is a ragged or malformed list ({exc}); pass a rectangular array") from None
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise InputError(f"input '{name}' holds {arr.dtype.name} values; expected numbers")
        return arr
    raise InputError(f"input '{name}' is a {type(value).__name__}; expected a numpy array or a DLPack tensor")


_NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


class Pipeline:
    """Base: the artifact, one backend per graph, the family's processor, input preparation."""

    def __init__(self, artifact, backends: dict, family, chosen_because: str = ""):
        self.artifact = artifact
        self.backends = backends
        self.family = family
        self.chosen_because = chosen_because
        self._specs = {g: artifact.inputs(g) for g in artifact.graph_names}
        self._outputs = {g: artifact.outputs(g) for g in artifact.graph_names}
        self._axes = artifact.axes
        # an fp16 graph may take some float inputs as float16 (a KV cache): those are fed in its type
        self._fp16_inputs = {g: {n for n, t in (getattr(b, "input_types", None) or {}).items() if t is np.float16}
                             for g, b in backends.items()}
        self._processor = None
        self._lock = threading.Lock()

    def require_graphs(self, pipeline: str, *names: str) -> None:
        """ArtifactError unless the artifact's graphs are exactly `names` (a family pipeline's own)."""
        if set(self.backends) != set(names):
            raise ArtifactError(f"the {pipeline} pipeline runs the graphs {' and '.join(repr(n) for n in names)}; "
                                f"'{self.artifact.path}' has {sorted(self.backends)}")

    # ---- what the artifact says
    @property
    def config(self) -> dict:
        return self.artifact.config

    @property
    def id2label(self) -> dict:
        return {int(k): v for k, v in (self.config.get("id2label") or {}).items()}

    @property
    def processor(self):
        if self._processor is None:
            with self._lock:
                if self._processor is None:
                    # the processor's files were hash-checked when the Artifact was opened
                    self._processor = self.family.load_processor(self.artifact.path, "artifact")
        return self._processor

    # ---- inputs and outputs
    def prepare(self, inputs: dict, graph: str | None = None) -> dict:
        """HF kwargs -> checked, typed, contiguous feeds for one graph (HF's defaults included)."""
        if graph is None:
            if len(self._specs) != 1:
                raise InputError(f"name the graph to prepare inputs for: one of {list(self._specs)}")
            graph = next(iter(self._specs))
        specs = self._specs[graph]
        feeds = {k: to_array(k, v) for k, v in inputs.items() if v is not None}
        sizes = check_inputs(specs, feeds, self._axes)
        for s in specs:
            if s.name not in feeds:
                fill = default_value(s, sizes)
                if fill is not None:
                    feeds[s.name] = fill
        by_name = {s.name: s for s in specs}
        fp16 = self._fp16_inputs[graph]
        for name, x in feeds.items():
            if isinstance(x, np.ndarray):
                want = np.float16 if name in fp16 else _NP[by_name[name].dtype]
                if x.dtype != want or not x.flags.c_contiguous:
                    feeds[name] = np.ascontiguousarray(x, dtype=want)
        return feeds

    def run_graph(self, graph: str, feeds: dict, keep_on_device: bool = False) -> dict:
        out = self.backends[graph].run(feeds, keep_on_device=keep_on_device)
        if not keep_on_device:
            self._check_finite(graph, out)
        return out

    def _check_finite(self, graph, out):
        for o in self._outputs[graph]:
            x = out.get(o.name)
            if isinstance(x, np.ndarray) and x.dtype.kind == "f" and not np.isfinite(x).all():
                backend = self.backends[graph]
                raise NumericalError(
                    f"output '{o.name}' of the {backend.precision} {graph} graph holds NaN or inf for these inputs "
                    f"(values beyond {'fp16' if backend.precision == 'fp16' else 'the graph'}'s range?)"
                    + ("; load the artifact with precision='fp32'" if backend.precision != "fp32" else ""))

    def describe(self) -> str:
        return ", ".join(f"{g}: {b.describe()}" for g, b in self.backends.items())

    def close(self):
        for b in self.backends.values():
            b.close()

    def __repr__(self):
        return f"{type(self).__name__}({self.artifact.architecture}, {self.describe()}, {self.artifact.path})"


class ClassifyPipeline(Pipeline):
    """One graph, HF keyword arguments in, HF outputs out (`outputs.logits`): classification heads,
    feature extraction, pre-training heads."""

    def __init__(self, artifact, backends, family, chosen_because=""):
        super().__init__(artifact, backends, family, chosen_because)
        if len(backends) != 1:
            raise ArtifactError(f"the classify pipeline runs one graph; '{artifact.path}' has {list(backends)}")
        self.graph = next(iter(backends))

    @property
    def backend(self):
        return self.backends[self.graph]

    def __call__(self, **inputs) -> ModelOutput:
        inputs.pop("return_dict", None)
        out = self.run_graph(self.graph, self.prepare(inputs, self.graph))
        return ModelOutput((o.name, out[o.name]) for o in self._outputs[self.graph])

    forward = __call__

    def top_answers(self, logits, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per sample, the k best (label, score) pairs (scores are the raw logits)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        logits = np.asarray(logits)
        names = self.id2label
        best = np.argsort(-logits, axis=-1, kind="stable")[..., :k]
        return [[(names.get(int(i), str(int(i))), float(row[i])) for i in idx] for row, idx in zip(logits, best)]


PIPELINES = {"classify": ClassifyPipeline}


def register_pipeline(name: str, cls) -> None:
    """Make a pipeline class available to artifacts whose manifest names it (families call this
    from their own code paths, tests from the test)."""
    PIPELINES[name] = cls


def pipeline_class(name: str, family=None):
    """The pipeline class an artifact names: a built-in one, one registered at run time, or one its
    family declares (`Family.pipelines`, imported only now)."""
    if family is not None and name in family.pipelines and name not in PIPELINES:
        import importlib

        module, cls = family.pipelines[name].split(":")
        return getattr(importlib.import_module(module), cls)
    if name not in PIPELINES:
        raise ArtifactError(f"the artifact needs the '{name}' pipeline, which this vlexport does not have "
                            f"(it has {sorted(PIPELINES)}); upgrade vlexport or rebuild the artifact")
    return PIPELINES[name]
