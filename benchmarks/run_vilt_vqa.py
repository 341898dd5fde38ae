#!/usr/bin/env python
"""ViLT-VQA (full size, random weights) on CPU: transformers eager vs our reference vs ORT fp32 / fp16 / int8.

    python benchmarks/run_vilt_vqa.py                         # build into a temp folder, then bench
    python benchmarks/run_vilt_vqa.py --artifact engines/vqa  # reuse a built artifact (fp16 + int8 graphs)

Points: the processor's typical sizes, 384x576 and 384x384, at B=1 and B=16 (text 12 tokens),
backends interleaved. Writes benchmarks/results/<date>-vilt-vqa-cpu.{json,md} and plots. The
processor's own time is measured separately by benchmarks/vilt_image_processor.py.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The ViLT issue's CPU targets (2 threads, full-size VQA, B=1, 384x576), checked in the report.
TARGETS = {"ort_fp32_speedup": 2.0, "ort_int8_speedup": 3.0, "wrapper_overhead_pct": 3.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, help="a built artifact of dandelin/vilt-b32-finetuned-vqa")
    ap.add_argument("--model", default="dandelin/vilt-b32-finetuned-vqa")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--point-seconds", type=float, default=40.0)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)

    from vlexport.bench.harness import prefer_passive_threads

    prefer_passive_threads()  # before torch loads (see the harness)
    from vlexport.bench import report
    from vlexport.bench.harness import BenchOptions, run_benchmark

    opts = BenchOptions(model=str(args.artifact or args.model), random_weights=args.artifact is None,
                        base={"batch": 1, "text": 12, "height": 384, "width": 576},
                        sweep={"batch": [1, 16], "width": [576, 384]}, grid=True,
                        iters=args.iters, warmup=1, threads=args.threads, max_point_seconds=args.point_seconds,
                        parity_samples=16, wrapper_iters=20, targets=TARGETS, gemm_peak=False,
                        build_kwargs={"axes": {}})
    result = run_benchmark(opts)
    report.print_report(result)
    stem = f"{datetime.date.today().isoformat()}-vilt-vqa-cpu"
    files = report.write_all(result, args.out, stem=stem, title="ViLT-VQA (full size, random weights) on CPU")
    print("wrote", *[str(f) for v in files.values() for f in (v if isinstance(v, list) else [v])], file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
