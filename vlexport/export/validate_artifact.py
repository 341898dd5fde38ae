"""`vlexport validate PATH`: every backend/precision of an artifact against its fp32 graphs and, where
torch is installed, the fp32 graphs against the PyTorch reference, with the build's own grids and
thresholds (the description is rebuilt from the manifest by the family registry).

Checks: "torch" (fp32 ONNX vs PyTorch), "onnxruntime:fp16", "onnxruntime:int8", "tensorrt:fp16";
"onnxruntime" / "tensorrt" mean all of theirs. By default every check the artifact has is run and
one that cannot run here is reported as skipped with the reason; a check asked for by name that
cannot run is a failure, and so is an exception inside any comparison.
"""

from __future__ import annotations

from vlexport.errors import ConfigError

KNOWN = ("torch", "onnxruntime", "tensorrt")


def _parse(requested):
    out = []
    for r in requested or ():
        backend, _, precision = r.partition(":")
        if backend not in KNOWN or (precision and precision not in ("fp32", "fp16", "int8", "int4")):
            raise ConfigError(f"unknown check '{r}'; use torch, onnxruntime[:fp16|:int8] or tensorrt[:fp16]")
        out.append((backend, precision or None))
    return out


def _planned(art, requested):
    """[(label, backend, precision, reason it cannot run or None, asked for by name)]"""
    from vlexport._deps import available
    from vlexport.runtime.backends import backend_class

    graphs = art.graph_names
    weights = (art.manifest.get("source") or {}).get("weights")
    plan = []
    precisions = sorted({p for g in graphs for p in art.precisions(g)} - {"fp32"})
    engines = sorted({p for g in graphs for p in art.engine_precisions(g)})
    torch_why = None if available("torch") else "torch is not installed"
    plan.append(("onnxruntime:fp32 vs torch", "torch", "fp32", torch_why))
    for p in precisions:
        plan.append((f"onnxruntime:{p} vs onnxruntime:fp32", "onnxruntime", p, None))
    ok, why = backend_class("tensorrt").availability()
    for p in engines or (["fp16"] if any(b == "tensorrt" for b, _ in requested) else []):
        reason = None if ok else why
        if not engines:
            reason = art.manifest.get("engine_skipped") or "the artifact has no TensorRT engine"
        plan.append((f"tensorrt:{p} vs onnxruntime:fp32", "tensorrt", p, reason))
    if requested:
        chosen = []
        for label, backend, precision, reason in plan:
            if any(b == backend and (p is None or p == precision) for b, p in requested):
                chosen.append((label, backend, precision, reason, True))
        for b, p in requested:
            if b == "onnxruntime" and p and p not in precisions and p != "fp32":
                chosen.append((f"onnxruntime:{p} vs onnxruntime:fp32", b, p, f"the artifact has no {p} graph", True))
        return chosen, weights
    return [(*row, False) for row in plan], weights


def validate_artifact(path, backends=None, reference: str | None = None, progress: bool = True,
                      table: bool = True) -> dict:
    """Run the checks (progress on stderr); print the result table; return {"passed", "results"}."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    import vlexport
    from vlexport import families
    from vlexport.artifact import Artifact
    from vlexport.export.validate import int4_gate, int8_gate, validate_graph, validate_precision
    from vlexport.progress import Stages

    requested = _parse(backends)
    art = Artifact(path)
    spec = families.describe_artifact(art)
    fp32 = vlexport.load(art.path, backend="onnxruntime", precision="fp32")
    plan, weights = _planned(art, requested)
    if weights == "checkpoint" and reference is None:
        plan = [(label, b, p, reason or ("pass --reference <checkpoint folder or hub id> to compare with PyTorch"
                                         if b == "torch" else None), asked)
                for label, b, p, reason, asked in plan]
    results = {}
    st = Stages(len(plan), progress)
    for label, backend, precision, reason, asked in plan:
        if reason is not None:
            results[label] = {"passed": False if asked else None, "error": f"could not run: {reason}"}
            continue
        try:
            with st.stage(f"Checking {label}"):
                if backend == "torch":
                    ref = vlexport.load(art.path, backend="torch", reference=reference)
                    results[label] = _per_graph(spec, art, lambda g, a: validate_graph(
                        ref.backends[g].run, fp32.backends[g].run, spec.graph(g), a,
                        art.graph_entry(g).get("trace_sizes", {})))
                else:
                    cand = vlexport.load(art.path, backend=backend, precision=precision)
                    def kw(g):  # the build's gates: int8 with the graph's own cosine threshold; int4 as int8
                        if precision not in ("int8", "int4"):  # for checkpoints, reported for random weights
                            return {}
                        cos = spec.graph(g).int8_cosine
                        gate = int4_gate(weights, cos) if precision == "int4" else {**int8_gate(weights),
                                                                                     "min_cosine": cos}
                        return dict(n_samples=200, **gate)

                    results[label] = _per_graph(spec, art, lambda g, a: validate_precision(
                        fp32.backends[g].run, cand.backends[g].run, spec.graph(g), a, f"{backend} {precision} '{g}'",
                        seen=art.graph_entry(g).get("trace_sizes", {}), **kw(g)))
        except Exception as exc:  # a failed gate, or anything else going wrong inside a comparison
            results[label] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
    t = Table(title=f"vlexport validate {escape(str(art.path))}")
    for col in ("comparison", "result", "figures"):
        t.add_column(col)
    passed = True
    for label, r in results.items():
        passed = passed and r.get("passed") is not False
        t.add_row(label, {True: "pass", False: "FAIL", None: "skipped"}[r.get("passed")], escape(_figures(r)))
    if table:
        Console().print(t)
    return {"passed": passed, "results": results}


def _per_graph(spec, art, check) -> dict:
    reports = {g: check(g, spec.axes_for(spec.graph(g))) for g in art.graph_names}
    return {"passed": all(r["passed"] for r in reports.values()), "graphs": reports}


def _figures(r: dict) -> str:
    if "error" in r:
        return r["error"]
    parts = []
    for g, rep in r["graphs"].items():
        if "worst" in rep:
            parts.append(f"{g}: " + ", ".join(f"{k} max abs {v['max_abs_err']:.2e}" for k, v in rep["worst"].items()))
        else:
            top1 = ", ".join(f"{k} {v:.3f}" for k, v in rep["top1_agreement"].items())
            parts.append(f"{g}: worst row cosine {rep['min_cosine']:.5f}" + (f"; top-1 {top1}" if top1 else ""))
    return "; ".join(parts)
