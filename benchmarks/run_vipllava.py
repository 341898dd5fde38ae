#!/usr/bin/env python
"""VipLlava at full width, reduced depth: parity with transformers' generate() and speed at B=1.

    python benchmarks/run_vipllava.py [--vision-layers 12] [--text-layers 2] [--new-tokens 32]

A random transformers VipLlavaForConditionalGeneration with the public checkpoint's widths (CLIP
ViT-L/14 at 336 px: 1024 wide, 16 heads; Llama-2 7B's decoder layers: 4096 wide, 32 heads, 11008
MLP; vocabulary 32064) and fewer layers (HF eager fits this machine then), saved as a checkpoint
folder with the tiny built-in tokenizer (its <image>/<pad> ids are the config's image/pad ids), built
with `vlexport build` (fp32), loaded with `vlexport.load`:

- parity: greedy token ids for --new-tokens new tokens on real photographs (scikit-image) with a drawn
  red box, in the checkpoint's chat prompt, one at a time and as a left-padded batch of 2; prefill
  logits max-abs difference;
- speed at B=1, same inputs, interleaved rounds in this one process: the vision tower (image ->
  projected features), time to first token (vision + embeddings + the prefill of ~600 tokens) and
  decode tokens per second, transformers eager vs vlexport fp32.

No int4 decoder here: a checkpoint folder's int4 graph is gated like int8 against fp32 (top-1 >= 98%,
worst-row cosine >= 0.99), which random weights cannot meet (their quantization error says nothing
about a trained model's), so the build refuses it, as it should.

Writes benchmarks/results/<date>-vipllava-reduced-cpu.{json,md,png}. The full-size 7B int4 decoder
(its write, memory and decode speed against the memory-bandwidth limit) is measured by
benchmarks/run_llama_decoder_full.py.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

QUESTIONS = ["What is inside the red box?", "What colour is the object in the red box?",
             "Describe the marked region.", "Is there an animal inside the red box?"]
PHOTOS = ["chelsea", "astronaut", "coffee", "rocket"]


def hf_model(vision_layers: int, text_layers: int, ids: dict, seed: int = 0):
    import torch
    import transformers as t

    vision = t.CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=vision_layers,
                                num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
    text = t.LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=text_layers,
                         num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"],
                         pad_token_id=ids["pad_token_id"])
    cfg = t.VipLlavaConfig(vision_config=vision, text_config=text, image_token_index=ids["image_token_index"],
                           vision_feature_layers=[-2, -5, -8, -11, 6], pad_token_id=ids["pad_token_id"])
    torch.manual_seed(seed)
    model = t.VipLlavaForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial norms and biases (fresh HF models have ones and zeros)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def inputs(processor, n: int):
    from PIL import Image
    from skimage import data

    from vlexport.families.vip_llava.draw import draw_visual_prompt

    out = []
    for i in range(n):
        photo = Image.fromarray(getattr(data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
        w, h = photo.size
        box = f"box:{w // 4},{h // 4},{3 * w // 4},{3 * h // 4}"
        out.append((draw_visual_prompt(photo, box), processor.prompt(QUESTIONS[i % len(QUESTIONS)])))
    return out


def timed(fn, rounds: int):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vision-layers", type=int, default=12)
    ap.add_argument("--text-layers", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)

    import torch

    import vlexport
    from vlexport.bench.machine import machine_info
    from vlexport.export.build import build
    from vlexport.families.vip_llava.processor import VipLlavaProcessor, tiny_token_ids
    from vlexport.specs import AxisRange

    torch.set_num_threads(args.threads)
    result = {"machine": machine_info(args.threads), "config": vars(args) | {"out": str(args.out)}}
    ids = tiny_token_ids()
    work = Path(tempfile.mkdtemp(prefix="vipllava-bench-"))
    t0 = time.perf_counter()
    hf = hf_model(args.vision_layers, args.text_layers, ids)
    n_params = sum(p.numel() for p in hf.parameters())
    folder = work / "hf"
    hf.save_pretrained(folder)
    processor = VipLlavaProcessor.tiny(image_size=336, patch_size=14)  # CLIP at 336 + the tiny tokenizer
    processor.save_pretrained(folder)
    print(f"transformers model: {n_params / 1e6:.0f}M parameters, saved in {time.perf_counter() - t0:.0f}s", flush=True)

    t0 = time.perf_counter()
    art = build(str(folder), work / "art", threads=args.threads,
                axes={"images": AxisRange(1, 1, 2), "batch": AxisRange(1, 1, 2), "text": AxisRange(1, 600, 640),
                      "past": AxisRange(1, 640, 700)})
    manifest = json.loads((art / "manifest.json").read_text())
    result["build"] = {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": manifest["build"]["peak_rss_mb"],
                       "validation": {g: {p: {k: v for k, v in r.items() if k in ("min_cosine", "worst", "shapes",
                                                                                    "cases", "top1_agreement")}
                                          for p, r in e["validation"].items()} for g, e in manifest["graphs"].items()}}
    ours = vlexport.load(art, intra_op_num_threads=args.threads)

    # ---- parity: greedy ids, one prompt at a time and a left-padded batch
    cases = inputs(ours.processor, args.prompts)
    parity = []
    for image, prompt in cases:
        x = ours.processor(text=prompt, images=image)
        a = ours.generate(**x, max_new_tokens=args.new_tokens)
        with torch.no_grad():
            tx = {k: torch.from_numpy(v) for k, v in x.items()}
            b = hf.generate(**tx, max_new_tokens=args.new_tokens, do_sample=False).numpy()
            want = hf(**tx).logits[0, -1].numpy()
        emb = ours.prompt_embeds(x["input_ids"], x["pixel_values"])
        parity.append({"prompt_tokens": int(x["input_ids"].shape[1]), "same_ids": bool(np.array_equal(a, b)),
                       "new_tokens": int(a.shape[1] - x["input_ids"].shape[1]),
                       "prefill_logits_max_abs": float(np.abs(_prefill_logits(ours, x, emb) - want).max())})
        print(f"parity: {parity[-1]}", flush=True)
    x = ours.processor(text=[p for _, p in cases[:2]], images=[im for im, _ in cases[:2]])
    a = ours.generate(**x, max_new_tokens=args.new_tokens)
    with torch.no_grad():
        b = hf.generate(**{k: torch.from_numpy(v) for k, v in x.items()}, max_new_tokens=args.new_tokens,
                        do_sample=False).numpy()
    result["parity"] = {"single": parity, "batch_of_2_left_padded_same_ids": bool(np.array_equal(a, b))}
    print(f"batch of 2 (left-padded): same ids {result['parity']['batch_of_2_left_padded_same_ids']}", flush=True)

    # ---- speed at B=1
    x = ours.processor(text=cases[0][1], images=cases[0][0])
    tx = {k: torch.from_numpy(v) for k, v in x.items()}
    n = args.new_tokens
    rows = {}
    with torch.no_grad():
        runs = {
            "transformers eager": (lambda: hf.get_image_features(pixel_values=tx["pixel_values"]),
                                   lambda k: hf.generate(**tx, max_new_tokens=k, min_new_tokens=k, do_sample=False)),
            "vlexport fp32": (lambda: ours.get_image_features(x["pixel_values"]),
                              lambda k: ours.generate(**x, max_new_tokens=k, min_length=x["input_ids"].shape[1] + k)),
        }
        for name, (vision, gen) in runs.items():
            vision(), gen(2)  # warm-up
        samples = {name: {"vision": [], "ttft": [], "total": []} for name in runs}
        for _ in range(args.rounds):  # interleaved: every backend sees the same machine state
            for name, (vision, gen) in runs.items():
                samples[name]["vision"].append(timed(vision, 1))
                samples[name]["ttft"].append(timed(lambda: gen(1), 1))
                samples[name]["total"].append(timed(lambda: gen(n), 1))
    for name, s in samples.items():
        ttft, total = float(np.median(s["ttft"])), float(np.median(s["total"]))
        rows[name] = {"vision_ms": round(1000 * float(np.median(s["vision"])), 1), "ttft_ms": round(1000 * ttft, 1),
                      "decode_tokens_per_s": round((n - 1) / max(total - ttft, 1e-9), 2)}
        print(f"{name}: {rows[name]}", flush=True)
    base = rows["transformers eager"]
    for name, r in rows.items():
        r["ttft_speedup"] = round(base["ttft_ms"] / r["ttft_ms"], 2)
        r["decode_speedup"] = round(r["decode_tokens_per_s"] / base["decode_tokens_per_s"], 2)
    result["speed_b1"] = {"prompt_tokens": int(x["input_ids"].shape[1]), "new_tokens": n, "rounds": args.rounds,
                          "rows": rows}
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    _write(result, args)
    ok = all(p["same_ids"] for p in parity) and result["parity"]["batch_of_2_left_padded_same_ids"]
    print("PARITY OK" if ok else "PARITY FAILED")
    return 0 if ok else 1


def _prefill_logits(model, x, embeds):
    """The last prompt position's logits from one decoder call over an empty cache (the prefill)."""
    c = model._cfg.text_config
    B, T = x["input_ids"].shape
    mask = x["attention_mask"].astype(np.int64)
    feeds = {"inputs_embeds": embeds, "attention_mask": mask,
             "position_ids": np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 0).astype(np.int64),
             "cache_mask": np.zeros((B, 1), np.int64)}
    for i in range(c.num_hidden_layers):
        for kind in ("key", "value"):
            feeds[f"past_{kind}.{i}"] = np.zeros((B, c.kv_heads, 1, c.head_size), np.float32)
    return model.run_graph("decoder", model.prepare(feeds, "decoder"))["logits"][0, -1]


