"""Readable tables of an artifact's manifest (`vlexport inspect`)."""

from __future__ import annotations


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}"
    return str(v)


def manifest_tables(m: dict) -> list:
    from rich.table import Table

    tables = []
    t = Table(title=f"vlexport artifact: {m['architecture']} ({m['task']})", show_header=False)
    src = m["source"]
    for k, v in [("source", f"{src['model']} ({src['weights']} weights)" + (f" @ {src['revision']}" if src.get("revision") else "")),
                 ("created", m["created"]), ("vlexport", m["vlexport_version"]), ("format", m["format_version"]),
                 ("exporter", f"{m.get('exporter')} opset {m.get('opset')}"),
                 ("tools", ", ".join(f"{k} {v}" for k, v in m.get("tools", {}).items())),
                 ("build", f"{m.get('build', {}).get('seconds')} s, peak RSS {m.get('build', {}).get('peak_rss_mb')} MB"),
                 ("TensorRT", "engine built" if m.get("engines") else m.get("engine_skipped", "not requested"))]:
        t.add_row(k, str(v))
    tables.append(t)

    t = Table(title="inputs and outputs")
    for col in ("name", "kind", "dims", "dtype"):
        t.add_column(col)
    for i in m["inputs"]:
        t.add_row(i["name"], "input", str(tuple(i["dims"])), i["dtype"])
    for o in m["outputs"]:
        t.add_row(o["name"], "output", str(tuple(o["dims"])), o["dtype"])
    tables.append(t)

    t = Table(title="axis ranges (min / opt / max)")
    for col in ("axis", "min", "opt", "max"):
        t.add_column(col, justify="right" if col != "axis" else "left")
    for name, (lo, opt, hi) in m["axes"].items():
        t.add_row(name, str(lo), str(opt), str(hi))
    tables.append(t)

    t = Table(title="graphs and engines")
    for col in ("precision", "kind", "file", "MB", "notes"):
        t.add_column(col)
    for prec, g in m.get("graphs", {}).items():
        note = g.get("simplifier", {}).get("message", "") if prec == "fp32" else g.get("converter", g.get("method", ""))
        t.add_row(prec, "onnx", g["file"], f"{g['bytes'] / 2**20:.1f}", str(note))
    for prec, e in m.get("engines", {}).items():
        t.add_row(prec, "tensorrt", e["file"], f"{e.get('bytes', 0) / 2**20:.1f}",
                  f"TensorRT {e.get('tensorrt_version')} on {e.get('gpu')} (sm {e.get('compute_capability')})")
    tables.append(t)

    t = Table(title="validation")
    for col in ("check", "shapes/samples", "max abs err", "cosine", "top-1", "passed"):
        t.add_column(col)
    for key, v in m.get("validation", {}).items():
        if "worst" in v:
            err = max(w["max_abs"] for w in v["worst"].values())
            cos = min(w["cosine"] for w in v["worst"].values())
            t.add_row(f"{key} vs reference", str(v["shapes"]), _fmt(err), _fmt(cos), "", str(v["passed"]))
        else:
            top1 = ", ".join(f"{_fmt(x)}" for x in v.get("top1_agreement", {}).values())
            t.add_row(f"{key} vs fp32", str(v.get("samples")), "", _fmt(v.get("min_cosine")), top1, str(v["passed"]))
    tables.append(t)
    return tables
