"""The `vlexport` command: build, export, predict, embed, inspect, validate, bench, serve, triton-repo.

Any VlexportError becomes a one-line message on stderr and exit code 2 (1 for a failed check),
never a traceback for a user mistake. Heavy imports happen inside each command. Family-specific
flags (build options, predict inputs) come from the family registry, so this file names none.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from vlexport import __version__
from vlexport.errors import ConfigError, InputError, VlexportError
from vlexport.specs import AXES


def _families():
    from vlexport import families

    return families.all_families()


def _add_model_args(p):
    tiny = sorted(i for f in _families() for i in f.tiny)
    p.add_argument("--model", help="hub id, local folder (config.json + weights), a known public id "
                   f"with --random-weights, or a built-in tiny model ({', '.join(tiny)})")
    p.add_argument("--task", help="architecture or task name overriding config.json (e.g. question-answering)")
    p.add_argument("--random-weights", action="store_true",
                   help="build the model's public configuration with random weights (offline; for benchmarks/demos)")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    p.add_argument("--out", type=Path, help="artifact folder (default: engines/<model name>); an existing folder "
                   "must be a vlexport artifact (it is replaced only when the new build succeeds)")
    for axis, (stem, what) in AXES.items():
        p.add_argument(f"--min-{stem}", type=int, dest=f"min_{axis}", help=f"smallest {what}")
        p.add_argument(f"--opt-{stem}", type=int, dest=f"opt_{axis}", help=f"{what} to tune for")
        p.add_argument(f"--max-{stem}", type=int, dest=f"max_{axis}", help=f"largest {what}")
    seen = set()
    for fam in _families():
        for opt in fam.options:
            if opt.name not in seen:
                seen.add(opt.name)
                p.add_argument(f"--{opt.name.replace('_', '-')}", action="store_true", dest=f"opt__{opt.name}",
                               help=f"{opt.help} ({fam.name})")
    for fam in _families():  # a companion model built into a subfolder (e.g. VisualBERT's region detector)
        c = fam.companion
        if c is not None and c.name not in seen:
            seen.add(c.name)
            p.add_argument(f"--{c.name}", dest=f"companion__{c.name}", metavar="MODEL", help=f"{c.help} ({fam.name})")
    for fam in _families():  # building from parts instead of --model (e.g. two towers)
        for flags, kw in (fam.compose.arguments if fam.compose else ()):
            if flags[0] not in seen:
                seen.add(flags[0])
                p.add_argument(*flags, **{**kw, "help": f"{kw.get('help', '')} ({fam.name})"})
    p.add_argument("--labels", type=Path, help="class names for the head: a JSON list (index = label id) or {id: name} "
                   "object, e.g. LXMERT's trainval_label2ans.json for VQA heads (recorded in the manifest)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim/onnxslim")
    p.add_argument("--fuse", choices=["auto", "always", "never"], default="auto",
                   help="an ONNX-Runtime-only fp32 graph with fused attention/SkipLayerNorm/BiasGelu: auto keeps it "
                        "when validated and faster, always when validated (default auto)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads used while validating and timing")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def axes_from_flags(args, defaults: dict) -> dict:
    """--min/--opt/--max flags on top of the description's default ranges. A flag for an axis the
    model does not have, or an --opt outside [min, max], is an error (never silently clamped)."""
    from vlexport.specs import AxisRange

    out = {}
    for axis, (stem, _) in AXES.items():
        lo, opt, hi = (getattr(args, f"{k}_{axis}", None) for k in ("min", "opt", "max"))
        if lo is None and opt is None and hi is None:
            continue
        given = next(f"--{k}-{stem}" for k, v in (("min", lo), ("opt", opt), ("max", hi)) if v is not None)
        base = defaults.get(axis)
        if base is None:
            raise ConfigError(f"{given} does not apply: this model has no '{axis}' axis (its axes: {sorted(defaults)})")
        lo = base.min if lo is None else lo
        hi = base.max if hi is None else hi
        if opt is None:
            opt = min(max(base.opt, lo), hi)
        elif not lo <= opt <= hi:
            raise ConfigError(f"--opt-{stem} {opt} is outside [--min-{stem} {lo}, --max-{stem} {hi}]")
        try:
            out[axis] = AxisRange(lo, opt, hi, base.step)
        except ValueError as exc:
            raise ConfigError(f"--{stem} range: {exc}") from None
    return out


def _build_kwargs(args, onnx_only: bool) -> dict:
    from vlexport._deps import require

    for module in ("torch", "onnx", "onnxscript", "onnxruntime"):
        require(module, f"vlexport {'export' if onnx_only else 'build'}")
    from vlexport.reference import resolve_architecture
    from vlexport.sources import model_config

    # default ranges depend on the config (e.g. max_position_embeddings): read it cheaply first
    composer = _composer(args)
    if composer is not None:
        fam, values = composer
        cfg, name, _ = fam.compose.load()(values, args.random_weights, args.revision)
        args.model = name
    else:
        cfg, _, _ = model_config(args.model, args.random_weights, args.revision)
    family, arch = resolve_architecture(cfg, args.task)
    given = [k[len("opt__"):] for k, v in vars(args).items() if k.startswith("opt__") and v]
    own = {o.name for o in family.options}
    foreign = [name for name in given if name not in own]
    if foreign:
        raise ConfigError(f"--{foreign[0].replace('_', '-')} does not apply to {family.name} models")
    options = {name: True for name in given}
    companion = None
    for key, value in vars(args).items():
        if key.startswith("companion__") and value:
            name = key[len("companion__"):]
            if family.companion is None or family.companion.name != name:
                raise ConfigError(f"--{name} does not apply to {family.name} models")
            companion = (name, value)
    defaults = family.describe(arch, family.config_from_dict(cfg), **options).axes
    kw = dict(task=args.task, random_weights=args.random_weights, revision=args.revision,
              axes=axes_from_flags(args, defaults), options=options, simplify=not args.no_simplify, fuse=args.fuse,
              threads=args.threads, onnx_only=onnx_only, progress=not args.quiet,
              compose=(composer[0].name, composer[1]) if composer else None, companion=companion,
              labels=str(args.labels) if args.labels else None)
    if not onnx_only:
        kw.update(fp16=args.fp16, int8=args.int8 or args.int8_portable, int8_portable=args.int8_portable,
                  int4=args.int4, int4_block_size=args.int4_block_size, require_engine=args.require_engine,
                  engine_options={"workspace_gb": args.workspace_gb, "version_compatible": args.version_compatible,
                                  "hardware_compatibility": args.hardware_compatibility,
                                  "refittable": args.refittable, "timing_cache": args.timing_cache})
    return kw


def _composer(args):
    """(family, values) when the flags name parts to compose (e.g. --vision-model/--text-model), else None."""
    for fam in _families():
        if fam.compose is None:
            continue
        values = {d: getattr(args, d, None) for d in fam.compose.dests()}
        if any(v is not None for v in values.values()):
            if args.model:
                raise ConfigError(f"pass either --model or the parts to compose "
                                  f"({', '.join(f[0] for f, _ in fam.compose.arguments)}), not both")
            return fam, values
    if not args.model:
        raise ConfigError("--model is required (a hub id, a local folder, a known public id with --random-weights, "
                          "or a built-in tiny model)")
    return None


def cmd_build(args, onnx_only=False):
    from vlexport.export.build import build
    from vlexport.fsutil import check_output_folder

    if args.out is not None:
        check_output_folder(args.out)  # before any work
    kw = _build_kwargs(args, onnx_only)
    print(build(args.model, args.out, **kw))
    return 0


def cmd_predict(args):
    import vlexport
    from vlexport import families

    if args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    model = vlexport.load(args.path, backend=args.backend, precision=args.precision)
    fam = families.get(model.artifact.family)
    if fam.predict is None:
        raise ConfigError(f"`vlexport predict` has no command for {fam.name} artifacts yet; use vlexport.load()")
    return fam.predict.load()(model, args)


def cmd_inspect(args):
    from vlexport.artifact import Artifact
    from vlexport.report import manifest_tables

    art = Artifact(args.path, verify=False)
    if args.json:
        print(json.dumps(art.manifest, indent=2))
    else:
        from rich.console import Console

        class _Console(Console):
            # rich turns a closed pipe into SystemExit(1), which reads as "verify failed" to a script
            # running `vlexport inspect --verify ART | head`: let main() handle it (exit 141, as for --json)
            def on_broken_pipe(self):
                raise BrokenPipeError

        console = _Console()
        for table in manifest_tables(art.manifest):
            console.print(table)
    if args.verify:
        res = art.verify_all()
        for rel, why in res["bad"]:
            print(f"FAIL {rel}: {why}", file=sys.stderr)
        for rel in res["unlisted"]:
            print(f"FAIL {rel}: in the folder but not in the manifest", file=sys.stderr)
        ok = not res["bad"] and not res["unlisted"]
        print(f"verify: {len(res['ok'])} file(s) match their SHA-256"
              + ("" if ok else f"; {len(res['bad']) + len(res['unlisted'])} problem(s)"), file=sys.stderr)
        return 0 if ok else 1
    return 0


def cmd_validate(args):
    from vlexport.export.validate_artifact import validate_artifact

    report = validate_artifact(args.path, backends=args.backend, reference=args.reference, progress=not args.quiet)
    return 0 if report["passed"] else 1


def _predict_parser(sub):
    p = sub.add_parser("predict", help="run an artifact on inputs and print the results (e.g. top answers)")
    p.add_argument("path", type=Path)
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt", "torch"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8", "int4"])
    p.add_argument("--top-k", type=int, default=5, help="answers to show (>= 1)")
    seen = set()
    for fam in _families():
        for flags, kw in (fam.predict.arguments if fam.predict else ()):
            if flags[0] not in seen:
                seen.add(flags[0])
                p.add_argument(*flags, **kw)
    p.set_defaults(func=cmd_predict)


def cmd_embed(args):
    from vlexport.embed import embed

    result = embed(args.path, images=args.images, texts=args.texts, out=args.out, batch_size=args.batch_size,
                   normalize=not args.no_normalize, overwrite=args.overwrite, backend=args.backend,
                   precision=args.precision, progress=not args.quiet)
    print(result.summary())
    return 0


def _embed_parser(sub):
    from vlexport.embed import DEFAULT_BATCH_SIZE, IMAGE_EXTENSIONS

    p = sub.add_parser("embed", help="embed many images or texts in batches into a .npy matrix, with a .json "
                       "sidecar naming each row's source")
    p.add_argument("path", type=Path, help="the artifact (its pipeline must embed images or texts)")
    p.add_argument("--images", nargs="+", metavar="DIR_OR_GLOB",
                   help=f"directories (recursive: {', '.join(e[1:] for e in IMAGE_EXTENSIONS)}), glob patterns "
                        "(quoted, e.g. 'photos/**/*.jpg') or files")
    p.add_argument("--texts", metavar="FILE", help="a UTF-8 text file, one text per line (blank lines skipped)")
    p.add_argument("--out", type=Path, help="the .npy to write; the sidecar <stem>.json goes beside it")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"inputs per batch (default {DEFAULT_BATCH_SIZE}; capped at the artifact's largest batch)")
    p.add_argument("--no-normalize", action="store_true", help="keep the projected features as they are "
                   "(default: L2-normalized rows)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out and its sidecar")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt", "torch"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8", "int4"])
    p.add_argument("--quiet", action="store_true", help="no progress bar (skipped inputs are still reported)")
    p.set_defaults(func=cmd_embed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vlexport", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vlexport {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="export, simplify, validate; --fp16: mixed-precision graph + TensorRT engine")
    _add_model_args(p)
    p.add_argument("--fp16", action="store_true", help="also build the fp16 graph and (with TensorRT + GPU) an engine")
    p.add_argument("--int8", action="store_true", help="also build a dynamically quantized int8 graph (CPU)")
    p.add_argument("--int8-portable", action="store_true", help="int8 weights that run right on every CPU (7-bit "
                   "signed, or unsigned 8-bit for per-token graphs); by default they fit this CPU, and a signed "
                   "8-bit graph is refused on x86 CPUs without VNNI")
    p.add_argument("--int4", action="store_true", help="also write int4 weight-only graphs (MatMulNBits, CPU) of the "
                   "graphs a model writes itself (a Llama decoder); load them with precision='int4'")
    p.add_argument("--int4-block-size", type=int, choices=[16, 32, 64, 128, 256], help="pin the int4 graphs' "
                   "MatMulNBits block size (default: 128, faster at decode, where it passes the gate; else 32)")
    p.add_argument("--require-engine", action="store_true", help="fail when the TensorRT engine cannot be built")
    p.add_argument("--workspace-gb", type=float, help="TensorRT workspace memory limit")
    p.add_argument("--version-compatible", action="store_true", help="TensorRT version-compatible engine (loading it "
                   "needs vlexport.load(..., allow_engine_host_code=True))")
    p.add_argument("--hardware-compatibility", choices=["ampere+", "same_cc"], help="TensorRT hardware compatibility")
    p.add_argument("--refittable", action="store_true", help="TensorRT refittable engine")
    p.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file (default ~/.cache/vlexport)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("export", help="ONNX only: export, simplify, validate the fp32 graphs")
    _add_model_args(p)
    p.set_defaults(func=lambda a: cmd_build(a, onnx_only=True))

    _predict_parser(sub)
    _embed_parser(sub)

    p = sub.add_parser("inspect", help="show an artifact's manifest as tables")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="print the raw manifest")
    p.add_argument("--verify", action="store_true", help="check every file's SHA-256 (exit 1 on a mismatch)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("validate", help="compare an artifact's backends (TensorRT, ORT) with fp32 and PyTorch")
    p.add_argument("path", type=Path)
    p.add_argument("--backend", nargs="+", default=None,
                   help="checks to run, e.g. torch onnxruntime:fp16 tensorrt (default: every one the artifact allows; "
                        "a check named here that cannot run is a failure)")
    p.add_argument("--reference", help="the checkpoint folder or hub id a checkpoint artifact was built from (for the "
                   "PyTorch comparison)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_validate)

    from vlexport.serving.cli import add_parsers

    add_parsers(sub)
    for fam in _families():  # subcommands a family adds (e.g. `vlexport regions`)
        if fam.commands:
            module, fn = fam.commands.split(":")
            getattr(importlib.import_module(module), fn)(sub)

    from vlexport.bench.cli import add_arguments, run

    p = sub.add_parser("bench", help="parity and latency side by side across backends")
    add_arguments(p)
    p.set_defaults(func=run)

    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except VlexportError as exc:
        print(f"vlexport {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vlexport inspect --json | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
