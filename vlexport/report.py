"""Readable tables of an artifact's manifest (`vlexport inspect`). Every value from the manifest is
shown as text (never read as rich markup): the manifest is untrusted input."""

from __future__ import annotations


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}"
    return str(v)


def _simplifier(s: dict) -> str:
    if not s:
        return ""
    timing = f"{s.get('simplified_ms')} ms vs raw {s.get('raw_ms')} ms" if "raw_ms" in s else ""
    if s.get("kept") == "simplified":
        return f"simplified with {s.get('tool')}" + (f" ({timing})" if timing else "")
    # decided by `kept`, not by the timings being there: the tool's own message ("simplified with
    # onnxsim") was shown when a simplifier ran but the raw graph was kept without timings recorded
    if s.get("tool") not in (None, "", "none"):
        return f"raw graph kept ({s.get('tool')}" + (f": {timing})" if timing else " ran)")
    return str(s.get("message", "raw graph"))


def manifest_tables(m: dict) -> list:
    from rich.table import Table
    from rich.text import Text

    def T(x):
        return Text(str(x))

    tables = []
    t = Table(title=Text(f"vlexport artifact: {m.get('architecture')} ({m.get('task')})"), show_header=False)
    src = m.get("source") or {}
    engines = {g: e for g, ge in m.get("graphs", {}).items() for e in [ge.get("engines")] if e}
    for k, v in [("family", f"{m.get('family')} (pipeline {m.get('pipeline')})"),
                 ("source", f"{src.get('model')} ({src.get('weights')} weights)"
                  + (f" @ {src['revision']}" if src.get("revision") else "")),
                 ("created", m.get("created")), ("vlexport", m.get("vlexport_version")),
                 ("format", m.get("format_version")),
                 ("exporter", f"{m.get('exporter')} opset {m.get('opset')}"),
                 ("tools", ", ".join(f"{k} {v}" for k, v in (m.get("tools") or {}).items())),
                 ("build", f"{(m.get('build') or {}).get('seconds')} s, peak RSS "
                           f"{(m.get('build') or {}).get('peak_rss_mb')} MB"),
                 ("TensorRT", "engine built" if engines else m.get("engine_skipped", "not requested"))]:
        t.add_row(T(k), T(v))
    if m.get("options"):
        t.add_row(T("options"), T(", ".join(f"{k}={v}" for k, v in m["options"].items())))
    if src.get("composed_from"):
        t.add_row(T("composed"), T(", ".join(f"{k}={v}" for k, v in src["composed_from"].items())))
    if src.get("random_parts"):
        t.add_row(T("random parts"), T(", ".join(map(str, src["random_parts"])) + " (no checkpoint holds them: "
                                        "train before trusting similarities)"))
    if m.get("model_facts"):
        t.add_row(T("model facts"), T(", ".join(f"{k}={v}" for k, v in m["model_facts"].items())))
    tables.append(t)

    t = Table(title="axis ranges (min / opt / max)")
    for col in ("axis", "min", "opt", "max", "step"):
        t.add_column(col, justify="right" if col != "axis" else "left")
    for name, r in (m.get("axes") or {}).items():
        r = list(r)
        t.add_row(T(name), *(T(x) for x in r[:3]), T(r[3] if len(r) > 3 else 1))
    tables.append(t)

    for gname, g in (m.get("graphs") or {}).items():
        t = Table(title=Text(f"graph '{gname}': inputs and outputs"))
        for col in ("name", "kind", "dims", "dtype"):
            t.add_column(col)
        for i in g.get("inputs", []):
            t.add_row(T(i["name"]), T("input"), T(tuple(i["dims"])), T(i["dtype"]))
        for o in g.get("outputs", []):
            t.add_row(T(o["name"]), T("output" + (" (class scores)" if o.get("classes") else "")),
                      T(tuple(o["dims"])), T(o["dtype"]))
        tables.append(t)

        t = Table(title=Text(f"graph '{gname}': files"))
        for col in ("precision", "kind", "file", "MB", "notes"):
            t.add_column(col)
        for prec, e in (g.get("onnx") or {}).items():
            note = _simplifier(e.get("simplifier", {})) if prec == "fp32" else e.get("converter", e.get("quantizer", ""))
            if prec == "int8" and "reduce_range" in e:  # which CPUs it runs right on (quantize.int8_cpu_mismatch)
                from vlexport.export.quantize import int8_weights

                note += "; " + int8_weights(e)
            if prec == "int8" and e.get("source_graph", {}).get("graph") == "fused":
                note += "; quantized from the ORT-fused fp32 graph"
            if prec == "int8" and (e.get("search") or {}).get("base") == "plain_heads":
                note += "; output heads int8 too"
            elif prec == "int8" and (e.get("search") or {}).get("trials", [{}])[0].get("base") == "plain_heads":
                note += "; output heads kept fp32 (int8 heads missed the gate)"
            if prec == "int4" and e.get("block_size"):  # weight-only MatMulNBits (int4_search, build_streamed)
                note += f"{'; ' if note else ''}{e.get('bits', 4)}-bit weights, block {e['block_size']}"
            t.add_row(T(prec), T("onnx"), T(e.get("file")), T(f"{e.get('bytes', 0) / 2**20:.1f}"), T(note))
        for prec, e in (g.get("engines") or {}).items():
            t.add_row(T(prec), T("tensorrt"), T(e.get("file")), T(f"{e.get('bytes', 0) / 2**20:.1f}"),
                      T(f"TensorRT {e.get('tensorrt_version')} on {e.get('gpu')} (sm {e.get('compute_capability')})"))
        tables.append(t)

        search = ((g.get("onnx") or {}).get("int8") or {}).get("search") or {}
        per_token = search.get("base") == "per_token"
        if search.get("nodes"):
            how = ("per-token activation scales chosen, these kept fp32" if per_token else
                   f"{search.get('fallback')} chosen for the most sensitive")
            t = Table(title=Text(f"graph '{gname}': int8 nodes not on the plain dynamic kernel (plain int8 missed "
                                 f"the gate; {how})"))
            for col in ("node", "runs as", "simulated int8 error", "input outlier ratio"):
                t.add_column(col)
            for n in search["nodes"]:
                t.add_row(T(n["name"]), T(n["as"]), T(_fmt(n.get("rel_error"))), T(_fmt(n.get("outlier_ratio"))))
            tables.append(t)
        if len(search.get("trials", [])) > 1:  # plain int8 missed: the candidates the search tried
            base = "per-token activations" if per_token else "per-call activations"
            t = Table(title=Text(f"graph '{gname}': int8 trade-off (every candidate tried, opt shape, batch 1; "
                                 f"chosen: {base})"))
            for col in ("activations", "accurate int8", "fp32", "worst row cosine", "top-1", "speed vs fp32",
                        "validation sets", "passed"):
                t.add_column(col)
            for r in search["trials"]:
                speed = r["fp32_ms_at_opt_b1"] / r["ms_at_opt_b1"] if r.get("ms_at_opt_b1") else None
                kind = {"per_token": "per token", "plain_heads": "per call, heads int8"}.get(r.get("base"), "per call")
                t.add_row(T(kind), T(r.get("accurate_int8")),
                          T(r.get("fp32")), T(_fmt(r.get("min_cosine"))),
                          T(", ".join(_fmt(x) for x in (r.get("top1") or {}).values())),
                          T(f"{speed:.2f}x" if speed else ""), T(r.get("validation_sets", 1)), T(r.get("passed")))
            for h in search.get("held_out", ()):  # the chosen graph on a held-out set
                t.add_row(T(f"held-out set {h['seed']}"), T(""), T(""), T(_fmt(h.get("min_cosine"))),
                          T(", ".join(_fmt(x) for x in (h.get("top1") or {}).values())), T(""), T(""),
                          T(h["passed"]))
            tables.append(t)

        tables += _int4_tables(gname, g)

        t = Table(title=Text(f"graph '{gname}': validation"))
        for col in ("check", "shapes/cases", "largest", "max abs err", "worst row cosine", "top-1", "passed"):
            t.add_column(col)
        for key, v in (g.get("validation") or {}).items():
            if "worst" in v:
                err = max(w["max_abs_err"] for w in v["worst"].values())
                cos = min(w["cosine_min"] for w in v["worst"].values())
                t.add_row(T(f"{key} vs reference"), T(v.get("shapes")), T(""), T(_fmt(err)), T(_fmt(cos)), T(""),
                          T(v.get("passed")))
            else:
                top1 = ", ".join(_fmt(x) for x in v.get("top1_agreement", {}).values())
                t.add_row(T(f"{key} vs fp32"), T(v.get("cases")), T(v.get("largest", "")), T(""),
                          T(_fmt(v.get("min_cosine"))), T(top1), T(v.get("passed")))
        tables.append(t)
    return tables


