#!/usr/bin/env python
"""The full-size VipLlava artifact end to end at B=1 on this machine, through `vlexport.load`.

    vlexport build --model llava-hf/vip-llava-7b-hf --random-weights --max-images 2 --max-batch 2 --out ART
    python benchmarks/run_vipllava_full.py ART [--new-tokens 16]

Loads the artifact (CLIP-L vision graph fp32, embedding graph fp32, the 7B decoder in int4: the only form
a streamed build has), then for one image and the checkpoint's prompt shape (BOS, ~40 text tokens, 576
image tokens: random ids, since a --random-weights artifact has no tokenizer) measures the load time and
memory, the vision graph, time to first token (vision + embeddings + the prefill) and decode tokens per
second, and the machine's memory bandwidth in the same run (2-thread copy, read + write counted): the
decode limit is bandwidth / the decoder's weight bytes read per token. Writes
benchmarks/results/<date>-vipllava-7b-e2e-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from run_llama_decoder_full import bandwidth  # noqa: E402  (the same measurement as the decoder benchmark)


def _rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--text-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)

    import vlexport
    from vlexport.bench.machine import machine_info

    R = {"machine": machine_info(args.threads), "artifact": str(args.artifact)}
    t = time.perf_counter()
    model = vlexport.load(args.artifact, precision="int4", intra_op_num_threads=args.threads)
    R["load_s"], R["rss_after_load_gib"] = round(time.perf_counter() - t, 1), round(_rss_gib(), 2)
    R["chosen_because"] = model.chosen_because
    cfg = model._cfg
    rng = np.random.default_rng(0)
    text = rng.integers(3, 31000, size=args.text_tokens)
    ids = np.concatenate([[1], text[:20], np.full(cfg.image_seq_length, cfg.image_token_index), text[20:]])[None]
    px = rng.uniform(-1.8, 2.1, size=(1, 3, cfg.vision_config.image_size, cfg.vision_config.image_size)).astype(np.float32)
    P, n = ids.shape[1], args.new_tokens

    model.get_image_features(px)  # warm-up
    t = time.perf_counter()
    model.get_image_features(px)
    R["vision_ms"] = round(1000 * (time.perf_counter() - t), 1)
    times = []

    def stamp(_):
        times.append(time.perf_counter())

    from vlexport.bench.harness import CpuLoad

    t0 = time.perf_counter()
    with CpuLoad() as load:  # what else ran meanwhile (a shared machine skews every figure here)
        out = model.generate(input_ids=ids, pixel_values=px, max_new_tokens=n, min_length=P + n, streamer=stamp)
    R["cpu_load_during_generate"] = load.summary()
    steps = np.diff([t0] + times)
    R["prompt_tokens"], R["new_tokens"] = int(P), int(out.shape[1] - P)
    R["ttft_s"] = round(float(steps[0]), 2)
    R["decode_step_ms_median"] = round(1000 * float(np.median(steps[1:])), 1)
    R["decode_tokens_per_s"] = round(1 / float(np.median(steps[1:])), 2)
    bw = bandwidth()
    entry = model.artifact.onnx_entry("decoder", "int4")
    weight_bytes = entry.get("projection_bytes") or entry["bytes"]
    R["bandwidth"] = bw
    R["decoder_weight_bytes_per_token"] = int(weight_bytes)
    R["decode_limit_tokens_per_s"] = round(bw["copy_gbps"] * 1e9 / weight_bytes, 2)
    R["fraction_of_limit"] = round(R["decode_tokens_per_s"] / R["decode_limit_tokens_per_s"], 3)
    R["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps({k: v for k, v in R.items() if k != "machine"}, indent=1))

    stem = args.out / f"{date.today().isoformat()}-vipllava-7b-e2e-cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(R, indent=2) + "\n")
    m = R["machine"]
    rows = [("load (3 graphs) / RSS after load", f"{R['load_s']} s / {R['rss_after_load_gib']} GiB"),
            ("vision graph, 1 image (fp32)", f"{R['vision_ms']} ms"),
            (f"time to first token ({P}-token prompt: vision + embed + prefill)", f"{R['ttft_s']} s"),
            ("decode (int4 decoder), median step", f"{R['decode_step_ms_median']} ms = **{R['decode_tokens_per_s']} tokens/s**"),
            ("memory bandwidth, 2-thread copy (read + write)", f"{bw['copy_gbps']} GB/s"),
            ("decoder weight bytes read per token", f"{weight_bytes / 1e9:.3f} GB"),
            ("limit = bandwidth / weight bytes", f"{R['decode_limit_tokens_per_s']} tokens/s"),
            ("**fraction of the limit** (target >= 60%)", f"**{100 * R['fraction_of_limit']:.0f}%**"),
            ("peak RSS", f"{R['peak_rss_gib']} GiB"),
            ("CPU cores used by other processes during generate()",
             f"{R['cpu_load_during_generate'].get('others_cores', 'n/a')} of {m.get('logical_cores')}")]
    md = ["# VipLlava 7B (random weights) end to end through vlexport.load, B=1, CPU", "",
          f"Machine: {m.get('cpu')} ({m.get('threads_used')} threads; {' '.join(m.get('cpu_flags') or [])}), "
          f"{m.get('date')}. `python benchmarks/run_vipllava_full.py ART --new-tokens {n}`; backends: "
          f"{R['chosen_because']}", "", "| figure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {stem}.json/.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
