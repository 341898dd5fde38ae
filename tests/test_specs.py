"""The description language every family uses (vlexport.specs): axis ranges with a step (image sides
in multiples of 32), derived sizes (a KV length past+1), input checks, manifest round trips,
TensorRT profiles and ONNX export of a graph that uses both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlexport.errors import InputError
from vlexport.specs import (AXES, AxisRange, GraphSpec, InputSpec, OutputSpec, check_inputs, default_value,
                            dim_terms, input_from_json, output_from_json, resolve_dim)


def test_axis_ranges_and_steps():
    r = AxisRange(32, 384, 640, step=32)
    assert r.contains(64) and not r.contains(48) and not r.contains(672)
    assert r.as_list() == [32, 384, 640, 32] and AxisRange.from_list(r.as_list()) == r
    assert AxisRange.from_list([1, 2, 3]).step == 1
    for bad in ([5, 2, 1], [0, 1, 2], [1, 2, "3"], [1, 2, 3, 0], [32, 40, 64, 32], [True, 1, 2], "1,2,3", [1, 2]):
        with pytest.raises(ValueError):
            AxisRange.from_list(bad)


def test_dims_and_derived_sizes():
    assert dim_terms("text+visual") == ["text", "visual"] and dim_terms("past+1") == ["past", 1] and dim_terms(7) == [7]
    assert resolve_dim("past+1", {"past": 4}) == 5 and resolve_dim("past+1", {}) is None
    for bad in ("", "a-b", "x+", "../x", 1.5, None, True):
        with pytest.raises(ValueError):
            dim_terms(bad)
    assert set(AXES) >= {"batch", "text", "visual", "height", "width", "past"}


SPECS = [
    InputSpec("pixel_values", ("batch", 3, "height", "width"), "float32"),
    InputSpec("input_ids", ("batch", "new"), "int64", low=0, high=10),
    InputSpec("attention_mask", ("batch", "past+1"), "int64", low=0, high=2, default=1),
]
AXES_ = {"batch": AxisRange(1, 1, 4), "height": AxisRange(32, 64, 128, 32), "width": AxisRange(32, 64, 128, 32),
         "new": AxisRange(1, 1, 1 + 1), "past": AxisRange(1, 4, 16)}


def test_check_inputs_with_steps_and_derived_dims():
    feeds = {"pixel_values": np.zeros((2, 3, 64, 96), np.float32), "input_ids": np.zeros((2, 1), np.int64),
             "attention_mask": np.ones((2, 5), np.int64)}
    sizes = check_inputs(SPECS, feeds, AXES_)
    assert sizes == {"batch": 2, "height": 64, "width": 96, "new": 1}
    with pytest.raises(InputError, match=r"'pixel_values' has height=48, outside .*\[32, 128\] in steps of 32.*--max-height"):
        check_inputs(SPECS, {**feeds, "pixel_values": np.zeros((2, 3, 48, 96), np.float32)}, AXES_)
    sizes_with_past = {**sizes, "past": 4}
    mask = default_value(SPECS[2], sizes_with_past)
    assert mask.shape == (2, 5) and mask.dtype == np.int64 and (mask == 1).all()
    assert default_value(SPECS[2], sizes) is None  # past unknown: no shape to fill


def test_check_inputs_derived_dim_mismatch():
    specs = [InputSpec("keys", ("batch", "past"), "float32"), InputSpec("mask", ("batch", "past+1"), "int64")]
    ok = {"keys": np.zeros((1, 4), np.float32), "mask": np.ones((1, 5), np.int64)}
    check_inputs(specs, ok)
    with pytest.raises(InputError, match=r"'mask' has shape \(1, 4\): its 'past\+1' axis should be 5, got 4"):
        check_inputs(specs, {**ok, "mask": np.ones((1, 4), np.int64)})


def test_manifest_round_trip_and_bad_entries():
    for spec in SPECS:
        d = GraphSpec("g", [spec], []).to_json()["inputs"][0]
        assert input_from_json(d) == spec
    o = OutputSpec("present", ("batch", "past+1", 8), classes=False)
    assert output_from_json({"name": "present", "dims": ["batch", "past+1", 8]}) == o
    for bad in ({"name": "x", "dims": ["batch"], "dtype": "float128"}, {"name": "x", "dims": ["../a"], "dtype": "int64"},
                {"name": "x", "dims": ["batch"], "dtype": "int64", "default": [1]},
                {"name": "x", "dims": ["batch"], "dtype": "int64", "low": "0"}):
        with pytest.raises(ValueError):
            input_from_json(bad)
    with pytest.raises(ValueError):
        output_from_json({"name": "x", "dims": ["batch"], "masked_below": "low"})
    cache = OutputSpec("new_key.0", ("batch", 2, "text", 8), row_axes=(1, 3))
    assert output_from_json(GraphSpec("g", [], [cache]).to_json()["outputs"][0]) == cache
    for rows in ([1, 4], [1, 1], [], ["1"], [True]):  # past the dims, repeated, empty, not integers
        with pytest.raises(ValueError, match="row_axes"):
            output_from_json({"name": "x", "dims": ["batch", 2, "text", 8], "row_axes": rows})


def test_profiles_for_derived_dims():
    from vlexport.tensorrt.profiles import build_profiles

    (latency, throughput) = build_profiles(SPECS, AXES_)
    lo, opt, hi = latency["attention_mask"]
    assert lo == (1, 2) and opt == (1, 5) and hi == (1, 17)  # past+1 at past's min/opt/max
    assert throughput["pixel_values"][2] == (4, 3, 128, 128)


class _Decoderish(torch.nn.Module):
    """A module whose inputs use a step axis and a derived dim, like a KV-cached decoder fed images."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 4, kernel_size=32, stride=32)

    def forward(self, pixel_values, input_ids, attention_mask):
        feats = self.proj(pixel_values).flatten(2).mean(-1)  # (B, 4)
        keep = attention_mask.to(feats.dtype).mean(-1, keepdim=True)  # (B, 1)
        return {"out": feats * keep + input_ids.to(feats.dtype)}


def test_export_with_step_and_derived_dims(tmp_path):
    import onnxruntime as ort

    from vlexport.export.onnx_export import export_onnx

    def make_inputs(sizes, rng, pad=True):
        B = sizes["batch"]
        return {"pixel_values": rng.standard_normal((B, 3, sizes["height"], sizes["width"])).astype(np.float32),
                "input_ids": rng.integers(0, 10, size=(B, 1)), "attention_mask": np.ones((B, sizes["past"] + 1), np.int64)}

    specs = [SPECS[0], InputSpec("input_ids", ("batch", 1), "int64", low=0, high=10), SPECS[2]]
    graph = GraphSpec("g", specs, [OutputSpec("out", ("batch", 4))], make_inputs=make_inputs)
    axes = {k: v for k, v in AXES_.items() if k != "new"}
    torch.manual_seed(0)
    module = _Decoderish().eval()
    facts = export_onnx(module, graph, axes, tmp_path / "g.onnx")
    assert facts["trace_sizes"]["height"] % 32 == 0
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"))
    rng = np.random.default_rng(0)
    for sizes in ({"batch": 1, "height": 128, "width": 32, "past": 1}, {"batch": 3, "height": 32, "width": 96, "past": 16}):
        feeds = make_inputs(sizes, rng)  # sizes the export never traced
        with torch.no_grad():
            want = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})["out"].numpy()
        np.testing.assert_allclose(sess.run(None, feeds)[0], want, atol=1e-5)
