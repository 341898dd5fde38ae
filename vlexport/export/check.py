"""`vlexport validate PATH`: every backend/precision of an artifact against its fp32 graph and,
where torch is installed, the PyTorch reference, on the shape grid and random inputs."""

from __future__ import annotations

from vlexport.artifact import Artifact
from vlexport.errors import ValidationError
from vlexport.export.validate import int8_gate, validate_graph, validate_precision


def _spec(art: Artifact):
    from types import SimpleNamespace

    from vlexport.export.visual_bert import _make_inputs

    cfg = SimpleNamespace(**{"type_vocab_size": 2, **art.config})
    with_alignment = any(i.name == "image_text_alignment" for i in art.inputs)
    return SimpleNamespace(
        axes=art.axes, output_names=[o.name for o in art.outputs], tolerance=1e-4,
        make_inputs=lambda sizes, rng, pad=True: _make_inputs(art.architecture, cfg, sizes, rng, pad, with_alignment))


def _runner(art, backend, precision):
    from vlexport.runtime.model import load

    model = load(art.path, backend=backend, precision=precision)
    return lambda feeds: model.backend.run(model.prepare(feeds)), model


def validate_artifact(path, backends=None, progress=True) -> dict:
    """Compare each (backend, precision) found in the artifact with the fp32 ORT graph, and the fp32
    graph with PyTorch when torch is installed. Prints a table; returns the figures."""
    from rich.console import Console
    from rich.table import Table

    from vlexport._deps import available

    art = Artifact(path)
    spec = _spec(art)
    seen = art.manifest.get("trace_sizes", {})
    fp32, _ = _runner(art, "onnxruntime", "fp32")
    checks = [("onnxruntime", p) for p in art.precisions if p != "fp32"]
    if art.manifest.get("engines"):
        from vlexport.runtime.backends import backend_class

        ok, why = backend_class("tensorrt").availability()
        checks += [("tensorrt", p) for p in art.manifest["engines"]] if ok else []
        if not ok and progress:
            Console(stderr=True).print(f"TensorRT engine not checked: {why}")
    if backends:
        checks = [c for c in checks if c[0] in backends or f"{c[0]}:{c[1]}" in backends]
    results, passed = {}, True
    if available("torch") and (not backends or "torch" in backends):
        try:
            ref, _ = _runner(art, "torch", "fp32")
            results["onnxruntime:fp32 vs torch"] = validate_graph(ref, fp32, spec, seen)
        except ValidationError as exc:
            results["onnxruntime:fp32 vs torch"] = {"passed": False, "error": str(exc)}
        except Exception as exc:  # the reference's source may be gone; say so and go on
            results["onnxruntime:fp32 vs torch"] = {"passed": None, "error": f"skipped: {exc}"}
    for backend, precision in checks:
        run, _ = _runner(art, backend, precision)
        label = f"{backend}:{precision} vs onnxruntime:fp32"
        kw = dict(n_samples=200, **int8_gate(art.manifest["source"]["weights"])) if precision == "int8" else {}
        try:
            results[label] = validate_precision(fp32, run, spec, f"{backend} {precision}", seen=seen, **kw)
        except ValidationError as exc:
            results[label] = {"passed": False, "error": str(exc)}
    t = Table(title=f"vlexport validate {art.path}")
    for col in ("comparison", "result", "figures"):
        t.add_column(col)
    for label, r in results.items():
        passed = passed and r.get("passed") is not False
        if "error" in r:
            figures = r["error"]
        elif "worst" in r:
            figures = ", ".join(f"{k}: max abs {v['max_abs']:.2e}" for k, v in r["worst"].items())
        else:
            figures = f"min cosine {r['min_cosine']:.5f}; top-1 " + ", ".join(
                f"{k} {v:.3f}" for k, v in r["top1_agreement"].items())
        t.add_row(label, {True: "pass", False: "FAIL", None: "skipped"}[r.get("passed")], figures)
    if progress:
        Console().print(t)
    return {"passed": passed, "results": results}
