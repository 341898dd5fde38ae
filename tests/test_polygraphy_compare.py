"""An independent cross-check of our own validation: Polygraphy's comparator on the built graphs.

Polygraphy (NVIDIA's debugging toolkit) runs the fp32 and fp16 graphs of one artifact through its
own ONNX Runtime runner and compares every output with its own metrics. Our build already gated
the same graphs; if either side's comparison logic were wrong, the two would disagree.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("polygraphy", reason="polygraphy is a test dependency (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def tiny_artifact(tiny_artifacts):
    return tiny_artifacts["tiny-visualbert-vqa"]  # the session's shared build


def _feeds(artifact_path, n=4):
    from vlexport import families
    from vlexport.artifact import Artifact

    spec = families.describe_artifact(Artifact(artifact_path)).graphs[0]
    rng = np.random.default_rng(7)
    sizes = [{"batch": 3, "text": 11, "visual": 9}, {"batch": 1, "text": 64, "visual": 100},
             {"batch": 8, "text": 2, "visual": 1}, {"batch": 2, "text": 30, "visual": 40}][:n]
    return [spec.make_inputs(s, rng, pad=True) for s in sizes]


def test_polygraphy_fp32_vs_fp16(tiny_artifact):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, CompareFunc

    runners = [OnnxrtRunner(SessionFromOnnx(str(tiny_artifact / "model.onnx")), name="fp32"),
               OnnxrtRunner(SessionFromOnnx(str(tiny_artifact / "model.fp16.onnx")), name="fp16")]
    results = Comparator.run(runners, data_loader=_feeds(tiny_artifact))
    accuracy = Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(atol=5e-3, rtol=5e-2))
    assert bool(accuracy), "Polygraphy finds the fp16 graph outside fp16 tolerance of the fp32 graph"
    # and our runtime gives Polygraphy's fp32 numbers (same graph, same provider)
    import vlexport

    model = vlexport.load(tiny_artifact)
    fp32_iterations = results["fp32"]
    for feeds, iteration in zip(_feeds(tiny_artifact), fp32_iterations):
        np.testing.assert_allclose(model(**feeds).logits, iteration["logits"], rtol=0, atol=1e-6)


def test_polygraphy_detects_a_wrong_graph(tiny_artifact, tmp_path):
    """The comparison can fail: a graph with one weight changed must be flagged by Polygraphy."""
    import onnx
    from onnx import numpy_helper
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, CompareFunc

    model = onnx.load(str(tiny_artifact / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)) if t.data_type == 1 else 0)
    arr = numpy_helper.to_array(init).copy()
    arr *= 1.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    runners = [OnnxrtRunner(SessionFromOnnx(str(tiny_artifact / "model.onnx")), name="fp32"),
               OnnxrtRunner(SessionFromOnnx(str(tmp_path / "broken.onnx")), name="broken")]
    results = Comparator.run(runners, data_loader=_feeds(tiny_artifact, n=2))
    assert not bool(Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(atol=1e-4, rtol=1e-3)))
