#!/usr/bin/env python
"""VisionEncoderDecoder captioning on CPU (nlpconnect/vit-gpt2-image-captioning: ViT-B/16 + GPT-2 small
with cross-attention, random weights): encoder time, time to first token, per-token decode latency
and tokens/s, transformers eager `generate()` vs our runtime (ONNX Runtime fp32 / fp16 / int8).

    python benchmarks/run_captioner.py --artifact /tmp/vitgpt2          # an artifact built with --fp16 --int8
    python benchmarks/run_captioner.py                                   # builds one into a temp folder first
    python benchmarks/run_captioner.py --artifact /tmp/tinycap --new-tokens 8 --stem smoke   # smoke test
    python benchmarks/run_captioner.py --from-json results/X.json        # re-render the Markdown and plot

Method (one process, identical inputs for every backend):
- transformers: `VisionEncoderDecoderModel` built from the artifact's config, our weights loaded by HF
  key (`from_pretrained(None, config=..., state_dict=...)`, no missing key allowed), eager PyTorch with
  transformers' default attention, `generate(use_cache=True)`, fp32, `torch.set_num_threads(threads)`.
  Ours: `vlexport.load(artifact, precision=..., intra_op_num_threads=threads, allow_spinning=False)`
  and `m.generate(...)`. OMP_WAIT_POLICY=PASSIVE is set before torch loads (see benchmarks/README.md).
- Greedy, `max_new_tokens=N` and `min_length=N+1` on both sides, so neither stops early at eos
  (the same min-length processor on both: eos gets -inf until N tokens exist).
- Timestamps (time.perf_counter): call start; encoder done (HF: its streamer's first put, which
  transformers makes with the decoder prompt right after the encoder ran; ours: `m.encode` wrapped);
  each new token (HF: a `BaseStreamer`, called once per step after token selection; ours: the
  `streamer` callback, called at the same point of the loop); return. TTFT = first token - call
  start (encoder included). Step latency at position i = token i - token i-1 (i >= 2); position 1 =
  first token - encoder done (the first decoder step). Per-token p50 pools positions 2..N of every
  timed round. Tokens/s = B x N / end-to-end generate time (p50 over rounds); decode tokens/s = B /
  per-token p50.
- Encoder time alone: HF `model.encoder(pixel_values)` (the ViT); ours `m.encode` (the encoder graph:
  the ViT plus every decoder layer's cross-attention K/V projections, which HF computes in its first
  decoder step instead, so TTFT is the like-for-like figure).
- Rounds: one warm-up round (not timed: it gives the per-step breakdown, with hooks, and the logit
  margins), then `--rounds` timed rounds. Each round runs every batch size and, within it, every
  backend once (encoder calls, then one generate), in an order rotated each round, so drift hits all
  backends alike. CPU load (this process vs others, from /proc/stat) is recorded per round and batch.
- Parity: every backend's greedy ids against transformers' on the same inputs in the same round
  (fp32 must be identical; fp16 / int8: fraction of generated tokens equal, position by position,
  and the first position where a row diverges).
- Where the time goes: in the warm-up round, the time inside the graph call per step (ours:
  `session.run`; HF: the decoder module's forward) vs the rest of the loop; then, unless
  --profile-steps 0, an ONNX Runtime profile of each precision's decoder graph over that many steps
  (op types' share of the step), and the decoder's weight bytes / per-token latency (the memory
  traffic a B=1 step needs at least once per token).
Writes benchmarks/results/<stem>.{json,md} and <stem>_per_token_latency.png.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "nlpconnect/vit-gpt2-image-captioning"
BACKENDS = ("transformers", "ort-fp32", "ort-fp16", "ort-int8")
BASELINE = "transformers"
# The target: ORT fp32 >= 2x transformers eager in per-token decode latency, B=1, greedy.
TARGET = {"name": "ORT fp32 vs transformers eager, per-token decode latency p50, B=1, greedy", "backend": "ort-fp32",
          "batch": 1, "goal": 2.0}
FLAT_TOLERANCE = 0.10  # "flat": the fitted line changes by less than 10% from position 2 to N


# ------------------------------------------------------------------------------------------ backends
class Recorder:
    """Timestamps of one generate() call."""

    def __init__(self):
        self.t0 = self.t_enc = self.t_end = None
        self.tokens: list[float] = []

    def encoded(self):
        if self.t_enc is None:
            self.t_enc = time.perf_counter()

    def token(self, *_):
        self.tokens.append(time.perf_counter())

    def summary(self) -> dict:
        import numpy as np

        t = np.asarray(self.tokens)
        steps = np.diff(np.concatenate([[self.t_enc], t]))  # position 1: first decoder step
        return {"total_s": self.t_end - self.t0, "encoder_in_generate_s": self.t_enc - self.t0,
                "ttft_s": float(t[0] - self.t0), "step_s": [float(x) for x in steps]}


class HFBackend:
    name = "transformers"

    def __init__(self, artifact_path: Path, threads: int, attn: str | None):
        import torch
        import transformers as T

        from vlexport.artifact import Artifact
        from vlexport.runtime.backends.torch import reference_model

        self.torch = torch
        torch.set_num_threads(threads)
        art = Artifact(artifact_path)
        c = art.config
        enc = {k: v for k, v in c["encoder"].items() if k != "model_type"}
        dec = {k: v for k, v in c["decoder"].items() if k != "model_type"}
        if c["encoder"].get("model_type", "vit") != "vit" or c["decoder"].get("model_type", "gpt2") != "gpt2":
            raise SystemExit("this driver builds the transformers side as ViT + GPT-2")
        cfg = T.VisionEncoderDecoderConfig.from_encoder_decoder_configs(T.ViTConfig(**enc), T.GPT2Config(**dec))
        ids = {k: c.get(k) for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id")}
        ids["decoder_start_token_id"] = ids["decoder_start_token_id"] or c["decoder"].get("bos_token_id")
        ids["eos_token_id"] = ids["eos_token_id"] if ids["eos_token_id"] is not None else c["decoder"].get("eos_token_id")
        for k, v in ids.items():
            setattr(cfg, k, v)
        self.ours = reference_model(art).eval()
        kw = {"attn_implementation": attn} if attn else {}
        model, info = T.VisionEncoderDecoderModel.from_pretrained(
            None, config=cfg, state_dict=self.ours.state_dict(), output_loading_info=True, **kw)
        missing = [k for k in info["missing_keys"] if not k.endswith(("lm_head.weight", ".attn.bias", "position_ids"))]
        if missing:
            raise SystemExit(f"our state dict lacks HF keys {sorted(missing)[:5]}")
        self.loading = {k: sorted(v)[:10] for k, v in info.items() if k != "error_msgs"}
        self.model = model.float().eval()
        if self.model.decoder.lm_head.weight.data_ptr() != self.model.decoder.transformer.wte.weight.data_ptr():
            with torch.no_grad():  # untied lm_head: it must still be our (tied) weights
                self.model.decoder.lm_head.weight.copy_(self.ours.state_dict()["decoder.lm_head.weight"])
        g = self.model.generation_config
        for k, v in ids.items():
            setattr(g, k, v)
        self.ids = ids
        self.attn = self.model.config.decoder._attn_implementation
        self._timer = None

    def check_weights(self, px) -> dict:
        """HF vs our PyTorch reference on the benchmark images (teacher-forced logits over 8 positions)."""
        torch = self.torch
        x = torch.from_numpy(px)
        dec = torch.full((px.shape[0], 8), self.ids["decoder_start_token_id"], dtype=torch.long)
        dec[:, 1:] = torch.randint(0, self.model.config.decoder.vocab_size, (px.shape[0], 7),
                                   generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            a = self.model(pixel_values=x, decoder_input_ids=dec).logits
            b = self.ours(pixel_values=x, decoder_input_ids=dec).logits
        return {"max_abs_diff_logits": float((a - b).abs().max()), "logit_scale": float(a.abs().max())}

    def encode(self, px):
        with self.torch.inference_mode():
            return self.model.encoder(pixel_values=self.torch.from_numpy(px)).last_hidden_state

    def generate(self, px, n: int, rec: Recorder, instrument: dict | None = None):
        from transformers.generation.streamers import BaseStreamer
        from transformers import LogitsProcessor, LogitsProcessorList

        torch = self.torch

        class Streamer(BaseStreamer):
            first = True

            def put(self, value):
                if self.first:  # the decoder prompt, put right after the encoder ran
                    self.first = False
                    rec.encoded()
                else:
                    rec.token()

            def end(self):
                pass

        extra, hooks = {}, []
        if instrument is not None:
            fwd = instrument.setdefault("forward_s", [])
            margins = instrument.setdefault("margins", [])

            class Margin(LogitsProcessor):
                def __call__(self, input_ids, scores):
                    top = torch.topk(scores.float(), 2, dim=-1).values
                    margins.extend((top[:, 0] - top[:, 1]).tolist())
                    return scores

            # appended after transformers' own processors (min_length): the margin greedy decides on
            extra["logits_processor"] = LogitsProcessorList([Margin()])
            start = {}
            hooks = [self.model.decoder.register_forward_pre_hook(lambda *_: start.__setitem__("t", time.perf_counter())),
                     self.model.decoder.register_forward_hook(lambda *_: fwd.append(time.perf_counter() - start["t"]))]
        try:
            with torch.inference_mode():
                rec.t0 = time.perf_counter()
                out = self.model.generate(pixel_values=torch.from_numpy(px), max_new_tokens=n, min_length=n + 1,
                                          num_beams=1, do_sample=False, use_cache=True, streamer=Streamer(), **extra)
                rec.t_end = time.perf_counter()
        finally:
            for h in hooks:
                h.remove()
        return out.numpy()


class OrtBackend:
    def __init__(self, artifact_path: Path, precision: str, threads: int):
        import vlexport

        self.name = f"ort-{precision}"
        self.precision = precision
        self.m = vlexport.load(str(artifact_path), backend="onnxruntime", precision=precision,
                               intra_op_num_threads=threads, allow_spinning=False)
        self.rec = None
        self.session_s = None
        original = self.m.encode

        def encode(pixel_values):  # the pipeline's generate() calls self.encode: mark when it is done
            out = original(pixel_values)
            if self.rec is not None:
                self.rec.encoded()
            return out

        self.m.encode = encode
        self._encode = original
        sess = self.m.backends["decoder"].session
        run = sess.run

        def timed_run(*a, **k):  # only while instrumenting; otherwise session.run is called as is
            t = time.perf_counter()
            out = run(*a, **k)
            if self.session_s is not None:
                self.session_s.append(time.perf_counter() - t)
            return out

        self._sess, self._run, self._timed_run = sess, run, timed_run

    def encode(self, px):
        return self._encode(px)

    def generate(self, px, n: int, rec: Recorder, instrument: dict | None = None):
        self.rec = rec
        if instrument is not None:
            self.session_s = instrument.setdefault("forward_s", [])
            self._sess.run = self._timed_run
        try:
            rec.t0 = time.perf_counter()
            out = self.m.generate(pixel_values=px, max_new_tokens=n, min_length=n + 1, num_beams=1, streamer=rec.token)
            rec.t_end = time.perf_counter()
        finally:
            self.rec = None
            self.session_s = None
            if instrument is not None:
                del self._sess.run  # back to the class's method
        return out


# --------------------------------------------------------------------------------------- statistics
def parity(ids, ref) -> dict:
    import numpy as np

    a, b = np.asarray(ids)[:, 1:], np.asarray(ref)[:, 1:]  # generated tokens (the start token dropped)
    n = min(a.shape[1], b.shape[1])
    eq = a[:, :n] == b[:, :n]
    first = [int(np.argmin(r)) + 1 if not r.all() else None for r in eq]  # 1-based first diverging position
    return {"identical": bool(a.shape == b.shape and eq.all()), "token_agreement": float(eq.mean()),
            "rows_identical": float(np.mean([f is None for f in first])), "first_divergence": first}


def flatness(positions, ms) -> dict:
    """Least-squares line through per-position p50 latency (positions 2..N)."""
    import numpy as np

    x, y = np.asarray(positions, float), np.asarray(ms, float)
    if len(x) < 3:
        return {}
    slope, intercept = np.polyfit(x, y, 1)
    start, end = intercept + slope * x[0], intercept + slope * x[-1]
    k = max(1, min(8, len(y) // 4))
    return {"slope_ms_per_position": float(slope), "fit_start_ms": float(start), "fit_end_ms": float(end),
            "fit_change": float((end - start) / start), "first_mean_ms": float(y[:k].mean()),
            "last_mean_ms": float(y[-k:].mean()), "window": k,
            "flat": bool(abs((end - start) / start) < FLAT_TOLERANCE)}


def summarize(runs: list[dict], encoder_s: list[float], batch: int, n: int) -> dict:
    import numpy as np

    from vlexport.bench import timing as stats

    steps = np.asarray([r["step_s"] for r in runs])  # (rounds, N)
    decode = steps[:, 1:].ravel()
    per_pos = np.median(steps, axis=0) * 1e3
    tok = stats.latency_summary(decode)
    total = float(np.median([r["total_s"] for r in runs]))
    out = {"batch": batch, "new_tokens": n, "rounds": len(runs),
           "encoder_ms": stats.latency_summary(encoder_s)["p50_ms"],
           "encoder_in_generate_ms": float(np.median([r["encoder_in_generate_s"] for r in runs]) * 1e3),
           "ttft_ms": float(np.median([r["ttft_s"] for r in runs]) * 1e3),
           "first_step_ms": float(np.median(steps[:, 0]) * 1e3),
           "per_token_ms": {k: tok[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "n")},
           "generate_ms": total * 1e3, "tokens_per_s": batch * n / total,
           "decode_tokens_per_s": batch / (tok["p50_ms"] / 1e3),
           "per_position_p50_ms": [float(v) for v in per_pos]}
    out["flatness"] = flatness(range(2, n + 1), per_pos[1:])
    return out


def breakdown(instr: dict, runs_steps: list[float]) -> dict:
    import numpy as np

    if not instr.get("forward_s"):
        return {}
    fwd = np.asarray(instr["forward_s"][1:]) * 1e3  # drop the first (prefill of the start token)
    step = np.asarray(runs_steps[1:]) * 1e3
    out = {"step_ms": float(np.median(step)), "in_graph_ms": float(np.median(fwd)),
           "what_in_graph": instr.get("what")}
    out["outside_ms"] = out["step_ms"] - out["in_graph_ms"]
    if instr.get("margins"):
        m = np.asarray(instr["margins"])
        out["logit_margin"] = {"min": float(m.min()), "p10": float(np.percentile(m, 10)), "median": float(np.median(m))}
    return out


# ------------------------------------------------------------------------------------ ORT profiling
def profile_decoder(artifact_path: Path, precision: str, threads: int, batch: int, steps: int, cross: dict,
                    capacity: int, work: Path) -> dict:
    """The decoder graph of one precision in a profiling ORT session (opened as vlexport.load opens it:
    ORT_ENABLE_ALL, `threads` intra-op threads, no spinning), `steps` greedy steps through a cache of
    `capacity` slots; op types' time per step (the first 2 steps dropped)."""
    import numpy as np
    import onnxruntime as ort

    from vlexport.artifact import Artifact
    from vlexport.runtime.generation import LayerKVCache

    art = Artifact(artifact_path)
    d = art.config["decoder"]
    L, nh, hs = d["n_layer"], d["n_head"], d["n_embd"] // d["n_head"]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = str(work / f"ort-profile-{precision}-b{batch}")
    sess = ort.InferenceSession(str(art.onnx_file("decoder", precision)), so, providers=["CPUExecutionProvider"])
    types = {i.name: {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(i.type, np.int64)
             for i in sess.get_inputs()}
    cache = LayerKVCache(L, batch, nh, capacity, hs)
    cross = {k: v for k, v in cross.items() if k.startswith("cross_")}
    ids = np.full((batch, 1), int(art.config.get("decoder_start_token_id") or d.get("bos_token_id") or 0), np.int64)
    wall = []
    for s in range(min(steps, capacity)):
        feeds = {"input_ids": ids, "position_ids": np.full((batch, 1), s, np.int64), "cache_mask": cache.mask,
                 **cross}
        for i in range(L):
            feeds[f"past_key.{i}"], feeds[f"past_value.{i}"] = cache.keys[i], cache.values[i]
        feeds = {k: np.ascontiguousarray(v, dtype=types[k]) for k, v in feeds.items()}
        names = ["logits", *(f"new_{kv}.{i}" for i in range(L) for kv in ("key", "value"))]
        t = time.perf_counter()
        logits, *new = sess.run(names, feeds)
        wall.append(time.perf_counter() - t)
        cache.write(new[0::2], new[1::2], np.ones((batch, 1), np.int64))
        ids = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
    prof = Path(sess.end_profiling())
    events = json.loads(prof.read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[2:]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in runs]
    by_op: dict = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        if not any(a <= e["ts"] <= b for a, b in windows):
            continue
        op = e.get("args", {}).get("op_name", "?")
        by_op[op] = by_op.get(op, 0.0) + e["dur"]
    n = max(1, len(runs))
    run_us = sum(e["dur"] for e in runs) / n
    ops = {k: v / n / 1e3 for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}
    nodes_ms = sum(ops.values())
    prof.unlink(missing_ok=True)
    del sess
    gc.collect()
    return {"precision": precision, "batch": batch, "steps_profiled": n, "model_run_ms": run_us / 1e3,
            "nodes_ms": nodes_ms, "wall_ms_unprofiled_p50": float(np.median(np.asarray(wall[2:]) * 1e3)) if len(wall) > 2 else None,
            "ops_ms": {k: round(v, 3) for k, v in ops.items()},
            "ops_share": {k: round(v / nodes_ms, 4) for k, v in ops.items()} if nodes_ms else {}}


def gemv_rate(threads: int, k: int, n: int, repeats: int = 7) -> dict:
    """The B=1 ceiling: a one-node ONNX Runtime MatMul (1, k) x (k, n) fp32 - a matrix-vector product that
    streams k*n*4 bytes of weights per call (the lm_head's shape by default) - best of `repeats`, in a session
    opened like vlexport.load's. GB/s of weights read."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    del w
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    del model
    x = rng.standard_normal((1, k), dtype=np.float32)
    for _ in range(2):
        sess.run(None, {"x": x})
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {"x": x})
        best = min(best, time.perf_counter() - t)
    del sess
    gc.collect()
    return {"shape": [1, k, n], "bytes": k * n * 4, "best_ms": best * 1e3, "gb_per_s": k * n * 4 / best / 1e9}


def graph_notes(artifact_path) -> dict:
    """Per decoder precision: the graph inputs cast on every step, and whether the vocab-sized lm_head weight
    feeds a float MatMul (i.e. stayed unquantized in the int8 graph)."""
    import onnx

    from vlexport.artifact import Artifact

    art = Artifact(artifact_path)
    vocab = art.config["decoder"]["vocab_size"]
    out = {}
    for p in art.graph_entry("decoder").get("onnx", {}):
        g = onnx.load(str(art.onnx_file("decoder", p)), load_external_data=False).graph
        inputs = {i.name for i in g.input}
        big = {i.name for i in g.initializer if vocab in i.dims}
        through = set(big)
        for n in g.node:  # follow Transpose / Cast of the weight
            if n.op_type in ("Transpose", "Cast") and n.input and n.input[0] in through:
                through.update(n.output)
        out[p] = {"inputs_cast": sorted({n.input[0] for n in g.node if n.op_type == "Cast" and n.input[0] in inputs}),
                  "lm_head_float_matmul": any(n.op_type in ("MatMul", "Gemm") and any(x in through for x in n.input)
                                              for n in g.node)}
    return out


# ------------------------------------------------------------------------------------------- driver
def run(args) -> dict:
    import numpy as np

    from vlexport.artifact import Artifact
    from vlexport.bench.harness import CpuLoad
    from vlexport.bench.machine import machine_info

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    whole = CpuLoad().__enter__()
    art = Artifact(args.artifact)
    cfg = art.config
    past = art.manifest["axes"]["past"]
    n = args.new_tokens
    if not past[0] <= n + 1 <= past[2]:
        raise SystemExit(f"{n} new tokens need a cache of {n + 1} positions; the artifact's past range is "
                         f"{past[0]}..{past[2]}")
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    batches = [int(b) for b in args.batches.split(",") if b]
    precisions = {p for p in art.graph_entry("decoder").get("onnx", {})}
    backends, load_s, skipped = {}, {}, {}
    for name in names:
        t = time.perf_counter()
        if name == "transformers":
            backends[name] = HFBackend(args.artifact, args.threads, args.hf_attn)
        elif name.startswith("ort-"):
            p = name[4:]
            if p not in precisions:
                skipped[name] = f"the artifact has no {p} decoder graph (build with --{p})"
                continue
            backends[name] = OrtBackend(args.artifact, p, args.threads)
        else:
            raise SystemExit(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
        load_s[name] = round(time.perf_counter() - t, 2)
        print(f"loaded {name} in {load_s[name]:.1f} s", file=sys.stderr)
    enc = cfg["encoder"]
    rng = np.random.default_rng(args.seed)
    images = {b: rng.uniform(-1, 1, size=(b, enc.get("num_channels", 3), enc["image_size"], enc["image_size"]))
              .astype(np.float32) for b in batches}
    hf = backends.get(BASELINE)
    weights_check = hf.check_weights(images[batches[0]]) if hf else None
    if hf:
        hf.ours = None  # our PyTorch reference served the check; free its copy of the weights
        gc.collect()

    order = list(backends)
    runs = {b: {k: [] for k in backends} for b in batches}
    enc_s = {b: {k: [] for k in backends} for b in batches}
    ids = {b: {k: [] for k in backends} for b in batches}
    instr = {b: {k: {} for k in backends} for b in batches}
    warm_steps = {b: {} for b in batches}
    loads = []
    total_rounds = args.warmup + args.rounds
    for r in range(total_rounds):
        timed = r >= args.warmup
        rot = order[r % len(order):] + order[:r % len(order)]
        for b in batches:
            px = images[b]
            with CpuLoad() as ld:
                for name in rot:
                    be = backends[name]
                    for _ in range(args.encoder_reps):
                        t = time.perf_counter()
                        be.encode(px)
                        if timed:
                            enc_s[b][name].append(time.perf_counter() - t)
                    rec = Recorder()
                    out = be.generate(px, n, rec, instrument=None if timed else instr[b][name])
                    s = rec.summary()
                    if len(s["step_s"]) != n:
                        raise SystemExit(f"{name} generated {len(s['step_s'])} tokens at B={b}, not {n}")
                    ids[b][name].append(np.asarray(out).tolist())
                    if timed:
                        runs[b][name].append({"round": r, "slot": rot.index(name), **s})
                    else:
                        warm_steps[b][name] = s["step_s"]
            if timed:
                loads.append({"round": r, "batch": b, **ld.summary()})
            msg = ", ".join(f"{k} {np.median(runs[b][k][-1]['step_s'][1:]) * 1e3:.1f}" for k in order) if timed else "warm-up"
            print(f"round {r} B={b}: per-token ms {msg}", file=sys.stderr)
        gc.collect()

    results = {}
    for b in batches:
        for name in backends:
            res = summarize(runs[b][name], enc_s[b][name], b, n)
            res["breakdown"] = breakdown({**instr[b][name], "what": "decoder forward (module hooks)" if name == BASELINE
                                          else "decoder session.run"}, warm_steps[b][name])
            if hf:
                res["parity_vs_transformers"] = [parity(ids[b][name][i], ids[b][BASELINE][i])
                                                 for i in range(len(ids[b][name]))]
                pv = res["parity_vs_transformers"]
                res["parity"] = {"identical_all_rounds": all(p["identical"] for p in pv),
                                 "token_agreement": float(np.mean([p["token_agreement"] for p in pv])),
                                 "rows_identical": float(np.mean([p["rows_identical"] for p in pv])),
                                 "first_divergence": pv[-1]["first_divergence"]}
            res["deterministic_across_rounds"] = all(x == ids[b][name][0] for x in ids[b][name])
            res["distinct_tokens"] = int(len({t for row in ids[b][name][-1] for t in row[1:]}))
            results[f"{name} B={b}"] = {"backend": name, **res}
        if hf:
            base = results[f"{BASELINE} B={b}"]
            for name in backends:
                e = results[f"{name} B={b}"]
                e["vs_transformers"] = {
                    "per_token": base["per_token_ms"]["p50_ms"] / e["per_token_ms"]["p50_ms"],
                    "ttft": base["ttft_ms"] / e["ttft_ms"], "encoder": base["encoder_ms"] / e["encoder_ms"],
                    "tokens_per_s": e["tokens_per_s"] / base["tokens_per_s"]}

    profiles = []
    if args.profile_steps:
        for b in batches:
            for name, be in backends.items():
                if isinstance(be, OrtBackend):
                    cross = be.encode(images[b])
                    profiles.append(profile_decoder(args.artifact, be.precision, args.threads, b, args.profile_steps + 2,
                                                    cross, n + 1, Path(args.work)))
                    print(f"profiled {name} B={b}", file=sys.stderr)
    weights = {p: art.onnx_entry("decoder", p).get("bytes") for p in precisions}
    bandwidth = {}
    for name, be in backends.items():
        if isinstance(be, OrtBackend) and weights.get(be.precision) and f"{name} B=1" in results:
            ms = results[f"{name} B=1"]["per_token_ms"]["p50_ms"]
            bandwidth[name] = {"decoder_bytes": weights[be.precision], "gb_per_s": weights[be.precision] / (ms / 1e3) / 1e9}
    if hf:
        nbytes = sum(p.numel() * p.element_size() for p in hf.model.decoder.parameters())
        ms = results.get(f"{BASELINE} B=1", {}).get("per_token_ms", {}).get("p50_ms")
        if ms:
            bandwidth[BASELINE] = {"decoder_bytes": nbytes, "gb_per_s": nbytes / (ms / 1e3) / 1e9}
    d_cfg = cfg["decoder"]
    gemv = gemv_rate(args.threads, d_cfg["n_embd"], d_cfg["vocab_size"]) if args.gemv else None
    if gemv:
        for v in bandwidth.values():
            v["share_of_gemv_rate"] = v["gb_per_s"] / gemv["gb_per_s"]
    notes = graph_notes(args.artifact)
    whole.__exit__(None, None, None)
    target = None
    key = f"{TARGET['backend']} B={TARGET['batch']}"
    if hf and key in results:
        v = results[key]["vs_transformers"]["per_token"]
        target = {**TARGET, "value": v, "met": bool(v >= TARGET["goal"])}
    machine = machine_info(args.threads)
    return {
        "title": TITLE, "model": art.manifest.get("source", {}).get("model"), "artifact": str(args.artifact),
        "config": {"encoder": {k: enc.get(k) for k in ("hidden_size", "num_hidden_layers", "image_size", "patch_size")},
                   "decoder": {k: cfg["decoder"].get(k) for k in ("n_embd", "n_layer", "n_head", "vocab_size")}},
        "settings": {"new_tokens": n, "min_length": n + 1, "batches": batches, "rounds": args.rounds,
                     "warmup_rounds": args.warmup, "encoder_reps": args.encoder_reps, "threads": args.threads,
                     "greedy": True, "num_beams": 1, "use_cache": True, "seed": args.seed,
                     "hf_attention": hf.attn if hf else None, "hf_ids": hf.ids if hf else None,
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "ort_allow_spinning": False},
        "machine": machine, "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg()),
        "load": whole.summary(), "load_per_round": loads, "load_seconds": load_s, "skipped": skipped,
        "hf_weights_check": weights_check, "hf_loading": hf.loading if hf else None,
        "results": results, "target": target, "profiles": profiles, "bandwidth": bandwidth, "gemv": gemv, "graph_notes": notes,
        "runs": {f"{k} B={b}": runs[b][k] for b in batches for k in backends},
        "encoder_s": {f"{k} B={b}": enc_s[b][k] for b in batches for k in backends},
        "ids_last_round": {f"{k} B={b}": ids[b][k][-1] for b in batches for k in backends},
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def per_round(d: dict) -> dict:
    """{"<backend> B=<b>": {"p50_ms": [per timed round], "vs_transformers": [HF's p50 / this one, same round]}}:
    per-token p50 (positions 2..N) of each round, from the raw step times."""
    import numpy as np

    out = {}
    for key, runs in d.get("runs", {}).items():
        out[key] = {"rounds": [r["round"] for r in runs],
                    "p50_ms": [float(np.median(r["step_s"][1:]) * 1e3) for r in runs]}
    for key, e in out.items():
        base = out.get(f"{BASELINE} B={key.rsplit('B=', 1)[1]}")
        if base and base["rounds"] == e["rounds"]:
            e["vs_transformers"] = [b / x for b, x in zip(base["p50_ms"], e["p50_ms"])]
    return out


BUSY_CORES = 0.25  # a timed round in which other processes used this many cores or more counts as busy


def quiet_target(d: dict):
    """The target ratio over the quiet timed rounds only (None when every round or none was quiet)."""
    import numpy as np

    t = d.get("target")
    loads = d.get("load_per_round") or []
    busy = {x["round"] for x in loads if x.get("others_cores", 0) >= BUSY_CORES}
    if not t or not busy:
        return None
    runs = d["runs"]
    ours, base = runs.get(f"{t['backend']} B={t['batch']}"), runs.get(f"{BASELINE} B={t['batch']}")
    keep = lambda rs: [x for r in rs if r["round"] not in busy for x in r["step_s"][1:]]  # noqa: E731
    if not ours or not base or not keep(ours):
        return None
    return {"rounds": sorted({r["round"] for r in ours} - busy), "busy_rounds": sorted(busy),
            "value": float(np.median(keep(base)) / np.median(keep(ours)))}


# ------------------------------------------------------------------------------------------- report
TITLE = "VisionEncoderDecoder captioning (ViT-B/16 + GPT-2 small, random weights) on CPU: generate()"


def _table(cols, rows) -> str:
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows])


def markdown(d: dict) -> str:
    from vlexport.bench.report import machine_line

    s, res = d["settings"], d["results"]
    m = d["machine"]
    hf = any(e["backend"] == BASELINE for e in res.values())
    lines = [f"# {TITLE}", "", f"Machine: {machine_line({'machine': m})}", ""]
    la, lb, ld = d["load_avg_before"], d["load_avg_after"], d.get("load") or {}
    others = [x["others_cores"] for x in d.get("load_per_round", []) if "others_cores" in x]
    lines.append(f"Load: 1/5/15-min load average {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} before, {lb[0]:.2f}/{lb[1]:.2f}/"
                 f"{lb[2]:.2f} after; over the whole run this process used {ld.get('self_cores', float('nan')):.2f} "
                 f"cores and other processes {ld.get('others_cores', float('nan')):.2f} of {ld.get('logical_cores')}"
                 + (f" (per timed round and batch: {min(others):.2f}-{max(others):.2f})" if others else "") + ".")
    lines += ["", f"Artifact `{d['artifact']}` ({d.get('model')}); {s['new_tokens']} new tokens, greedy, "
              f"min_length={s['min_length']} on both sides (no early eos), {s['threads']} threads, "
              f"{s['rounds']} timed rounds after {s['warmup_rounds']} warm-up, backends interleaved in a rotating order; "
              f"transformers attention: {s['hf_attention']}. Run took {d['seconds']:.0f} s."
              + "".join(f" Skipped {k}: {v}." for k, v in (d.get("skipped") or {}).items()), ""]
    lines += ["## Results", "",
              "Per backend and batch: encoder alone (p50 of the encoder calls), time to first token (encoder included), "
              "per-token decode latency (positions 2..N, p50 and p90), end-to-end tokens/s (B x N / generate time) "
              "and decode tokens/s (B / per-token p50); x HF = transformers eager's figure / this one (for tokens/s: "
              "this one / transformers').", ""]
    rows = []
    for k, e in res.items():
        v = e.get("vs_transformers", {})
        x = (lambda key: f"{v[key]:.2f}x" if key in v else "-")
        rows.append([e["backend"], str(e["batch"]), f"{e['encoder_ms']:.1f}", x("encoder"), f"{e['ttft_ms']:.1f}", x("ttft"),
                     f"{e['per_token_ms']['p50_ms']:.2f}", f"{e['per_token_ms']['p90_ms']:.2f}", x("per_token"),
                     f"{e['tokens_per_s']:.1f}", x("tokens_per_s"), f"{e['decode_tokens_per_s']:.1f}"])
    lines.append(_table(["backend", "B", "encoder ms", "x HF", "TTFT ms", "x HF", "per-token p50 ms", "p90 ms",
                         "x HF", "tokens/s", "x HF", "decode tokens/s"], rows))
    t = d.get("target")
    lines += ["", "## Target", ""]
    pr = per_round(d)
    if t:
        lines.append(f"{t['name']}: goal >= {t['goal']:g}x, measured **{t['value']:.2f}x** (p50 over all timed rounds' "
                     f"positions 2..N): **{'met' if t['met'] else 'MISSED'}**.")
        r = pr.get(f"{t['backend']} B={t['batch']}", {}).get("vs_transformers")
        if r:
            k = sum(x >= t["goal"] for x in r)
            lines.append(f"Round by round (same round, side by side): {', '.join(f'{x:.2f}x' for x in r)}; "
                         f"{k} of {len(r)} rounds at or above {t['goal']:g}x"
                         + (" - the margin is thin: a busier machine or another run can land below the goal."
                            if min(r) < t["goal"] else "."))
        q = quiet_target(d)
        if q:
            lines.append(f"Over the quiet rounds only ({', '.join(map(str, q['rounds']))}; other processes used >= "
                         f"{BUSY_CORES} cores in round(s) {', '.join(map(str, q['busy_rounds']))}): {q['value']:.2f}x.")
    else:
        lines.append("Not measured (transformers or ORT fp32 missing from this run).")
    if pr:
        lines += ["", "Per-token p50 of each timed round (ms), and x transformers in the same round:", ""]
        rows = [[key.split(" B=")[0], key.split(" B=")[1], ", ".join(f"{x:.1f}" for x in e["p50_ms"]),
                 ", ".join(f"{x:.2f}x" for x in e.get("vs_transformers", []))] for key, e in pr.items()]
        lines.append(_table(["backend", "B", "per-token p50 per round ms", "x HF per round"], rows))
    lines += ["", "## Per-token latency vs position (is it flat?)", "",
              f"Least-squares line through the per-position p50 (positions 2..{s['new_tokens']}, over the timed rounds); "
              f"'flat' when the line changes by less than {FLAT_TOLERANCE:.0%} from position 2 to {s['new_tokens']}. "
              "Position 1 is the first decoder step (the start token; HF also computes the cross-attention K/V there).", ""]
    rows = []
    for k, e in res.items():
        f = e.get("flatness") or {}
        if f:
            rows.append([e["backend"], str(e["batch"]), f"{e['first_step_ms']:.1f}", f"{f['slope_ms_per_position'] * 1e3:+.1f}",
                         f"{f['fit_start_ms']:.2f} -> {f['fit_end_ms']:.2f}", f"{f['fit_change']:+.1%}",
                         f"{f['first_mean_ms']:.2f} / {f['last_mean_ms']:.2f}", "yes" if f["flat"] else "no"])
    lines.append(_table(["backend", "B", "position 1 ms", "slope us/position", "fit ms (2 -> N)", "change",
                         f"mean first / last {next(iter(res.values()))['flatness'].get('window', 8)} ms", "flat"], rows))
    lines += ["", f"Plot: `{d.get('plot', '')}`.", ""]
    if hf:
        lines += ["## Parity (greedy ids vs transformers, same inputs, every timed round)", ""]
        rows = []
        for k, e in res.items():
            if e["backend"] == BASELINE:
                continue
            p = e["parity"]
            fd = [x for x in p["first_divergence"] if x is not None]
            rows.append([e["backend"], str(e["batch"]), "yes" if p["identical_all_rounds"] else "no",
                         f"{p['token_agreement']:.1%}", f"{p['rows_identical']:.0%}",
                         (", ".join(map(str, fd)) if fd else "-"), str(e["distinct_tokens"])])
        lines.append(_table(["backend", "B", "identical", "tokens equal", "rows identical", "first diverging position(s)",
                             "distinct tokens generated"], rows))
        wc = d.get("hf_weights_check") or {}
        margins = [e["breakdown"].get("logit_margin") for e in res.values() if e["backend"] == BASELINE
                   and e.get("breakdown", {}).get("logit_margin")]
        lines += ["", f"Weights: transformers vs our PyTorch reference, teacher-forced logits on the benchmark images: "
                  f"max abs diff {wc.get('max_abs_diff_logits', float('nan')):.2e} (logits up to "
                  f"{wc.get('logit_scale', float('nan')):.2f}); missing HF keys: {(d.get('hf_loading') or {}).get('missing_keys')}."
                  + (" transformers' top-1 minus top-2 logit margin over the greedy steps: "
                     + "; ".join(f"min {mg['min']:.2e}, p10 {mg['p10']:.2e}, median {mg['median']:.2e}" for mg in margins)
                     + " (per batch size) - small margins are where fp16 / int8 may pick another token."
                     if margins else ""), ""]
    lines += ["## Where the time goes per decode step", "",
              "Warm-up round, median over steps 2..N: the graph call (ours: the decoder `session.run`; transformers: "
              "the GPT-2 decoder module's forward, via hooks) vs the rest of the loop (ours: feeds, finiteness check, "
              "cache write, argmax, streamer; transformers: generate()'s input preparation, cache bookkeeping, logits "
              "processors, argmax, streamer).", ""]
    rows = []
    for k, e in res.items():
        bd = e.get("breakdown") or {}
        if bd:
            rows.append([e["backend"], str(e["batch"]), f"{bd['step_ms']:.2f}", f"{bd['in_graph_ms']:.2f}",
                         f"{bd['outside_ms']:.2f} ({bd['outside_ms'] / bd['step_ms']:.0%})"])
    lines.append(_table(["backend", "B", "step ms", "in the graph / forward ms", "outside ms (share)"], rows))
    bw = d.get("bandwidth") or {}
    g = d.get("gemv")
    if bw:
        lines += ["", "Decoder weight bytes / per-token p50 at B=1 (every weight is read once per step; a lower bound "
                  "on the memory traffic): " + ", ".join(
                      f"{k} {v['decoder_bytes'] / 1e6:.0f} MB -> {v['gb_per_s']:.1f} GB/s"
                      + (f" ({v['share_of_gemv_rate']:.0%} of the GEMV rate)" if "share_of_gemv_rate" in v else "")
                      for k, v in bw.items()) + "."
                  + (f" GEMV rate measured in the same run: ONNX Runtime fp32 MatMul {g['shape'][0]}x{g['shape'][1]} by "
                     f"{g['shape'][1]}x{g['shape'][2]} ({g['bytes'] / 1e6:.0f} MB of weights) best {g['best_ms']:.2f} ms = "
                     f"{g['gb_per_s']:.1f} GB/s on {s['threads']} threads." if g else "")]
    if d.get("profiles"):
        lines += ["", "ONNX Runtime profile of the decoder graph (a separate profiling session opened like vlexport.load's; "
                  "greedy steps through the same cache capacity; ms per step by op type, top 6):", ""]
        rows = []
        for p in d["profiles"]:
            top = list(p["ops_ms"].items())[:6]
            rows.append([f"ort-{p['precision']}", str(p["batch"]), f"{p['model_run_ms']:.2f}", f"{p['nodes_ms']:.2f}",
                         ", ".join(f"{k} {v:.2f} ({p['ops_share'][k]:.0%})" for k, v in top)])
        lines.append(_table(["backend", "B", "model_run ms", "sum of nodes ms", "top op types ms (share)"], rows))
    lines += ["", "## Reading", "", reading(d), "", "## Method", "",
              "- transformers: `VisionEncoderDecoderModel.from_pretrained(None, config=VisionEncoderDecoderConfig."
              "from_encoder_decoder_configs(ViTConfig(**encoder), GPT2Config(**decoder)), state_dict=ours)` (our weights "
              "by HF key), eager fp32, `generate(max_new_tokens=N, min_length=N+1, num_beams=1, do_sample=False, "
              "use_cache=True, streamer=...)`, `torch.inference_mode`, `torch.set_num_threads(threads)`; the timestamps "
              "come from a `BaseStreamer` (the prompt put marks the encoder's end, then one put per token).",
              "- ours: `vlexport.load(artifact, precision, intra_op_num_threads=threads, allow_spinning=False)`, "
              "`m.generate(pixel_values, max_new_tokens=N, min_length=N+1, num_beams=1, streamer=callback)`; the "
              "preallocated KV cache holds N+1 slots.",
              "- Encoder alone: HF's is the ViT only; ours also projects every decoder layer's cross-attention K/V "
              "(HF does that inside its first decoder step), so compare TTFT for the whole prefix.",
              "- Random weights, images uniform in [-1, 1] (seeded); throughput does not depend on the weights. "
              "transformers warns that no attention mask is set with a batched input (pad id = eos id): the "
              "decoder rows are never padded here (no row stops early), so the warning does not apply.",
              "", f"Reproduce: `{d.get('command', '')}`"
              + ("" if (d.get("build") or {}).get("built") else
                 f" (the artifact: `vlexport build --model {d.get('model')} --random-weights --fp16 --int8 --out "
                 f"{d['artifact']}`; without --artifact the script builds it)"), ""]
    return "\n".join(lines)


def reading(d: dict) -> str:
    res = d["results"]
    out = []
    t = d.get("target")
    if t:
        out.append(f"- Target (ORT fp32 >= {t['goal']:g}x transformers eager in per-token latency at B=1): "
                   f"{t['value']:.2f}x, {'met' if t['met'] else 'MISSED'}.")
    for b in d["settings"]["batches"]:
        cells = [f"{e['backend']} {e['per_token_ms']['p50_ms']:.1f} ms" + (f" ({e['vs_transformers']['per_token']:.2f}x)"
                                                                          if "vs_transformers" in e else "")
                 for e in res.values() if e["batch"] == b]
        out.append(f"- B={b} per-token p50: " + ", ".join(cells) + ".")
    flat = [(e["backend"], e["batch"], e["flatness"]) for e in res.values() if e.get("flatness")]
    if flat:
        notflat = [f"{n} B={b} ({f['fit_change']:+.0%})" for n, b, f in flat if not f["flat"]]
        out.append(f"- Per-token latency vs position: the fitted change from position 2 to {d['settings']['new_tokens']} "
                   "is " + ", ".join(f"{n} B={b} {f['fit_change']:+.1%}" for n, b, f in flat) + "; "
                   + ("flat (< 10%) everywhere." if not notflat else "not flat for " + ", ".join(notflat) + "."))
    bd = {(e["backend"], e["batch"]): e.get("breakdown") or {} for e in res.values()}
    hf1 = bd.get((BASELINE, 1))
    o1 = bd.get(("ort-fp32", 1))
    if hf1 and o1:
        out.append(f"- At B=1 a transformers step takes {hf1['step_ms']:.1f} ms, of which {hf1['in_graph_ms']:.1f} ms in the "
                   f"decoder forward and {hf1['outside_ms']:.1f} ms in generate()'s loop around it; an ORT fp32 step "
                   f"{o1['step_ms']:.1f} ms, {o1['in_graph_ms']:.1f} ms in session.run and {o1['outside_ms']:.2f} ms in our "
                   "numpy loop.")
    for name in ("ort-fp32", "ort-fp16", "ort-int8"):
        p = next((p for p in d.get("profiles", []) if f"ort-{p['precision']}" == name and p["batch"] == 1), None)
        if p and p["ops_share"]:
            top = list(p["ops_share"].items())[:3]
            out.append(f"- {name} B=1 decoder profile: " + ", ".join(f"{k} {v:.0%}" for k, v in top) + " of the node time.")
    bw = d.get("bandwidth") or {}
    g = d.get("gemv")
    if bw:
        line = "- Weight streaming at B=1: " + ", ".join(
            f"{k} {v['gb_per_s']:.1f} GB/s" + (f" ({v['share_of_gemv_rate']:.0%})" if "share_of_gemv_rate" in v else "")
            for k, v in bw.items()) + " (decoder weights / per-token latency"
        if g:
            line += f"; in brackets the share of the {g['gb_per_s']:.1f} GB/s one fp32 matrix-vector MatMul reaches here"
        line += "): a B=1 step is a chain of matrix-vector products, each weight read once per token."
        f32 = bw.get("ort-fp32", {}).get("share_of_gemv_rate")
        if f32 is not None:
            line += (f" ORT fp32 reaches {f32:.0%} of that ceiling: its B=1 decode is mostly weight streaming."
                     if f32 >= 0.6 else f" ORT fp32 reaches {f32:.0%} of it: the rest is per-op overhead, not bandwidth.")
        hfb = bw.get(BASELINE, {}).get("share_of_gemv_rate")
        if hfb is not None and f32 is not None and hfb < f32:
            line += (f" transformers reaches {hfb:.0%} (its decoder's parameters include the cross-attention K/V "
                     "projections, used in the first step only, so this is an upper bound).")
        out.append(line)
        line = None
        if line:
            out.append(line)
    profs = d.get("profiles", [])
    notes = d.get("graph_notes") or {}
    split = [p for p in profs if p.get("ops_share", {}).get("Split", 0) >= 0.05]
    if split:
        out.append("- Split in the ORT profiles: " + ", ".join(
            f"ort-{p['precision']} B={p['batch']} {p['ops_ms']['Split']:.1f} ms ({p['ops_share']['Split']:.0%})" for p in split)
            + ". A Split copies the tensor it splits: the decoder graph takes one cache input per layer so that "
            "none should be left; if this shows, look for the op that still slices a stacked tensor.")
    cast = [p for p in profs if p.get("ops_share", {}).get("Cast", 0) >= 0.05]
    if cast:
        always = set((notes.get("fp32") or {}).get("inputs_cast", []))
        casted = ", ".join(x for x in (notes.get("fp16") or {}).get("inputs_cast", []) if x not in always) or "its float inputs"
        ratio = [res[f"ort-fp16 B={b}"]["per_token_ms"]["p50_ms"] / res[f"ort-fp32 B={b}"]["per_token_ms"]["p50_ms"]
                 for b in d["settings"]["batches"] if f"ort-fp16 B={b}" in res and f"ort-fp32 B={b}" in res]
        out.append("- Cast in the fp16 profiles: " + ", ".join(
            f"B={p['batch']} {p['ops_ms']['Cast']:.1f} ms ({p['ops_share']['Cast']:.0%})" for p in cast)
            + f": the fp16 decoder graph takes fp32 inputs and casts {casted} to fp16 on every step"
            + (f"; with its MatMuls no faster than fp32's on this CPU, fp16 decode takes "
               + ", ".join(f"{x:.2f}x" for x in ratio) + " fp32's per-token time (B = "
               + ", ".join(map(str, d["settings"]["batches"])) + ")" if ratio else "") + ".")
    i8 = next((p for p in profs if p["precision"] == "int8" and p["batch"] == 1), None)
    if (notes.get("int8") or {}).get("lm_head_float_matmul") and i8:
        out.append(f"- The int8 decoder keeps the lm_head (tied to the token embedding) as an fp32 MatMul: "
                   f"at B=1 MatMul (the lm_head and the attention products) takes {i8['ops_ms'].get('MatMul', 0):.1f} ms "
                   f"of its {i8['nodes_ms']:.1f} ms step, next to {i8['ops_ms'].get('DynamicQuantizeMatMul', 0):.1f} ms for "
                   "all the quantized layers.")
    par = [(e["backend"], e["batch"], e["parity"]) for e in res.values() if e.get("parity") and e["backend"] != BASELINE]
    if par:
        def agree(p):
            return "identical" if p["identical_all_rounds"] else f"{p['token_agreement']:.1%} of tokens equal"

        out.append("- Greedy ids vs transformers: " + ", ".join(f"{n} B={b} {agree(p)}" for n, b, p in par) + ".")
        few = sorted({(e["batch"], e["distinct_tokens"]) for e in res.values()
                      if e["backend"] == BASELINE and e["distinct_tokens"] <= 4})
        if few:
            out.append("- Random weights decode into few distinct tokens (transformers: " + ", ".join(
                f"B={b} {k}" for b, k in few) + " distinct ids over all rows): identical ids are a weaker check "
                "than on a trained checkpoint, and where rows differ it is at small top-1 / top-2 margins (table above).")
    lpr = [x for x in d.get("load_per_round", []) if "others_cores" in x]
    if lpr:
        busy = sorted({x["round"] for x in lpr if x["others_cores"] >= BUSY_CORES})
        others = [x["others_cores"] for x in lpr]
        quiet = [x["others_cores"] for x in lpr if x["round"] not in busy]
        line = (f"- Other processes used {min(others):.2f}-{max(others):.2f} of {d['machine'].get('logical_cores')} cores "
                "during the timed rounds")
        if busy:
            line += (f"; round(s) {', '.join(map(str, busy))} shared the machine (>= {BUSY_CORES} cores used by others)"
                     + (f", the others were quiet (<= {max(quiet):.2f})" if quiet else "")
                     + ". Interleaving makes drift hit every backend alike, but a 2-thread pool on a contended core "
                     "does not suffer equally everywhere: read the ratios of the quiet rounds (target section) as well.")
        else:
            line += " (quiet)."
        out.append(line)
    return "\n".join(out)


def plot(d: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = d["settings"]["batches"]
    fig, axs = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 4.3), squeeze=False)
    for ax, b in zip(axs[0], batches):
        for e in d["results"].values():
            if e["batch"] != b:
                continue
            y = e["per_position_p50_ms"]
            x = list(range(1, len(y) + 1))
            f = e.get("flatness") or {}
            label = e["backend"] + (f" (p50 {e['per_token_ms']['p50_ms']:.1f} ms, fit {f['fit_change']:+.0%})" if f else "")
            ax.plot(x[1:], y[1:], marker=".", markersize=3, linewidth=1.2, label=label)
        ax.set(xlabel="generated token position", ylabel="per-token latency, p50 over rounds (ms)",
               title=f"per-token decode latency vs position, B={b}")
        top = max((max(e["per_position_p50_ms"][1:]) for e in d["results"].values() if e["batch"] == b), default=1)
        ax.set_ylim(0, top * 1.3)  # room for the legend above the lines
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", ncol=2)
    m = d["machine"]
    fig.suptitle(f"{m.get('cpu', '')}, {m.get('threads_used')} threads; greedy, {d['settings']['new_tokens']} new tokens "
                 "(position 1, the first decoder step, left out)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(d: dict, out: Path, stem: str) -> int:
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{stem}_per_token_latency.png"
    d["plot"] = png.name
    if "graph_notes" not in d and Path(d.get("artifact", "")).is_dir():
        d["graph_notes"] = graph_notes(Path(d["artifact"]))
    d["per_round"] = per_round(d)
    t = d.get("target")
    r = d["per_round"].get(f"{t['backend']} B={t['batch']}", {}).get("vs_transformers") if t else None
    if r:
        t["per_round"] = r
        t["rounds_meeting_goal"] = sum(x >= t["goal"] for x in r)
    plot(d, png)
    (out / f"{stem}.json").write_text(json.dumps(d, indent=1, default=float) + "\n")
    (out / f"{stem}.md").write_text(markdown(d))
    print("wrote", out / f"{stem}.json", out / f"{stem}.md", png, file=sys.stderr)
    print(markdown(d))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, help="a built VisionEncoderDecoder artifact (with fp16 and int8 graphs)")
    ap.add_argument("--model", default=MODEL, help="built with --random-weights --fp16 --int8 when --artifact is not given")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (after --warmup rounds)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--encoder-reps", type=int, default=2, help="encoder-alone calls per backend per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hf-attn", default=None, help="transformers attn_implementation (default: transformers' own)")
    ap.add_argument("--profile-steps", type=int, default=12, help="ORT-profiled decoder steps per precision (0: skip)")
    ap.add_argument("--no-gemv", dest="gemv", action="store_false",
                    help="skip measuring the ORT fp32 matrix-vector rate (the B=1 ceiling)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--stem", default=None)
    ap.add_argument("--from-json", type=Path, default=None, help="re-render the Markdown and plot from a result JSON")
    args = ap.parse_args(argv)
    if args.from_json:
        d = json.loads(args.from_json.read_text())
        return write(d, args.out, args.stem or args.from_json.stem)
    if args.warmup < 1:
        ap.error("--warmup must be >= 1 (the warm-up round gives the step breakdown)")

    from vlexport.bench.harness import prefer_passive_threads

    prefer_passive_threads()  # before torch loads
    command = "python benchmarks/run_captioner.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="vlexport-captioner-bench-") as work:
        args.work = work
        build_info = {"built": False}
        if args.artifact is None:
            from vlexport.export.build import build

            t = time.perf_counter()
            args.artifact = Path(build(args.model, Path(work) / "artifact", random_weights=True, fp16=True, int8=True,
                                       threads=args.threads))
            build_info = {"built": True, "build_seconds": round(time.perf_counter() - t, 1)}
        d = run(args)
    d["build"] = build_info
    d["command"] = command
    stem = args.stem or f"{datetime.date.today().isoformat()}-captioner-cpu"
    return write(d, args.out, stem)


if __name__ == "__main__":
    raise SystemExit(main())
