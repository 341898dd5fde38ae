"""`vlexport build`: reference model -> validated ONNX graphs (fp32, fp16, int8) -> TensorRT engine,
written atomically into one artifact folder with its manifest.

Stages: load, export, simplify (keep the faster graph), validate fp32 against PyTorch on a grid
of unseen shapes, fp16 graph + validation, int8 graph + validation, TensorRT engine (skipped
with a one-line reason where TensorRT or a GPU is missing). A failed validation fails the build.
"""

from __future__ import annotations

import datetime
import gc
import json
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlexport import ARTIFACT_FORMAT_VERSION, __version__
from vlexport._deps import package_versions, require
from vlexport.artifact import file_entry, spec_to_json, staging_dir, write_json_atomic
from vlexport.progress import Stages
from vlexport.tasks import AxisRange

TOOLS = ["torch", "onnx", "onnxscript", "onnxruntime", "onnxsim", "onnxslim", "tensorrt", "numpy", "tokenizers"]


@dataclass
class BuildOptions:
    model: str
    out: Path | None = None
    task: str | None = None  # architecture or task name; default: config.json "architectures"
    random_weights: bool = False
    revision: str | None = None
    fp16: bool = False
    int8: bool = False
    axes: dict[str, AxisRange] = field(default_factory=dict)
    with_alignment: bool = False
    simplify: bool = True
    threads: int | None = None
    fp16_samples: int = 100
    int8_samples: int = 200
    onnx_only: bool = False  # `vlexport export`: fp32 graph, validated, nothing else
    require_engine: bool = False
    engine_options: dict = field(default_factory=dict)  # workspace_gb, version_compatible, ...
    progress: bool = True


def default_out(model: str) -> Path:
    name = Path(model.rstrip("/")).name or "model"
    return Path("engines") / name


def tool_versions() -> dict:
    return {"vlexport": __version__, **package_versions(TOOLS)}


def _time_graph(path: Path, spec, threads, repeats: int = 8) -> float:
    """Median latency (s) of a graph on ORT at the opt shape (batch 1)."""
    from vlexport.runtime.backends.onnxruntime import make_session

    sess = make_session(path, threads)
    sizes = {n: r.opt for n, r in spec.axes.items()}
    feeds = spec.make_inputs(sizes, np.random.default_rng(0), pad=True)
    sess.run(None, feeds)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _session_runner(path, threads):
    from vlexport.runtime.backends.onnxruntime import make_session

    sess = make_session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(names, feeds)))


def _processor_for(loaded):
    from vlexport.processing.visual_bert import VisualBertProcessor

    if loaded.weights == "tiny":
        return VisualBertProcessor.tiny()
    return VisualBertProcessor.from_pretrained(loaded.model_dir)


