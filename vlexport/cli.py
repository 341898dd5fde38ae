"""The `vlexport` command: build, export, predict, inspect, validate, bench.

Any VlexportError becomes a one-line message on stderr and exit code 2 (1 for other failures),
never a traceback for a user mistake. Heavy imports happen inside each command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlexport import __version__
from vlexport.errors import VlexportError

from vlexport.tasks import FLAG_NAMES as AXIS_FLAGS


def _add_model_args(p):
    p.add_argument("--model", required=True, help="hub id, local folder (config.json + weights), or a known "
                   "public id with --random-weights; 'tiny-visualbert-vqa' is the built-in tiny model")
    p.add_argument("--task", help="architecture or task name overriding config.json (e.g. question-answering)")
    p.add_argument("--random-weights", action="store_true",
                   help="build the model's public configuration with random weights (offline; for benchmarks/demos)")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    p.add_argument("--out", type=Path, help="artifact folder (default: engines/<model name>)")
    for axis, flag in AXIS_FLAGS.items():
        p.add_argument(f"--min-{flag}", type=int, dest=f"min_{axis}", help=f"smallest {axis} size")
        p.add_argument(f"--opt-{flag}", type=int, dest=f"opt_{axis}", help=f"{axis} size to tune for")
        p.add_argument(f"--max-{flag}", type=int, dest=f"max_{axis}", help=f"largest {axis} size")
    p.add_argument("--with-alignment", action="store_true", help="add the image_text_alignment input")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim/onnxslim")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads used while validating and timing")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _axes(args, model_cfg_axes) -> dict:
    """--min/--opt/--max flags on top of the task's default ranges."""
    from vlexport.tasks import AxisRange

    out = {}
    for axis in AXIS_FLAGS:
        lo, opt, hi = (getattr(args, f"{k}_{axis}", None) for k in ("min", "opt", "max"))
        if lo is None and opt is None and hi is None:
            continue
        base = model_cfg_axes.get(axis)
        if base is None:
            from vlexport.errors import ConfigError

            raise ConfigError(f"--max-{AXIS_FLAGS[axis]} does not apply: this task has no '{axis}' axis")
        lo = base.min if lo is None else lo
        hi = base.max if hi is None else hi
        opt = min(max(base.opt if opt is None else opt, lo), hi)
        try:
            out[axis] = AxisRange(lo, opt, hi)
        except ValueError as exc:
            from vlexport.errors import ConfigError

            raise ConfigError(f"--{AXIS_FLAGS[axis]} range: {exc}") from None
    return out


def _build_kwargs(args, onnx_only: bool) -> dict:
    from vlexport.export.visual_bert import default_axes
    from vlexport.models.factory import _architecture
    from vlexport.models.visual_bert import VisualBertConfig

    # Default ranges depend on the config (max_position_embeddings): read it cheaply first.
    from vlexport.hub import model_config

    cfg, _, _ = model_config(args.model, args.random_weights, args.revision)
    arch = _architecture(cfg, args.task)
    axes = _axes(args, default_axes(VisualBertConfig.from_dict(cfg), arch))
    kw = dict(task=args.task, random_weights=args.random_weights, revision=args.revision, axes=axes,
              with_alignment=args.with_alignment, simplify=not args.no_simplify, threads=args.threads,
              onnx_only=onnx_only, progress=not args.quiet)
    if not onnx_only:
        kw.update(fp16=args.fp16, int8=args.int8, require_engine=args.require_engine,
                  engine_options={"workspace_gb": args.workspace_gb, "version_compatible": args.version_compatible,
                                  "hardware_compatibility": args.hardware_compatibility,
                                  "refittable": args.refittable, "timing_cache": args.timing_cache})
    return kw


def cmd_build(args, onnx_only=False):
    from vlexport.export.build import build

    out = build(args.model, args.out, **_build_kwargs(args, onnx_only))
    print(out)
    return 0