SHOWN = 30  # rows of a long list of projections (the manifest keeps them all)


def _int4_tables(gname: str, g: dict) -> list:
    """The int4 search (vlexport.export.int4_search): the projections moved off int4 and every trial; kept
    in onnx.int4.search when the graph was built, in validation.int4.search when int4 was refused."""
    from rich.table import Table
    from rich.text import Text

    def T(x):
        return Text(str(x))

    streamed = ((g.get("validation") or {}).get("int4") or {}).get("trials") or []
    if len(streamed) > 1:  # a streamed graph's search: whole graphs, the fewest bits first (build_streamed)
        t = Table(title=Text(f"graph '{gname}': streamed weight-only trials (the first that passes is kept)"))
        for col in ("bits", "block", "worst row cosine", "passed", "why"):
            t.add_column(col)
        for r in streamed:
            t.add_row(T(r.get("bits")), T(r.get("block_size")), T(_fmt(r.get("min_cosine"))), T(r.get("passed")),
                      T(r.get("why", "")[:80]))
        return [t]
    search = (((g.get("onnx") or {}).get("int4") or {}).get("search")
              or ((g.get("validation") or {}).get("int4") or {}).get("search") or {})
    if not search.get("trials") or len(search["trials"]) < 2:
        return []
    out = []
    moved = search.get("eight_bit", []) + search.get("fp32", [])
    refused = ((g.get("validation") or {}).get("int4") or {}).get("refused")
    if moved:
        t = Table(title=Text(f"graph '{gname}': projections not in int4 (plain int4 missed the gate)"))
        for col in ("projection", "runs as", "simulated error (of the bits it left)"):
            t.add_column(col)
        for n in moved[:SHOWN]:
            t.add_row(T(n["name"]), T(n["as"]), T(_fmt(n.get("rel_error"))))
        if len(moved) > SHOWN:
            t.add_row(T(f"... and {len(moved) - SHOWN} more (manifest: search)"), T(""), T(""))
        out.append(t)
    title = f"graph '{gname}': int4 trials" + (f" (refused: {refused})" if refused else "")
    t = Table(title=Text(title))
    for col in ("tier", "block", "8-bit", "fp32", "worst row cosine", "top-1", "validation sets", "passed"):
        t.add_column(col)
    for r in search["trials"]:
        t.add_row(T(r.get("tier")), T(r.get("block_size") or ""), T(r.get("eight_bit")), T(r.get("fp32")),
                  T(_fmt(r.get("min_cosine"))), T(", ".join(_fmt(x) for x in (r.get("top1") or {}).values())),
                  T(r.get("validation_sets", 1)), T(r.get("passed")))
    for h in search.get("held_out", ()):  # the chosen graph on a held-out set
        t.add_row(T(f"held-out set {h['seed']}"), T(h.get("block_size") or ""), T(""), T(""),
                  T(_fmt(h.get("min_cosine"))), T(""), T(""), T(h["passed"]))
    out.append(t)
    return out
