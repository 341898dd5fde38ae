"""`vlexport.load(path)`: an artifact as an HF-style model (`outputs.logits`) with its processor.

Inputs: numpy arrays, Python lists, or anything with DLPack (torch/CuPy tensors) - never a torch
import here. Every call is checked against the artifact's input specs and axis ranges first, so a
length beyond the built profile is a clear InputError, not an engine error or a wrong answer.
"""

from __future__ import annotations

import logging

import numpy as np

from vlexport.artifact import Artifact
from vlexport.errors import InputError
from vlexport.outputs import ModelOutput
from vlexport.runtime.backends import backend_class
from vlexport.tasks import check_inputs

log = logging.getLogger("vlexport")

# Inputs that HF lets callers omit, and the value it uses then.
DEFAULTS = {"attention_mask": 1, "token_type_ids": 0, "visual_attention_mask": 1, "visual_token_type_ids": 1}
_SHAPE_FROM = {"attention_mask": "input_ids", "token_type_ids": "input_ids",
               "visual_attention_mask": "visual_embeds", "visual_token_type_ids": "visual_embeds"}


def to_array(name: str, value):
    """numpy view of a host array/tensor (DLPack, no torch import); device tensors pass through."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__cuda_array_interface__"):
        return value  # a GPU tensor: the backend binds it by pointer (or refuses it on CPU)
    if hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (RuntimeError, TypeError, BufferError) as exc:
            raise InputError(f"input '{name}' could not be read through DLPack ({exc}); pass a numpy "
                             f"array or a CPU tensor") from None
    if isinstance(value, (list, tuple, int, float)):
        return np.asarray(value)
    raise InputError(f"input '{name}' is a {type(value).__name__}; expected a numpy array or a DLPack tensor")


class RuntimeModel:
    """Call with the HF keyword arguments; returns a ModelOutput with the HF output names."""

    def __init__(self, artifact: Artifact, backend, chosen_because: str = ""):
        self.artifact = artifact
        self.backend = backend
        self.chosen_because = chosen_because
        self._specs = artifact.inputs
        self._names = {s.name for s in self._specs}
        self._dtypes = {s.name: np.int64 if s.dtype == "int64" else np.float32 for s in self._specs}
        self._processor = None

    @property
    def config(self) -> dict:
        return self.artifact.config

    @property
    def id2label(self) -> dict:
        return {int(k): v for k, v in (self.config.get("id2label") or {}).items()}

    @property
    def processor(self):
        if self._processor is None:
            from vlexport.processing.visual_bert import VisualBertProcessor

            self._processor = VisualBertProcessor.from_pretrained(self.artifact.path)
        return self._processor

    def prepare(self, inputs: dict) -> dict:
        """HF kwargs -> checked, typed feeds for the backend (the defaults HF applies included)."""
        feeds = {k: to_array(k, v) for k, v in inputs.items() if v is not None}
        for name, fill in DEFAULTS.items():
            if name in self._names and name not in feeds and _SHAPE_FROM[name] in feeds:
                src = feeds[_SHAPE_FROM[name]]
                shape = src.shape if name in ("attention_mask", "token_type_ids") else src.shape[:-1]
                feeds[name] = np.full(shape, fill, np.int64)
        check_inputs(self._specs, feeds, self.artifact.axes)
        for name, x in feeds.items():
            want = self._dtypes[name]
            if isinstance(x, np.ndarray):
                if x.dtype != want:
                    feeds[name] = x.astype(want)
                if not feeds[name].flags.c_contiguous:
                    feeds[name] = np.ascontiguousarray(feeds[name])
        return feeds

    def __call__(self, **inputs) -> ModelOutput:
        inputs.pop("return_dict", None)
        feeds = self.prepare(inputs)
        out = self.backend.run(feeds)
        return ModelOutput((o.name, out[o.name]) for o in self.artifact.outputs)

    forward = __call__

    def top_answers(self, logits, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per sample, the k best (label, score) pairs; scores are sigmoid/softmax-free logits."""
        logits = np.asarray(logits)
        names = self.id2label
        best = np.argsort(-logits, axis=-1)[..., :k]
        return [[(names.get(int(i), str(int(i))), float(row[i])) for i in idx] for row, idx in zip(logits, best)]

    def __repr__(self):
        return f"RuntimeModel({self.artifact.architecture}, {self.backend.describe()}, {self.artifact.path})"


def _auto(artifact: Artifact, precision: str) -> tuple[str, str]:
    """backend="auto": TensorRT when its engine exists and TensorRT + a GPU are here, else ORT."""
    engines = artifact.manifest.get("engines", {})
    if precision in engines:
        ok, why = backend_class("tensorrt").availability()
        if ok:
            return "tensorrt", f"a {precision} TensorRT engine is in the artifact and TensorRT + a GPU are present"
        return "onnxruntime", f"TensorRT not usable here ({why}); using ONNX Runtime"
    return "onnxruntime", f"the artifact has no {precision} TensorRT engine; using ONNX Runtime"


def load(path, backend: str = "auto", precision: str = "fp32", verify: bool = True, **options) -> RuntimeModel:
    artifact = Artifact(path, verify=verify)
    precision = {"float32": "fp32", "float16": "fp16"}.get(precision, precision)
    if backend == "auto":
        backend, why = _auto(artifact, precision)
        log.info("vlexport.load: backend %s (%s)", backend, why)
    else:
        why = "asked for"
    impl = backend_class(backend)(artifact, precision=precision, **options)
    return RuntimeModel(artifact, impl, why)
