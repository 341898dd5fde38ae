"""`vlexport bench MODEL_OR_ARTIFACT`: wire with `add_arguments(subparser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlexport.bench.harness import ALL_BACKENDS


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("model", metavar="MODEL_OR_ARTIFACT",
                   help="a built artifact folder, or a model id / folder (built into a temporary folder first)")
    p.add_argument("--random-weights", action="store_true", help="with a model id: random weights, full-size config")
    p.add_argument("--graph", default=None, metavar="NAME",
                   help="the graph to time, for artifacts with several (e.g. a dual encoder's 'vision' or 'text'); "
                        "required for them, one graph per run")
    p.add_argument("--reference", default=None, metavar="FOLDER_OR_ID",
                   help="the checkpoint folder or hub id a checkpoint artifact was built from: the torch and transformers "
                        "backends load its weights (default: the model itself, when bench builds it)")
    p.add_argument("--items", default="samples", metavar="NAME",
                   help="what one batch row is, naming the throughput column (e.g. images -> images/s; default samples)")
    p.add_argument("--backends", default=",".join(ALL_BACKENDS),
                   help=f"comma-separated, from {','.join(ALL_BACKENDS)} (default: all; unavailable ones are skipped "
                        f"with the reason)")
    p.add_argument("--sizes", action="append", default=[], metavar="AXIS=N[,N...]",
                   help="sizes to sweep for one axis, e.g. --sizes batch=1,8,32 --sizes text=8,20,40 (default: every "
                        "axis at its built opt size); the first value of each axis is the base point")
    p.add_argument("--grid", action="store_true", help="the cartesian product of the sweeps (default: one axis at a time "
                                                       "around the first value of each)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per point (default 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--parity-samples", type=int, default=32, help="random samples for parity (default 32)")
    p.add_argument("--no-gemm-peak", action="store_true", help="skip measuring the machine's fp32 GEMM peak")
    p.add_argument("--no-wrapper-overhead", action="store_true")
    p.add_argument("--no-pad", action="store_true", help="unpadded inputs (default: random right padding)")
    p.add_argument("--out", type=Path, default=None, help="folder for bench.json, bench.md and PNG plots")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


def _sweeps(items) -> dict:
    out = {}
    for item in items:
        axis, sep, values = item.partition("=")
        if not sep or not axis:
            raise argparse.ArgumentTypeError(f"--sizes expects AXIS=N[,N...], got '{item}'")
        out[axis.strip()] = _ints(values)
    return out


def options_from_args(args):
    from vlexport.bench.harness import BenchOptions
    from vlexport.errors import ConfigError

    try:
        sweeps = _sweeps(args.sizes)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc)) from None
    base = {k: v[0] for k, v in sweeps.items() if v}
    sweep = {k: v for k, v in sweeps.items() if len(v) > 1}
    return BenchOptions(model=args.model, backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
                        base=base, sweep=sweep, grid=args.grid, warmup=args.warmup, iters=args.iters,
                        threads=args.threads, random_weights=args.random_weights, seed=args.seed, pad=not args.no_pad,
                        parity_samples=args.parity_samples, wrapper_iters=0 if args.no_wrapper_overhead else 40,
                        gemm_peak=not args.no_gemm_peak, progress=not args.quiet, graph=args.graph,
                        item_name=args.items, reference=args.reference)


def run(args) -> int:
    from vlexport._deps import require
    from vlexport.bench import report
    from vlexport.bench.harness import prefer_passive_threads, run_benchmark

    prefer_passive_threads()
    require("torch", "vlexport bench (its PyTorch reference)")
    result = run_benchmark(options_from_args(args))
    report.print_report(result)
    if args.out:
        files = report.write_all(result, args.out, plots=not args.no_plots)
        from rich.console import Console

        Console(stderr=True).print("wrote " + ", ".join(str(f) for v in files.values()
                                                       for f in (v if isinstance(v, list) else [v])), highlight=False)
    return 0


def main(argv=None) -> int:  # `python -m vlexport.bench.cli` until the main CLI wires `bench`
    p = add_arguments(argparse.ArgumentParser(prog="vlexport bench", description=__doc__))
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