def cmd_predict(args):
    import numpy as np

    import vlexport

    model = vlexport.load(args.path, backend=args.backend, precision=args.precision)
    if args.visual_embeds:
        try:
            visual = np.load(args.visual_embeds)
        except (OSError, ValueError) as exc:
            from vlexport.errors import InputError

            raise InputError(f"--visual-embeds '{args.visual_embeds}' is not a readable .npy file: {exc}") from None
    else:
        dim = model.config["visual_embedding_dim"]
        visual = np.random.default_rng(0).standard_normal((args.regions, dim)).astype(np.float32)
        print(f"(no --visual-embeds: using {args.regions} random regions of dim {dim})", file=sys.stderr)
    if visual.ndim == 2 and len(args.text) > 1:  # one image's regions, several questions about it
        visual = np.broadcast_to(visual, (len(args.text), *visual.shape))
    inputs = model.processor(text=args.text, visual_embeds=visual, return_tensors="np")
    outputs = model(**inputs)
    print(f"backend: {model.backend.describe()}", file=sys.stderr)
    if "logits" in outputs and outputs.logits.ndim == 2:
        from rich.console import Console
        from rich.table import Table

        for text, answers in zip(args.text, model.top_answers(outputs.logits, args.top_k)):
            table = Table(title=text)
            table.add_column("answer")
            table.add_column("logit", justify="right")
            for label, score in answers:
                table.add_row(label, f"{score:.4f}")
            Console().print(table)
    else:
        for name, value in outputs.items():
            print(f"{name}: shape {tuple(value.shape)} {value.dtype}")
    return 0


def cmd_inspect(args):
    from vlexport.artifact import Artifact
    from vlexport.report import manifest_tables

    art = Artifact(args.path, verify=False)
    if args.json:
        print(json.dumps(art.manifest, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    for table in manifest_tables(art.manifest):
        console.print(table)
    return 0


def cmd_validate(args):
    from vlexport.export.check import validate_artifact

    report = validate_artifact(args.path, backends=args.backend, progress=not args.quiet)
    return 0 if report["passed"] else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vlexport", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vlexport {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="export, simplify, validate; --fp16: mixed-precision graph + TensorRT engine")
    _add_model_args(p)
    p.add_argument("--fp16", action="store_true", help="also build the fp16 graph and (with TensorRT + GPU) an engine")
    p.add_argument("--int8", action="store_true", help="also build a dynamically quantized int8 graph (CPU)")
    p.add_argument("--require-engine", action="store_true", help="fail when the TensorRT engine cannot be built")
    p.add_argument("--workspace-gb", type=float, help="TensorRT workspace memory limit")
    p.add_argument("--version-compatible", action="store_true", help="TensorRT version-compatible engine")
    p.add_argument("--hardware-compatibility", choices=["ampere+", "same_cc"], help="TensorRT hardware compatibility")
    p.add_argument("--refittable", action="store_true", help="TensorRT refittable engine")
    p.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file (default ~/.cache/vlexport)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("export", help="ONNX only: export, simplify, validate the fp32 graph")
    _add_model_args(p)
    p.set_defaults(func=lambda a: cmd_build(a, onnx_only=True))

    p = sub.add_parser("predict", help="run an artifact on text + region features and print the top answers")
    p.add_argument("path", type=Path)
    p.add_argument("--text", nargs="+", required=True, help="one or more questions")
    p.add_argument("--visual-embeds", help=".npy file of region features (regions, dim)")
    p.add_argument("--regions", type=int, default=36, help="random regions when --visual-embeds is not given")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt", "torch"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("inspect", help="show an artifact's manifest as tables")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="print the raw manifest")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("validate", help="compare an artifact's backends (TensorRT, ORT) with fp32 and PyTorch")
    p.add_argument("path", type=Path)
    p.add_argument("--backend", nargs="+", default=None, help="backends/precisions to check (default: all found)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_validate)

    try:
        from vlexport.bench.cli import add_arguments, run

        p = sub.add_parser("bench", help="parity and latency side by side across backends")
        add_arguments(p)
        p.set_defaults(func=run)
    except ImportError:
        pass

    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except VlexportError as exc:
        print(f"vlexport {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