def _write(result, args):
    stem = args.out / f"{date.today().isoformat()}-vipllava-reduced-cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [f"# VipLlava, full width / reduced depth ({args.vision_layers} vision + {args.text_layers} text layers), CPU",
             "", f"Machine: {m.get('cpu')} ({m.get('threads_used')} threads; {' '.join(m.get('cpu_flags') or [])}), "
             f"{m.get('date')}; `python benchmarks/run_vipllava.py "
             f"--vision-layers {args.vision_layers} --text-layers {args.text_layers}`", "",
             f"Parity (greedy, {args.new_tokens} new tokens): " + ", ".join(
                 f"{p['prompt_tokens']}-token prompt {'same ids' if p['same_ids'] else 'DIFFERENT ids'} "
                 f"(prefill logits max-abs {p['prefill_logits_max_abs']:.1e})" for p in result["parity"]["single"])
             + f"; left-padded batch of 2: {'same ids' if result['parity']['batch_of_2_left_padded_same_ids'] else 'DIFFERENT'}",
             "", f"Speed at B=1 ({result['speed_b1']['prompt_tokens']}-token prompt, median of "
             f"{result['speed_b1']['rounds']} interleaved rounds):", "",
             "| backend | vision tower ms | time to first token ms | decode tokens/s | TTFT speedup | decode speedup |",
             "|---|---|---|---|---|---|"]
    for name, r in result["speed_b1"]["rows"].items():
        lines.append(f"| {name} | {r['vision_ms']} | {r['ttft_ms']} | {r['decode_tokens_per_s']} | "
                     f"{r['ttft_speedup']}x | {r['decode_speedup']}x |")
    lines += ["", f"Build: {result['build']['seconds']} s, peak RSS {result['build']['peak_rss_mb']} MB; "
              f"this run's peak RSS {result['peak_rss_mb']} MB."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = result["speed_b1"]["rows"]
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
        names = list(rows)
        ax[0].barh(names, [rows[k]["ttft_ms"] for k in names])
        ax[0].set_xlabel("time to first token (ms)")
        ax[1].barh(names, [rows[k]["decode_tokens_per_s"] for k in names])
        ax[1].set_xlabel("decode tokens / s")
        ax[1].set_yticks([])
        fig.suptitle("VipLlava full width, reduced depth, B=1 (CPU)")
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=120)
    except ImportError:
        pass
    print(f"wrote {stem}.json/.md/.png")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rewrite":  # the .md/.png again from a results .json
        res = json.loads(Path(sys.argv[2]).read_text())
        c = res["config"]
        _write(res, argparse.Namespace(out=Path(sys.argv[2]).parent, vision_layers=c["vision_layers"],
                                       text_layers=c["text_layers"], new_tokens=c["new_tokens"]))
        sys.exit(0)
    sys.exit(main())
