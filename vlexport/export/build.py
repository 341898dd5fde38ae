"""`vlexport build`: reference model -> validated ONNX graphs (fp32, fp16, int8) -> TensorRT engines,
one set per component graph, written atomically into one artifact folder with its manifest.

Stages: load; per graph export, simplify (kept only when clearly faster), fp16 conversion, fp32
validation against PyTorch; then per graph fp16 validation, int8 quantization + validation, the
TensorRT engine + its validation (skipped with a one-line reason where TensorRT or a GPU is
missing). A failed validation fails the build and nothing is written. Generic: the family, its
description and its modules come from the registry.
"""

from __future__ import annotations

import gc
import json
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlexport import __version__
from vlexport._deps import package_versions, require
from vlexport.artifact import hash_files, new_manifest, onnx_entry
from vlexport.export.build_common import (input_kind, ort_runner, precision_note, real_inputs, simplify_note,
                                          tradeoff_note, worst_note)
from vlexport.export.build_int4 import build_streamed, int4_graph
from vlexport.fsutil import check_output_folder, staging_dir, write_json_atomic
from vlexport.progress import Stages
from vlexport.specs import AxisRange

TOOLS = ["torch", "onnx", "onnxscript", "onnxruntime", "onnxsim", "onnxslim", "tensorrt", "numpy", "tokenizers"]
# the simplified graph is kept only when it is at least this much faster, in most paired rounds
SIMPLIFY_MIN_GAIN = 0.10
SIMPLIFY_MIN_WINS = 0.8
# ... and by at least this much per call: sub-millisecond graphs (tiny models) differ by less than the
# timing noise of a loaded machine, so their choice would flip from build to build
SIMPLIFY_MIN_GAIN_MS = 0.5
# the ORT-fused fp32 graph is kept when this much faster (fusion gains are smaller than a simplifier's mistakes)
FUSE_MIN_GAIN = 0.04
# ... and not tried on graphs faster than this at the opt shape (tiny models: well under 1 ms, where the 0.5 ms
# a fusion must gain is out of reach). Trained-MiniLM VisualBERT (6.9 ms at B=1) gained 12% at B=1 and 5% at
# B=32 once its residual LayerNorms stayed unfused (vlexport.runtime.backends.onnxruntime.SLOW_CPU_FUSIONS)
FUSE_MIN_MS = 5.0


@dataclass
class BuildOptions:
    model: str
    out: Path | None = None
    task: str | None = None  # architecture or task name; default: config.json "architectures"
    random_weights: bool = False
    revision: str | None = None
    fp16: bool = False
    int8: bool = False
    int8_portable: bool = False  # int8 weights right on every CPU (7-bit or unsigned); else as this CPU needs
    int4: bool = False  # int4 weight-only MatMuls for the graphs a model writes itself (e.g. a Llama decoder)
    int4_block_size: int | None = None  # MatMulNBits block; None: 128 where it passes the gate, else 32 (int4_search)
    axes: dict[str, AxisRange] = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # the family's build options (e.g. with_alignment)
    simplify: bool = True
    fuse: str = "auto"  # ORT-fused fp32 graph: "auto" (kept when faster), "always" (kept when valid), "never"
    threads: int | None = None
    fp16_samples: int = 100
    int8_samples: int = 200
    onnx_only: bool = False  # `vlexport export`: fp32 graphs, validated, nothing else
    require_engine: bool = False
    engine_options: dict = field(default_factory=dict)  # workspace_gb, version_compatible, ...
    progress: bool = True
    compose: tuple | None = None  # (family name, {value name: value}): a model built from parts (Family.compose)
    companion: tuple | None = None  # (name, model id): a companion model built into <name>/ (Family.companion)
    labels: str | None = None  # a JSON file of class names (vlexport.labels)


def default_out(model: str) -> Path:
    name = Path(model.rstrip("/")).name or "model"
    return Path("engines") / name


def tool_versions() -> dict:
    return {"vlexport": __version__, **package_versions(TOOLS)}


CHOOSE_BUDGET_S = 60.0


