"""Benchmarks: parity and latency of every backend side by side, on identical inputs.

`run_benchmark(BenchOptions(...))` -> result dict; `vlexport.bench.report` renders it (terminal,
JSON, Markdown, PNG). `vlexport bench MODEL_OR_ARTIFACT` is the command line (see bench.cli).
Importing this package pulls in numpy only.
"""

from vlexport.bench.harness import ALL_BACKENDS, BenchOptions, evaluate_targets, expand_sweep, run_benchmark

__all__ = ["ALL_BACKENDS", "BenchOptions", "evaluate_targets", "expand_sweep", "run_benchmark"]
