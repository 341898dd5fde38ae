"""The fp32 validation's noise floor (vlexport.export.validate): a case past atol is judged again against
float64, so a correct graph of a deep trained model passes on fp32 rounding noise PyTorch itself carries,
while a graph with a real error (far above that noise) still fails, and a reference without a float64
twin keeps the plain atol verdict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlexport.errors import ValidationError
from vlexport.export.validate import torch_reference, validate_graph
from vlexport.specs import AxisRange, GraphSpec, InputSpec, OutputSpec

WIDTH, DEPTH = 64, 24
AXES = {"batch": AxisRange(1, 2, 4), "text": AxisRange(1, 8, 16)}
ATOL = 1e-7  # below fp32 rounding at these magnitudes: every case goes to the float64 check


class Deep(torch.nn.Module):
    """A residual stack whose activations grow into the hundreds, like a trained decoder's stream."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH))

    def forward(self, x):
        for layer in self.layers:
            x = x + torch.tanh(layer(x)) * 8
        return {"y": x}


def reversed_order_program(module, damage: float = 0.0):
    """The same computation in another fp32 program: numpy, each dot product summed in reverse order
    (what a different kernel does); damage: a relative error put on the first layer's weights."""
    ws = [(lay.weight.detach().numpy().copy(), lay.bias.detach().numpy().copy()) for lay in module.layers]
    ws[0] = (ws[0][0] * np.float32(1 + damage), ws[0][1])

    def run(feeds):
        x = feeds["x"].astype(np.float32)
        for w, b in ws:
            x = x + np.tanh(x[..., ::-1] @ w.T[::-1] + b).astype(np.float32) * np.float32(8)
        return {"y": x}

    return run


def spec() -> GraphSpec:
    def make(sizes, rng, pad=False):
        return {"x": (rng.standard_normal((sizes["batch"], sizes["text"], WIDTH)) * 3).astype(np.float32)}

    return GraphSpec("model", [InputSpec("x", ("batch", "text", WIDTH), "float32")],
                     [OutputSpec("y", ("batch", "text", WIDTH))], make_inputs=make, tolerance=ATOL)


@pytest.fixture(scope="module")
def deep():
    return Deep().eval()


def test_fp32_rounding_noise_passes_through_the_float64_check(deep):
    report = validate_graph(torch_reference(deep), reversed_order_program(deep), spec(), AXES, seen={})
    assert report["passed"]
    floor = report["noise_floor"]
    assert floor["checked"] > 0 and floor["worst"]["output"] == "y"  # atol alone would have failed them
    assert floor["worst"]["graph_rel"] <= floor["factor"] * floor["worst"]["torch_fp32_rel"] + 1e-6
    assert all("_feeds" not in c for c in report["cases"])  # the report stays JSON-sized


def test_a_real_error_still_fails(deep):
    with pytest.raises(ValidationError, match="judged against float64: the graph is .* off"):
        validate_graph(torch_reference(deep), reversed_order_program(deep, damage=1e-3), spec(), AXES, seen={})


def test_a_reference_without_float64_keeps_the_atol_verdict(deep):
    plain = torch_reference(deep)

    def reference(feeds):  # no .float64(): the noise floor cannot be measured, so it is not assumed
        return plain(feeds)

    with pytest.raises(ValidationError, match=r"differs from the reference by .* \(atol 1e-07\)"):
        validate_graph(reference, reversed_order_program(deep), spec(), AXES, seen={})