def choose_graph(raw: Path, simplified: Path, graph, axes, threads, rounds: int = 7, runs: int = 3,
                 min_gain: float = SIMPLIFY_MIN_GAIN) -> dict:
    """Time both graphs interleaved at the opt shape; keep the simplified one only when its median
    is >= SIMPLIFY_MIN_GAIN faster and it wins >= SIMPLIFY_MIN_WINS of the rounds. A margin, not a
    race: the same build keeps the same graph from run to run unless the two are far apart."""
    from vlexport.runtime.backends.onnxruntime import make_session

    sizes = {n: r.opt for n, r in axes.items()}
    feeds = graph.make_inputs(sizes, np.random.default_rng(0), pad=True)
    # no spinning: two sessions' thread pools share the cores, and one busy-waiting after its call slowed the
    # other by up to 2x (trained-MiniLM VisualBERT at B=1: 11.1 and 12.3 ms spinning, 6.9 and 6.1 ms not)
    sessions = {k: make_session(p, threads, allow_spinning=False)
                for k, p in (("raw", raw), ("simplified", simplified))}
    first = []
    for s in sessions.values():
        t = time.perf_counter()
        s.run(None, feeds)
        first.append(time.perf_counter() - t)
    # a slow graph (seconds a call, e.g. a detector's per-region res5) gets fewer rounds, never fewer
    # than 3 (the choice stays a margin over interleaved rounds, within about CHOOSE_BUDGET_S seconds)
    call = max(min(first), 1e-6)
    if 2 * rounds * runs * call > CHOOSE_BUDGET_S:
        runs = 1
        rounds = max(3, min(rounds, int(CHOOSE_BUDGET_S / (2 * call))))
    times = {k: [] for k in sessions}
    for i in range(rounds):
        for k in (list(sessions) if i % 2 else list(sessions)[::-1]):
            t = time.perf_counter()
            for _ in range(runs):
                sessions[k].run(None, feeds)
            times[k].append((time.perf_counter() - t) / runs)
    raw_ms, simp_ms = (float(np.median(times[k])) * 1e3 for k in ("raw", "simplified"))
    wins = float(np.mean([s < r * (1 - min_gain) for r, s in zip(times["raw"], times["simplified"])]))
    keep = (simp_ms <= raw_ms * (1 - min_gain) and raw_ms - simp_ms >= SIMPLIFY_MIN_GAIN_MS
            and wins >= SIMPLIFY_MIN_WINS)
    return {"raw_ms": round(raw_ms, 3), "simplified_ms": round(simp_ms, 3), "wins": wins,
            "kept": "simplified" if keep else "raw",
            "rule": f"kept when >= {min_gain:.0%} and >= {SIMPLIFY_MIN_GAIN_MS} ms faster in "
                    f">= {SIMPLIFY_MIN_WINS:.0%} of {rounds} interleaved rounds"}


def profile_sizes(profiles, inputs) -> list[dict]:
    """Axis sizes of every TensorRT profile's min/opt/max shapes (for validating the engine there)."""
    out = []
    dims = {i["name"]: i["dims"] for i in inputs}
    for p in profiles:
        for k in range(3):
            sizes = {}
            for name, shapes in p.items():
                for d, n in zip(dims[name], shapes[k]):
                    if isinstance(d, str) and "+" not in d:
                        sizes[d] = int(n)
            if sizes not in out:
                out.append(sizes)
    return out


