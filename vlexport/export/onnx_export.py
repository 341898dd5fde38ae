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
from vlexport.specs import dim_terms

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


def trace_sizes(axes: dict) -> dict[str, int]:
    """Sizes used to trace: inside every range (on its step), >= 2 where the range allows, and
    unusual values (primes) so that a size equal to some other dimension is not confused with it."""
    preferred = {"batch": 2, "text": 7, "visual": 5, "choices": 3, "phrases": 3, "align": 2, "images": 2, "past": 5}
    sizes = {}
    for name, r in axes.items():
        n = min(max(preferred.get(name, 3), r.min), r.max)
        if r.step > 1:  # image sides: a multiple of the step that is neither min nor max when possible
            n = min(max(r.min + r.step, r.opt), r.max)
            n -= n % r.step
        sizes[name] = n
    return sizes


def _dim(expr, dims):
    """A torch.export Dim (or a sum of Dims and ints) for a dim of the description."""
    total = None
    for t in dim_terms(expr):
        term = dims[t] if isinstance(t, str) else t
        total = term if total is None else total + term
    return total


def export_onnx(module: torch.nn.Module, graph, axes: dict, path: Path, opset: int = OPSET) -> dict:
    """Export `module` (called with the graph's inputs as keywords) to `path`. Returns manifest facts."""
    path = Path(path)
    axes = {k: r for k, r in axes.items() if k in graph.axes_used()}
    fixed = [n for n, r in axes.items() if r.min == r.max]
    if fixed:
        raise ConfigError(f"axes {fixed} have min == max; vlexport exports dynamic axes only, widen the range")
    sizes = trace_sizes(axes)
    feeds = graph.make_inputs(sizes, np.random.default_rng(0), pad=True)
    names = [i.name for i in graph.inputs if i.name in feeds]
    args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names)
    # an axis with a step (image sides in whole patches) is step * Dim: the graph then knows the side is a
    # multiple of the step, and a single step (one patch) is not specialised away
    dims = {a: (torch.export.Dim(a, min=r.min, max=r.max) if r.step == 1 else
                r.step * torch.export.Dim(f"{a}_steps", min=r.min // r.step, max=r.max // r.step))
            for a, r in axes.items()}
    by_name = {i.name: i for i in graph.inputs}
    dynamic = tuple({k: _dim(d, dims) for k, d in enumerate(by_name[n].dims) if isinstance(d, str)} for n in names)
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    wrapper = _Positional(module.eval(), names, graph.output_names)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            wrapper, args, str(path), input_names=names, output_names=graph.output_names,
            dynamic_shapes=(dynamic,), dynamo=True, opset_version=opset, optimize=True,
            external_data=n_bytes > EXTERNAL_DATA_THRESHOLD, verbose=False,
        )
    name_output_axes(path, graph)
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


def name_output_axes(path: Path, graph):
    """Give output dims the spec's axis names (the exporter invents names for derived sizes such as
    text+visual), then check the graph and run shape inference."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    outputs = {o.name: o for o in graph.outputs}
    for out in model.graph.output:
        want = outputs.get(out.name)
        if want is None:
            continue
        for dim, name in zip(out.type.tensor_type.shape.dim, want.dims):
            if isinstance(name, str):
                dim.dim_param = name.replace("+", "_plus_")
    onnx.save(model, str(path))  # external data stays where it is (not loaded, not rewritten)
    onnx.checker.check_model(str(path), full_check=True)  # by path: works past 2 GB, runs shape inference
