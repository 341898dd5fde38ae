"""Pieces the build's stages share: an ONNX Runtime runner for validation, the realistic input maker of a
graph, and the one-line notes the build prints (and the manifest's scalar facts)."""

from __future__ import annotations


def ort_runner(path, threads):
    from vlexport.runtime.backends.onnxruntime import cast_feeds, fp16_inputs, make_session

    # no spinning: a build holds several sessions at once (every graph's fp32 runner, the candidates it times
    # beside them), and one busy-waiting after its call slows the next (vlexport.export.build.choose_graph)
    sess = make_session(path, threads, allow_spinning=False)
    names = [o.name for o in sess.get_outputs()]
    fp16 = fp16_inputs(sess)  # fp16-I/O graphs (a KV cache) take the same fp32 validation inputs
    return lambda feeds: dict(zip(names, sess.run(names, cast_feeds(feeds, fp16))))


def real_inputs(graph, processor, runners: dict | None = None):
    """The graph's realistic input maker bound to the model's processor (and to the fp32 runners of the
    graphs it names in real_inputs_use), or None (then random inputs)."""
    if graph.make_real_inputs is None or processor is None:
        return None
    if graph.real_inputs_use:
        runners = runners or {}
        if not all(n in runners for n in graph.real_inputs_use):
            return None  # (a streamed graph's inputs) the graphs it needs were not built in fp32

        def make(sizes, rng, pad):
            return graph.make_real_inputs(sizes, rng, pad, processor, run=lambda name, feeds: runners[name](feeds))
    else:
        def make(sizes, rng, pad):
            return graph.make_real_inputs(sizes, rng, pad, processor)

    make.kind = "realistic"
    return make


def input_kind(real) -> str:
    return "realistic" if real is not None else "random"


def scalar_facts(facts: dict) -> dict:
    """A writer's facts that belong in the manifest's graph entry (plain values only)."""
    # not the file names nor where the writer wrote them (a staging path): the entry names its own files
    return {k: v for k, v in (facts or {}).items() if isinstance(v, (str, int, float, bool)) and k != "file"
            and not k.endswith("_path")}


def precision_note(label, rep) -> str:
    top1 = ", ".join(f"{k} {v:.3f}" for k, v in rep["top1_agreement"].items())
    held = "".join(f"; held-out set {h['seed']}: worst cosine {h['min_cosine']:.6f}"
                   + ("" if h["passed"] else " (missed: searched again with it)")
                   for h in rep.get("held_out", ()) if h["min_cosine"] is not None)
    return (f"{label} vs fp32 on {rep['cases']} inputs up to {rep['largest']}: worst per-row cosine "
            f"{rep['min_cosine']:.6f}" + (f", top-1 agreement {top1}" if top1 else "") + ", no NaN/inf" + held)


def worst_note(worst: dict, shown: int = 4) -> str:
    """The largest errors first (a decoder has 61 outputs: the note names the 4 worst and counts the rest)."""
    order = sorted(worst, key=lambda k: worst[k]["max_abs_err"], reverse=True)
    rest = f" (and {len(order) - shown} more outputs, all smaller)" if len(order) > shown else ""
    return ", ".join(f"{k} {worst[k]['max_abs_err']:.2e}" for k in order[:shown]) + rest


def moved_note(moved: list, label: str) -> str:
    names = [g["name"] for g in moved]
    return f"; {len(names)} projection(s) {label}: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}" \
        if names else ""


def simplify_note(simp: dict) -> str:
    if "raw_ms" not in simp:
        return simp["message"]
    what = simp["message"]
    return (f"{what}: raw {simp['raw_ms']} ms vs simplified {simp['simplified_ms']} ms at the opt shape "
            f"({simp['rule']})")


def tradeoff_note(search: dict) -> str:
    rows = []
    for t in search["trials"]:
        base = {"per_token": "per-token int8", "plain_heads": "plain int8, output heads too"}.get(t.get("base"),
                                                                                                  "plain int8")
        what = (f"{base} + {t['fp32']} fp32 nodes" if t.get("base") == "per_token" and t["fp32"] else
                f"{t['accurate_int8']} accurate-int8 + {t['fp32']} fp32 nodes" if t["accurate_int8"] or t["fp32"]
                else base)
        cos = f"{t['min_cosine']:.4f}" if t["min_cosine"] is not None else "-"
        top1 = ", ".join(f"{v:.3f}" for v in (t["top1"] or {}).values()) or "-"
        speed = (f"{t['fp32_ms_at_opt_b1'] / t['ms_at_opt_b1']:.2f}x fp32 speed" if t["ms_at_opt_b1"]
                 else "not timed")  # a plain graph that passed needs no trade-off
        sets = f", {t['validation_sets']} validation sets" if t.get("validation_sets", 1) > 1 else ""
        rows.append(f"{what}: worst cosine {cos}, top-1 {top1}, {speed}{sets}{' (passes)' if t['passed'] else ''}")
    kept = ", ".join(f"{n['name']} ({n['as']}, simulated error {n['rel_error']:.3f})" for n in search["nodes"])
    base = "per-token activations" if search.get("base") == "per_token" else "per-call activations"
    return ("int8 trade-off at the opt shape, batch 1:\n  " + "\n  ".join(rows)
            + f"\n  chosen: {base}" + (f"; {kept}" if kept else ""))