def build(model: str, out: Path | None = None, **kwargs) -> Path:
    """Build an artifact folder; returns its path. See BuildOptions for the keyword arguments."""
    opts = BuildOptions(model=model, out=out, **kwargs)
    for module in ("torch", "onnx", "onnxscript", "onnxruntime"):
        require(module, "vlexport build")  # name the missing piece before any work starts
    out = Path(opts.out or default_out(opts.model))
    check_output_folder(out)  # refuse before the work, not after it
    from vlexport.reference import from_pretrained
    from vlexport.runtime.backends.torch import graph_modules

    # stages per graph: export, simplify, fp32 validation (+ fp16 conversion, fp16 validation, engine,
    # int8); the graph count is known after loading, one graph is assumed until then
    per_graph = 3 + (opts.fuse != "never") + (not opts.onnx_only) * (2 * opts.fp16 + opts.int8 + opts.fp16
                                                                    + 2 * opts.int4)
    st = Stages(1 + per_graph, opts.progress)
    t0 = time.perf_counter()
    with st.stage(f"Loading {opts.model}" + (" (random weights)" if opts.random_weights else "")):
        if opts.compose:
            loaded = compose_model(opts)
        else:
            loaded = from_pretrained(opts.model, opts.task, random_weights=opts.random_weights, revision=opts.revision)
        family = loaded.family
        spec = family.describe(loaded.architecture, loaded.config, axes=opts.axes or None, **opts.options)
        processor = loaded.processor or family.load_processor(loaded.model_dir, loaded.weights, loaded.config)
    precisions = not opts.onnx_only
    st.total = 1 + len(spec.graphs) * per_graph
    count = getattr(loaded.model, "num_parameters", None)  # a model may hold some weights outside PyTorch
    count = count() if count else sum(p.numel() for p in loaded.model.parameters())
    st.note(f"{loaded.architecture} ({spec.task}), {count / 1e6:.1f}M "
            f"parameters; graphs {', '.join(g.name for g in spec.graphs)}; axes "
            + ", ".join(f"{k} {r.min}..{r.max}" for k, r in spec.axes.items()))
    if getattr(processor, "vocab_size", None) not in (None, getattr(loaded.config, "vocab_size", None)):
        st.note(f"warning: the tokenizer has {processor.vocab_size} tokens but the model's vocab_size is "
                f"{loaded.config.vocab_size}: put the model's own tokenizer.json or vocab.txt in its folder", "yellow")

    source = {"model": opts.model, "revision": opts.revision, "weights": loaded.weights, "seed": 0,
              "model_dir": str(loaded.model_dir.resolve()) if loaded.model_dir else None}
    if opts.compose:
        source["composed_from"] = opts.compose[1]
        # e.g. the projections of a dual encoder made from two tower checkpoints: the artifact says so
        source["random_parts"] = list(loaded.random_parts)
    from vlexport.labels import apply_labels

    labels_from = apply_labels(loaded.config, family, loaded.model_dir, opts.labels)
    manifest = new_manifest(spec, source, loaded.config.to_dict())
    if labels_from:
        manifest["labels_from"] = labels_from
        if labels_from.get("sha256"):
            st.note(f"label names from {labels_from['source']} ({len(loaded.config.id2label)} labels)")
    facts = getattr(loaded.model, "artifact_facts", dict)()  # values no graph computes (e.g. a logit scale)
    if facts:
        manifest["model_facts"] = facts
    manifest["tools"] = tool_versions()
    modules = graph_modules(loaded.model, [g.name for g in spec.graphs])
    runners = {}
    fused = {}  # graph name -> its validated ORT-fused fp32 graph (int8 may quantize it)

    with staging_dir(out) as stage, tempfile.TemporaryDirectory(prefix="vlexport-") as scratch:
        scratch = Path(scratch)
        for graph in spec.graphs:
            entry, axes, stem = manifest["graphs"][graph.name], spec.axes_for(graph), graph.file_stem
            module = modules[graph.name]
            written = hasattr(module, "write_onnx")  # a graph the model writes itself (e.g. layer by layer)
            if getattr(module, "streamed", False):  # too large for PyTorch here: written once, in int4
                build_streamed(graph, module, stage, manifest, opts, st)
                continue
            how = " (written by the model, not traced)" if written else ""
            with st.stage(f"Exporting '{graph.name}' to ONNX{how}"):
                from vlexport.export.onnx_export import export_onnx, name_output_axes, trace_sizes

                # each candidate lives in its own folder under the final name, so keeping one is a move
                raw = scratch / graph.name / "raw" / f"{stem}.onnx"
                raw.parent.mkdir(parents=True)
                if written:
                    facts = {**module.write_onnx(raw), "trace_sizes": trace_sizes(
                        {k: r for k, r in axes.items() if k in graph.axes_used()})}
                    name_output_axes(raw, graph)
                else:
                    facts = export_onnx(module, graph, axes, raw)
            entry["trace_sizes"] = facts["trace_sizes"]
            entry["exporter"] = facts["exporter"]
            manifest.update(opset=facts.get("opset", manifest.get("opset")), exporter=facts["exporter"])

            with st.stage(f"Simplifying '{graph.name}' (kept only when clearly faster on ONNX Runtime)"):
                from vlexport.export.simplify import simplify

                chosen, simp = raw, {"tool": "none", "message": "disabled (--no-simplify)", "kept": "raw"}
                if written:
                    simp["message"] = "not simplified: a written graph (already in its final form)"
                elif opts.simplify:
                    simplified = scratch / graph.name / "simplified" / f"{stem}.onnx"
                    simplified.parent.mkdir(parents=True)
                    tool, message = simplify(raw, simplified)
                    simp = {"tool": tool, "message": message, "kept": "raw"}
                    if tool != "none":
                        simp.update(choose_graph(raw, simplified, graph, axes, opts.threads))
                        if simp["kept"] == "simplified":
                            chosen = simplified
                        else:
                            simp["message"] = f"{tool} ran; the raw graph was kept (not clearly faster)"
                for f in chosen.parent.iterdir():
                    shutil.move(str(f), stage / f.name)
            st.note(simplify_note(simp))
            entry["onnx"]["fp32"] = onnx_entry(stage, f"{stem}.onnx", simplifier=simp)

            # fp16 conversion before validation: the fp32 session is not alive yet, which keeps the
            # build's peak memory lower (a full-size build stays under 4 GB)
            if opts.fp16 and precisions:
                with st.stage(f"Converting '{graph.name}' to mixed precision (fp16)"):
                    from vlexport.export.fp16 import convert_fp16

                    facts16 = convert_fp16(stage / f"{stem}.onnx", stage / f"{stem}.fp16.onnx",
                                           graph.fp16_keep_fp32_ops, graph.fp16_io)
                entry["onnx"]["fp16"] = onnx_entry(stage, f"{stem}.fp16.onnx", **facts16)

            from vlexport.export.validate import noise_note, shape_grid, torch_reference, validate_graph

            runners[graph.name] = ort_runner(stage / f"{stem}.onnx", opts.threads)
            n = len(shape_grid(axes, entry["trace_sizes"]))
            with st.stage(f"Validating '{graph.name}' fp32 against PyTorch on {n} unseen shapes", steps=n) as adv:
                rep = validate_graph(torch_reference(modules[graph.name]), runners[graph.name], graph, axes,
                                     entry["trace_sizes"], progress=adv)
            entry["validation"]["fp32"] = rep
            st.note(f"{rep['shapes']} shapes, worst max-abs error " + worst_note(rep["worst"]) + noise_note(rep))
            if opts.fuse != "never":
                if written:
                    st.total -= 1  # a written graph is in its final form
                else:
                    fused[graph.name] = _fused_graph(graph, modules[graph.name], stage, scratch, entry, axes, opts, st)
            if opts.int4 and precisions and written:  # while the model (the int4 reference's weights) is alive
                int4_graph(graph, module, stage, manifest, axes, runners[graph.name], opts, st, processor, runners)
        modules = loaded.model = None  # the reference is no longer needed: free its weights
        gc.collect()

        if precisions:
            for graph in (g for g in spec.graphs if g.name in runners):  # streamed graphs have no fp32 graph
                _reduced_precisions(graph, spec, manifest, stage, runners[graph.name], opts, st, processor, runners,
                                    fused.get(graph.name), scratch)

        (stage / "config.json").write_text(json.dumps(manifest["config"], indent=2) + "\n")
        processor.save_pretrained(stage)
        if opts.companion:
            manifest["companions"] = _build_companion(opts, family, loaded.config, stage, st)
        manifest["build"] = {"seconds": round(time.perf_counter() - t0, 1), "stage_seconds":
                             {k: round(v, 2) for k, v in st.timings.items()},
                             "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                             "stage_peak_rss_mb": dict(st.peak_mb)}
        manifest["files"] = hash_files(stage)
        manifest["complete"] = True
        write_json_atomic(stage / "manifest.json", manifest)
    if opts.progress:
        from rich.console import Console
        from rich.text import Text

        Console(stderr=True).print(Text(f"Built {out} in {manifest['build']['seconds']}s "
                                        f"(peak RSS {manifest['build']['peak_rss_mb']} MB)", style="bold"))
    return out


def _build_companion(opts: BuildOptions, family, config, stage: Path, st: Stages) -> dict:
    """The companion model (e.g. VisualBERT's region detector) built into stage/<name>/ with the same
    precisions; its files are hashed with the artifact's. Returns the manifest's `companions` entry."""
    from vlexport.artifact import Artifact
    from vlexport.errors import ConfigError

    name, model_id = opts.companion
    if family.companion is None or family.companion.name != name:
        raise ConfigError(f"--{name} does not apply to {family.name} models")
    st.note(f"building the {name} model {model_id} into {name}/", "bold")
    build(model_id, stage / name, random_weights=opts.random_weights, revision=None, fp16=opts.fp16,
          threads=opts.threads, onnx_only=opts.onnx_only, progress=opts.progress,
          engine_options=opts.engine_options, require_engine=opts.require_engine)
    family.companion.run_check(config, Artifact(stage / name))
    return {name: {"folder": name, "model": model_id}}


def _fused_graph(graph, module, stage: Path, scratch: Path, entry: dict, axes, opts: BuildOptions, st: Stages):
    """The ORT-fused copy of the fp32 graph (MultiHeadAttention, BiasGelu; residual LayerNorms left unfused),
    validated against PyTorch on the fp32 shape grid and kept only when faster (`--fuse always`: when valid).
    Returns the validated fused graph's path (in the stage when kept, else in scratch: int8 may still gain from
    it), or None."""
    from vlexport.errors import ValidationError
    from vlexport.export.fuse import fuse_for_ort
    from vlexport.export.validate import shape_grid, torch_reference, validate_graph

    stem = graph.file_stem
    n = len(shape_grid(axes, entry["trace_sizes"]))
    simp = entry["onnx"]["fp32"].get("simplifier", {})
    plain_ms = simp.get("simplified_ms" if simp.get("kept") == "simplified" else "raw_ms")
    if opts.fuse == "auto" and plain_ms is not None and plain_ms < FUSE_MIN_MS:
        with st.stage(f"Fusing '{graph.name}' for ONNX Runtime: skipped"):
            st.note(f"not fused: {plain_ms} ms per call at the opt shape (< {FUSE_MIN_MS} ms, where fusion cannot "
                    f"gain the 0.5 ms it must; --fuse always to fuse anyway)")
        return
    with st.stage(f"Fusing '{graph.name}' for ONNX Runtime (attention, BiasGelu) and validating on "
                  f"{n} unseen shapes", steps=n) as adv:
        fused = scratch / graph.name / "fused" / f"{stem}.ort.onnx"
        facts = fuse_for_ort(stage / f"{stem}.onnx", fused)
        if not facts["ops"]:
            st.note("no fusion matched; the plain fp32 graph serves ONNX Runtime")
            return None
        try:
            rep = validate_graph(torch_reference(module), ort_runner(fused, opts.threads), graph, axes,
                                 entry["trace_sizes"], progress=adv)
        except ValidationError as exc:  # a fusion that changes the numbers is dropped, not shipped
            st.note(f"fused graph dropped: {exc}", "yellow")
            return None
        timing = choose_graph(stage / f"{stem}.onnx", fused, graph, axes, opts.threads, min_gain=FUSE_MIN_GAIN)
    keep = opts.fuse == "always" or timing["kept"] == "simplified"
    what = ", ".join(f"{v} {k}" for k, v in facts["ops"].items())
    st.note(f"fused ({what}): plain {timing['raw_ms']} ms vs fused {timing['simplified_ms']} ms at the opt shape; "
            + ("kept for ONNX Runtime" if keep else f"not kept ({timing['rule']})"))
    if not keep:
        return fused
    for f in fused.parent.iterdir():
        shutil.move(str(f), stage / f.name)
    worst = max(w["max_abs_err"] for w in rep["worst"].values())
    entry["onnx"]["fp32"]["ort_fused"] = onnx_entry(
        stage, f"{stem}.ort.onnx", **facts, timing={"plain_ms": timing["raw_ms"], "fused_ms": timing["simplified_ms"],
                                                     "rule": timing["rule"], "forced": opts.fuse == "always"},
        validation={"shapes": rep["shapes"], "max_abs_err": worst, "passed": rep["passed"]})
    return stage / f"{stem}.ort.onnx"


def _int8_source(graph, plain: Path, fused: Path | None, scratch: Path, axes, opts: BuildOptions, st: Stages):
    """The fp32 graph int8 quantizes: the ORT-fused one when its plain int8 copy is faster than the plain
    graph's by the fusion margin (FUSE_MIN_GAIN; `--fuse always`: whenever it validated), else the plain one.
    The int8 graph runs on ONNX Runtime only, so its com.microsoft ops cost nothing elsewhere, and every
    candidate is gated against the plain fp32 graph as before. Fusion gains more in int8 than in fp32: the
    MatMuls shrink, attention and GELU do not (trained-MiniLM VisualBERT, AVX-512 VNNI EPYC, B=1: fp32 1.08x,
    plain int8 1.12x, per-token int8 1.03x). Returns (path, manifest facts or None)."""
    from vlexport.export.quantize import quantize_int8

    if fused is None:
        return plain, None
    if opts.fuse == "always":
        return fused, {"graph": "fused", "rule": "--fuse always"}
    reduce_range = True if opts.int8_portable else None
    st.total += 1  # a stage the count made at the start did not know of
    with st.stage(f"Timing plain int8 of '{graph.name}' from the plain and the fused fp32 graph"):
        probes = scratch / graph.name / "int8-source"
        for name, src in (("plain", plain), ("fused", fused)):
            quantize_int8(src, probes / name / "probe.int8.onnx", reduce_range=reduce_range,
                          keep_output_layers=not graph.int8_quantize_heads)
        timing = choose_graph(probes / "plain" / "probe.int8.onnx", probes / "fused" / "probe.int8.onnx", graph, axes,
                              opts.threads, min_gain=FUSE_MIN_GAIN)
        shutil.rmtree(probes)
        chosen = "fused" if timing["kept"] == "simplified" else "plain"
        st.note(f"int8 from the {chosen} fp32 graph: plain int8 {timing['raw_ms']} ms from the plain graph, "
                f"{timing['simplified_ms']} ms from the fused one, at the opt shape ({timing['rule']})")
    return (fused if chosen == "fused" else plain), {
        "graph": chosen, "plain_int8_ms": timing["raw_ms"], "fused_int8_ms": timing["simplified_ms"],
        "rule": timing["rule"]}


def compose_model(opts: BuildOptions):
    """The Loaded model of a family's composition (e.g. --vision-model A --text-model B)."""
    from vlexport import families

    name, values = opts.compose
    _, _, load = families.get(name).compose.load()(values, opts.random_weights, opts.revision)
    return load()


def _reduced_precisions(graph, spec, manifest, stage: Path, fp32, opts: BuildOptions, st: Stages, processor=None,
                        runners=None, fused: Path | None = None, scratch: Path | None = None):
    """fp16 validation, int8 quantization + validation, and the TensorRT engine of one graph."""
    from vlexport.export.validate import int8_gate, precision_cases, validate_precision

    entry, axes, stem = manifest["graphs"][graph.name], spec.axes_for(graph), graph.file_stem
    seen = entry["trace_sizes"]
    real = real_inputs(graph, processor, runners)
    samples = min(opts.fp16_samples, graph.precision_samples or opts.fp16_samples)
    if opts.fp16:
        n = len(precision_cases(axes, samples, seen))
        with st.stage(f"Validating '{graph.name}' fp16 on {n} {input_kind(real)} inputs over the whole range (ORT CPU)",
                      steps=n) as adv:
            rep = validate_precision(fp32, ort_runner(stage / f"{stem}.fp16.onnx", opts.threads), graph, axes,
                                     f"the fp16 '{graph.name}' graph", n_samples=samples,
                                     min_cosine=graph.fp16_cosine, seen=seen, progress=adv, make_inputs=real)
        entry["validation"]["fp16"] = rep
        st.note(precision_note("fp16", rep))

    if opts.int8 and graph.int8_refused:
        st.note(f"int8 not built for '{graph.name}': {graph.int8_refused}", "yellow")
        st.total -= 1
    elif opts.int8:
        gate = {**int8_gate(manifest["source"]["weights"]), "min_cosine": graph.int8_cosine}
        source, source_facts = _int8_source(graph, stage / f"{stem}.onnx", fused, scratch, axes, opts, st)
        n = len(precision_cases(axes, opts.int8_samples, seen))
        with st.stage(f"Quantizing '{graph.name}' to int8 and validating on {n} {input_kind(real)} inputs "
                      f"(more trials if it misses the gate or a held-out set)") as adv:
            from vlexport.export.int8_search import quantize_gated

            facts, rep = quantize_gated(source, stage / f"{stem}.int8.onnx", graph, axes, fp32, gate,
                                        runner=lambda p: ort_runner(p, opts.threads), samples=opts.int8_samples,
                                        seen=seen, threads=opts.threads, make_inputs=real,
                                        keep_weight_shapes=graph.int8_keep_fp32_weights, progress=adv,
                                        reduce_range=True if opts.int8_portable else None,
                                        quantize_heads=graph.int8_quantize_heads,
                                        note=lambda m: st.note(m, "yellow"))
        if source_facts:
            facts["source_graph"] = source_facts
        entry["onnx"]["int8"] = onnx_entry(stage, f"{stem}.int8.onnx", **(facts or {}))
        entry["validation"]["int8"] = rep
        st.note(precision_note("int8", rep))
        if facts["search"]["base"] == "plain_heads":
            st.note(f"the output heads are int8 too ({', '.join(facts.get('untied_heads') or []) or 'none tied'} "
                    f"untied from the token embedding): they passed the gate")
        if facts["search"]["nodes"] or len(facts["search"]["trials"]) > 1 or facts["search"]["base"] == "per_token":
            st.note(tradeoff_note(facts["search"]))

    if opts.fp16:
        from vlexport.tensorrt.engine import maybe_build_engine

        with st.stage(f"Building the TensorRT engine of '{graph.name}'"):
            engine, message = maybe_build_engine(stage, manifest, graph.name, require=opts.require_engine,
                                                 options=opts.engine_options)
        st.note(message)
        if not engine:
            manifest["engine_skipped"] = message
            return
        entry["engines"]["fp16"] = engine
        from vlexport.tensorrt.profiles import profiles_from_json

        extra = profile_sizes(profiles_from_json(engine["profiles"]), entry["inputs"])
        st.total += 1
        n = len(precision_cases(axes, min(opts.fp16_samples, graph.precision_samples or opts.fp16_samples), seen,
                                extra))
        with st.stage(f"Validating the TensorRT engine of '{graph.name}' against fp32 on {n} inputs "
                      f"(every profile's min/opt/max included)", steps=n) as adv:
            entry["validation"]["tensorrt_fp16"] = _validate_engine(stage, manifest, graph, axes, fp32, seen, extra,
                                                                    opts, adv)


def _validate_engine(stage: Path, manifest: dict, graph, axes, fp32, seen, extra, opts: BuildOptions, progress):
    """The engine against the fp32 graph, with the fp16 graph's thresholds (fails the build)."""
    from vlexport.artifact import Artifact
    from vlexport.export.validate import validate_precision
    from vlexport.runtime.backends.tensorrt import TensorRTBackend

    # a provisional manifest, never marked complete: only this build opens the staging folder
    write_json_atomic(stage / "manifest.json", {**manifest, "files": hash_files(stage)})
    backend = TensorRTBackend(Artifact(stage, allow_incomplete=True), graph.name, precision="fp16")
    try:
        samples = min(opts.fp16_samples, graph.precision_samples or opts.fp16_samples)
        return validate_precision(fp32, backend.run, graph, axes, f"the TensorRT '{graph.name}' engine",
                                  n_samples=samples, min_cosine=graph.fp16_cosine, seen=seen,
                                  extra_sizes=extra, progress=progress)
    finally:
        backend.close()