def build(model: str, out: Path | None = None, **kwargs) -> Path:
    """Build an artifact folder; returns its path. See BuildOptions for the keyword arguments."""
    opts = BuildOptions(model=model, out=out, **kwargs)
    for module in ("torch", "onnx", "onnxscript", "onnxruntime"):
        require(module, "vlexport build")  # name the missing piece before any work starts
    out = Path(opts.out or default_out(opts.model))
    n_stages = 4 + (not opts.onnx_only) * (opts.fp16 * 3 + opts.int8)
    st = Stages(n_stages, opts.progress)
    t0 = time.perf_counter()

    with st.stage(f"Loading {opts.model}" + (" (random weights)" if opts.random_weights else "")):
        from vlexport.export.visual_bert import describe
        from vlexport.models.factory import from_pretrained

        loaded = from_pretrained(opts.model, opts.task, random_weights=opts.random_weights, revision=opts.revision)
        spec = describe(loaded.architecture, loaded.config, with_alignment=opts.with_alignment, axes=opts.axes)
        processor = _processor_for(loaded)
        if processor.vocab_size != loaded.config.vocab_size:
            st.note(f"[yellow]warning:[/yellow] the tokenizer has {processor.vocab_size} tokens but the model's "
                    f"vocab_size is {loaded.config.vocab_size}: put the model's own tokenizer.json or vocab.txt "
                    f"in its folder")
    st.note(f"{loaded.architecture} ({spec.task}), {sum(p.numel() for p in loaded.model.parameters()) / 1e6:.1f}M "
            f"parameters; axes " + ", ".join(f"{k} {r.min}..{r.max}" for k, r in spec.axes.items()))

    manifest = {
        "format_version": ARTIFACT_FORMAT_VERSION, "vlexport_version": __version__, "complete": False,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"model": opts.model, "revision": opts.revision, "weights": loaded.weights, "seed": 0,
                   "model_dir": str(loaded.model_dir.resolve()) if loaded.model_dir else None},
        "architecture": loaded.architecture, "task": spec.task, "config": loaded.config.to_dict(),
        **spec_to_json(spec), "notes": spec.notes, "tools": tool_versions(), "graphs": {}, "validation": {},
        "engines": {},
    }

    with staging_dir(out) as stage, tempfile.TemporaryDirectory(prefix="vlexport-") as scratch:
        scratch = Path(scratch)
        with st.stage("Exporting to ONNX"):
            from vlexport.export.onnx_export import export_onnx

            # each candidate graph lives in its own folder under the final name, so keeping one is a move
            raw = scratch / "raw" / "model.onnx"
            raw.parent.mkdir()
            export_facts = export_onnx(loaded.model, spec, raw)
        manifest.update(opset=export_facts["opset"], exporter=export_facts["exporter"],
                        trace_sizes=export_facts["trace_sizes"])

        with st.stage("Simplifying (and timing raw vs simplified on ONNX Runtime)"):
            from vlexport.export.simplify import simplify

            chosen, simp = raw, {"tool": "none", "message": "disabled (--no-simplify)"}
            if opts.simplify:
                simplified = scratch / "simplified" / "model.onnx"
                simplified.parent.mkdir()
                tool, message = simplify(raw, simplified)
                simp = {"tool": tool, "message": message}
                if tool != "none":
                    t_raw = _time_graph(raw, spec, opts.threads)
                    t_simp = _time_graph(simplified, spec, opts.threads)
                    simp.update(raw_ms=round(t_raw * 1e3, 3), simplified_ms=round(t_simp * 1e3, 3))
                    if t_simp <= t_raw:
                        chosen = simplified
                    simp["kept"] = "simplified" if chosen != raw else "raw"
            for f in chosen.parent.iterdir():
                shutil.move(str(f), stage / f.name)
        st.note(simp["message"] + (f"; raw {simp['raw_ms']} ms vs simplified {simp['simplified_ms']} ms at the opt "
                                   f"shape -> kept {simp['kept']}" if "kept" in simp else ""))
        manifest["graphs"]["fp32"] = file_entry(stage, "model.onnx", simplifier=simp)

        # fp16 conversion before validation: the torch model and the fp32 session are not alive yet,
        # which keeps the build's peak memory lower (a full-size build stays under 4 GB).
        if opts.fp16 and not opts.onnx_only:
            with st.stage("Converting to mixed precision (fp16)"):
                from vlexport.export.fp16 import convert_fp16

                facts = convert_fp16(stage / "model.onnx", stage / "model.fp16.onnx")
            manifest["graphs"]["fp16"] = file_entry(stage, "model.fp16.onnx", **facts)

        from vlexport.export.validate import int8_gate, torch_reference, validate_graph, validate_precision

        fp32 = _session_runner(stage / "model.onnx", opts.threads)
        with st.stage("Validating fp32 graph against PyTorch on unseen shapes", steps=6) as advance:
            report = validate_graph(torch_reference(loaded.model), fp32, spec, export_facts["trace_sizes"],
                                    progress=advance)
        manifest["validation"]["fp32"] = report
        loaded.model = None  # the reference is no longer needed: free its weights before the next graphs
        gc.collect()
        st.note(f"{report['shapes']} shapes, worst max-abs error " +
                ", ".join(f"{k} {v['max_abs']:.2e}" for k, v in report["worst"].items()))

        if opts.fp16 and not opts.onnx_only:
            with st.stage("Validating fp16 graph on {} random inputs (ORT CPU)".format(opts.fp16_samples),
                          steps=-(-opts.fp16_samples // 10)) as adv:
                rep = validate_precision(fp32, _session_runner(stage / "model.fp16.onnx", opts.threads), spec,
                                         "fp16", n_samples=opts.fp16_samples, seen=export_facts["trace_sizes"],
                                         progress=adv)
            manifest["validation"]["fp16"] = rep
            st.note(f"fp16 vs fp32: min cosine {rep['min_cosine']:.6f}, top-1 agreement "
                    + ", ".join(f"{k} {v:.3f}" for k, v in rep["top1_agreement"].items()) + ", no NaN/inf")

        if opts.int8 and not opts.onnx_only:
            with st.stage(f"Quantizing to int8 (dynamic) and validating on {opts.int8_samples} inputs",
                          steps=-(-opts.int8_samples // 10)) as adv:
                from vlexport.export.quantize import quantize_int8

                facts = quantize_int8(stage / "model.onnx", stage / "model.int8.onnx")
                rep = validate_precision(fp32, _session_runner(stage / "model.int8.onnx", opts.threads), spec,
                                         "int8", n_samples=opts.int8_samples, check_grid=False, progress=adv,
                                         **int8_gate(loaded.weights))
            manifest["graphs"]["int8"] = file_entry(stage, "model.int8.onnx", **(facts or {}))
            manifest["validation"]["int8"] = rep
            st.note(f"int8 vs fp32: min cosine {rep['min_cosine']:.5f}, top-1 agreement "
                    + ", ".join(f"{k} {v:.3f}" for k, v in rep["top1_agreement"].items()) + ", fp32 answer in "
                    "int8 top-5 " + ", ".join(f"{k} {v:.3f}" for k, v in rep["top5_agreement"].items()))

        if opts.fp16 and not opts.onnx_only:
            with st.stage("Building the TensorRT engine"):
                engine, message = _engine(stage, manifest, opts)
            if engine:
                manifest["engines"]["fp16"] = engine
            else:
                manifest["engine_skipped"] = message
            st.note(message)
            if engine:
                st.total += 1
                with st.stage("Validating the TensorRT engine against the fp32 graph",
                              steps=-(-opts.fp16_samples // 10)) as adv:
                    manifest["validation"]["tensorrt_fp16"] = _validate_engine(
                        stage, manifest, fp32, spec, export_facts["trace_sizes"], opts, adv)

        (stage / "config.json").write_text(json.dumps(loaded.config.to_dict(), indent=2) + "\n")
        processor.save_pretrained(stage)
        manifest["build"] = {"seconds": round(time.perf_counter() - t0, 1), "stage_seconds":
                             {k: round(v, 2) for k, v in st.timings.items()},
                             "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                             "stage_peak_rss_mb": dict(st.peak_mb)}
        manifest["complete"] = True
        write_json_atomic(stage / "manifest.json", manifest)
    if opts.progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold]Built[/bold] {out} in {manifest['build']['seconds']}s "
                                   f"(peak RSS {manifest['build']['peak_rss_mb']} MB)", highlight=False)
    return out


def _validate_engine(stage: Path, manifest: dict, fp32, spec, seen, opts: BuildOptions, progress) -> dict:
    """The engine against the fp32 graph, with the fp16 graph's thresholds (fails the build)."""
    from vlexport.artifact import Artifact
    from vlexport.export.validate import validate_precision
    from vlexport.runtime.backends.tensorrt import TensorRTBackend

    write_json_atomic(stage / "manifest.json", {**manifest, "complete": True})  # provisional, in staging
    backend = TensorRTBackend(Artifact(stage), precision="fp16")
    try:
        return validate_precision(fp32, backend.run, spec, "TensorRT fp16", n_samples=opts.fp16_samples,
                                  seen=seen, progress=progress)
    finally:
        backend.close()


def _engine(stage: Path, manifest: dict, opts: BuildOptions):
    """The TensorRT step: (entry, message); entry None when skipped (or raises with --require-engine)."""
    try:
        from vlexport.tensorrt.engine import maybe_build_engine
    except ImportError as exc:  # the module itself is torch-free; this is a packaging problem
        return None, f"TensorRT engine skipped: {exc}"
    return maybe_build_engine(stage, manifest, require=opts.require_engine, options=opts.engine_options)
