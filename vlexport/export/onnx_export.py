"""PyTorch reference model -> ONNX with named dynamic axes.

Exporter: `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript). It names the
dynamic dims after our `torch.export.Dim`s, keeps memory low (~1.4 GB peak for BERT-base here,
the legacy TorchScript exporter ~2.3 GB) and is the exporter PyTorch maintains. We trace with
sizes >= 2 on every axis so no dynamic dim is specialised to 1.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from vlexport.errors import ConfigError

OPSET = 18
# ONNX protobufs cannot exceed 2 GB; past this size the weights go to an external data file.
EXTERNAL_DATA_THRESHOLD = 100 * 2**20


class _Positional(torch.nn.Module):
    """Calls the model with keyword inputs in the spec's order; returns outputs as a tuple."""

    def __init__(self, model, input_names, output_names):
        super().__init__()
        self.model, self.input_names, self.output_names = model, list(input_names), list(output_names)

    def forward(self, *args):
        out = self.model(**dict(zip(self.input_names, args)))
        return tuple(out[name] for name in self.output_names)


def trace_sizes(spec) -> dict[str, int]:
    """Sizes used to trace: inside every range, >= 2 where the range allows, and unusual values
    (primes) so that a size equal to some other dimension is not confused with it."""
    preferred = {"batch": 2, "text": 7, "visual": 5, "choices": 3, "phrases": 3, "align": 2}
    sizes = {}
    for name, r in spec.axes.items():
        sizes[name] = min(max(preferred.get(name, 3), r.min), r.max)
    return sizes


def export_onnx(model: torch.nn.Module, spec, path: Path, opset: int = OPSET) -> dict:
    """Export `model` described by `spec` to `path`. Returns facts for the manifest."""
    path = Path(path)
    sizes = trace_sizes(spec)
    if any(r.max < 2 or r.min == r.max for r in spec.axes.values()):
        fixed = [n for n, r in spec.axes.items() if r.min == r.max]
        if fixed:
            raise ConfigError(f"axes {fixed} have min == max; vlexport exports dynamic axes only, widen the range")
    feeds = spec.make_inputs(sizes, np.random.default_rng(0), pad=True)
    names = [i.name for i in spec.inputs if i.name in feeds]
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    dims = {a: torch.export.Dim(a, min=r.min, max=r.max) for a, r in spec.axes.items()}
    by_name = {i.name: i for i in spec.inputs}
    dynamic = tuple({k: dims[d] for k, d in enumerate(by_name[n].dims) if isinstance(d, str)} for n in names)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    wrapper = _Positional(model.eval(), names, spec.output_names)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            wrapper, args, str(path), input_names=names, output_names=spec.output_names,
            dynamic_shapes=(dynamic,), dynamo=True, opset_version=opset, optimize=True,
            external_data=n_bytes > EXTERNAL_DATA_THRESHOLD, verbose=False,
        )
    name_output_axes(path, spec)
    return {"exporter": f"torch.onnx.export(dynamo=True) torch {torch.__version__}", "opset": opset,
            "trace_sizes": sizes, "external_data": n_bytes > EXTERNAL_DATA_THRESHOLD}


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs and warns about things that do not concern our graphs (torchvision ops,
    deprecations); keep the build's output readable. Restored on exit."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logger.setLevel(level)


def name_output_axes(path: Path, spec):
    """Give output dims the spec's axis names (the exporter invents names for derived sizes such as
    text+visual), then check the graph and run shape inference."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    outputs = {o.name: o for o in spec.outputs}
    for out in model.graph.output:
        want = outputs.get(out.name)
        if want is None:
            continue
        for dim, name in zip(out.type.tensor_type.shape.dim, want.dims):
            if isinstance(name, str):
                dim.dim_param = name
    onnx.save(model, str(path))  # external data stays where it is (not loaded, not rewritten)
    onnx.checker.check_model(str(path), full_check=True)  # by path: works past 2 GB, runs shape inference
