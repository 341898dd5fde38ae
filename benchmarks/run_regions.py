#!/usr/bin/env python
"""VisualBERT from a photo, timed: the region detector vs VisualBERT per image, the demo's eager
PyTorch code vs vlexport's runtime, with parity on the same weights and photographs.

    python benchmarks/run_regions.py --artifact ARTIFACT [--demo DIR]

ARTIFACT: a VisualBERT artifact built with --regions (its regions/ folder is the detector), e.g.
    vlexport build --model uclanlp/visualbert-vqa --random-weights --regions unc-nlp/frcnn-vg-finetuned --fp16
--demo DIR: transformers' examples/research_projects/lxmert (modeling_frcnn.py, processing_image.py,
utils.py); it needs torchvision, so run this script in an environment that has it (and vlexport).
The demo gets the detector's weights as the artifact has them: random-weight artifacts are rebuilt
from their seed (checkpoint artifacts: pass --reference FOLDER).

One process, 2 threads, interleaved rounds over scikit-image's photographs at their own sizes:
  demo eager        Preprocess + GeneralizedRCNN.forward (torch, the demo's code)
  ours (ORT fp32)   FrcnnImageProcessor + the regions pipeline on ONNX Runtime [and fp16]
  parts             processor / backbone graph / numpy (anchors, NMS, RoI pooling) / roi_heads graph /
                    region selection, and VisualBERT (ORT fp32) on the 36 regions with one question
Writes benchmarks/results/<date>-regions-cpu.{json,md,png}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def p50(fn, rounds):
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def parts_of(det, x):
    """Per-part times of one regions-pipeline call (ms) on processor output x."""
    from vlexport.families.frcnn import boxes as B

    t0 = time.perf_counter()
    feeds = det.prepare({"pixel_values": x["pixel_values"]}, "backbone")
    out = det.run_graph("backbone", feeds)
    t1 = time.perf_counter()
    h, w = out["features"].shape[1:3]
    anchors = B.grid_anchors(det.cell_anchors, h, w, 16, det.cfg.anchor_offset)
    props = B.proposals(out["objectness"], out["anchor_deltas"], anchors, x["image_sizes"], det.cfg)
    t2 = time.perf_counter()
    index = np.concatenate([np.full(len(p), n, np.int64) for n, p in enumerate(props)])
    pooled = B.roi_pool(out["features"], index, np.concatenate(props), det.cfg.pooler_resolution, 1 / 16)
    t3 = time.perf_counter()
    heads = B.run_heads(lambda p: det.run_graph("roi_heads", det.prepare({"pooled": p}, "roi_heads")), pooled,
                        det.max_rois)
    t4 = time.perf_counter()
    B.select_regions(heads, props, x["image_sizes"], x["scales_yx"], det.cfg)
    t5 = time.perf_counter()
    return {"backbone graph": (t1 - t0) * 1e3, "proposals + NMS (numpy)": (t2 - t1) * 1e3,
            "RoI pooling (numpy)": (t3 - t2) * 1e3, "roi_heads graph": (t4 - t3) * 1e3,
            "region selection (numpy)": (t5 - t4) * 1e3}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path, required=True)
    ap.add_argument("--demo", type=Path, help="the demo's code folder (needs torchvision)")
    ap.add_argument("--reference", help="checkpoint folder of a checkpoint artifact's detector")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)

    import torch

    import vlexport
    from vlexport.bench.machine import machine_info
    from vlexport.calibration import photographs
    from vlexport.runtime.backends.torch import reference_model

    torch.set_num_threads(a.threads)
    det = vlexport.load(a.artifact / "regions", precision="fp32", intra_op_num_threads=a.threads)
    vb = vlexport.load(a.artifact, precision="fp32", intra_op_num_threads=a.threads)
    photos = list(photographs())[:3]
    question = "what is in the picture?"
    rows, parity = [], []
    demo = None
    if a.demo:
        sys.path.insert(0, str(a.demo))
        from modeling_frcnn import GeneralizedRCNN as Demo
        from processing_image import Preprocess
        from utils import Config

        sys.path.insert(0, str(HERE.parent / "tests"))
        from frcnn_kit import to_demo_yaml

        ours = reference_model(det.artifact, a.reference)
        cfg = Config(to_demo_yaml(det.cfg))
        demo = Demo(cfg).eval()
        state = dict(ours.state_dict())
        state["proposal_generator.anchor_generator.cell_anchors.0"] = state.pop(
            "proposal_generator.anchor_generator.cell_anchors")
        state.update({k: v for k, v in demo.state_dict().items() if k.endswith("num_batches_tracked")})
        demo.load_state_dict(state)
        pre = Preprocess(cfg)
    for i, img in enumerate(photos):
        x = det.processor(images=[img])
        runs = {"ours ORT fp32": lambda: det(**det.processor(images=[img]))}
        if demo is not None:
            bgr = torch.tensor(np.ascontiguousarray(img[:, :, ::-1])).float()

            def run_demo():
                px, sz, sc = pre([bgr.clone()])
                with torch.no_grad():
                    return demo(px, sz, scales_yx=sc, padding="max_detections", max_detections=cfg.MAX_DETECTIONS,
                                return_tensors="pt")
            runs["demo eager (torch)"] = run_demo
        times = {k: 0.0 for k in runs}
        for r in range(a.rounds):  # interleaved, order reversed every other round
            for k in (list(runs) if r % 2 else list(runs)[::-1]):
                t = time.perf_counter()
                runs[k]()
                times[k] += (time.perf_counter() - t) * 1e3 / a.rounds
        ours_out = det(**x)
        if demo is not None:
            d = run_demo()
            same = (np.array_equal(ours_out["obj_ids"], d["obj_ids"].numpy())
                    and np.abs(ours_out["boxes"] - d["boxes"].numpy()).max() <= 1e-2)
            parity.append({"image": i, "size": list(img.shape[:2]), "same_ids_and_boxes": bool(same),
                           "max_box_err_px": float(np.abs(ours_out["boxes"] - d["boxes"].numpy()).max()),
                           "max_feature_err": float(np.abs(ours_out["roi_features"] - d["roi_features"].numpy()).max())})
        proc_ms = p50(lambda: det.processor(images=[img]), a.rounds)
        parts = parts_of(det, x)
        n = int(ours_out["preds_per_image"][0])
        enc = vb.processor(text=[question], visual_embeds=[ours_out["roi_features"][0, :n]])
        vb_ms = p50(lambda: vb(**enc), a.rounds * 3)
        rows.append({"image": i, "size": list(img.shape[:2]), "resized": x["image_sizes"][0].tolist(),
                     **{f"{k} ms": round(v, 1) for k, v in times.items()}, "processor ms": round(proc_ms, 1),
                     **{f"{k} ms": round(v, 1) for k, v in parts.items()}, "VisualBERT ms": round(vb_ms, 2)})
        print(rows[-1], file=sys.stderr)

    stamp = datetime.date.today().isoformat()
    result = {"machine": machine_info(a.threads), "artifact": str(a.artifact), "rows": rows, "parity": parity,
              "detector": det.describe(), "visualbert": vb.describe()}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"{stamp}-regions-cpu"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    keys = [k for k in rows[0] if k.endswith("ms")]
    md = [f"# VisualBERT from a photo: detector vs VisualBERT, demo eager vs vlexport ({stamp})", "",
          f"machine: {result['machine'].get('cpu', '')}, {a.threads} threads; `python benchmarks/run_regions.py "
          f"--artifact A{' --demo DIR' if a.demo else ''}`", "",
          "| image (h x w -> resized) | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for r in rows:
        md.append(f"| {r['size'][0]}x{r['size'][1]} -> {r['resized'][0]}x{r['resized'][1]} | "
                  + " | ".join(str(r[k]) for k in keys) + " |")
    if parity:
        md += ["", "Parity with the demo's code on the same weights (ours ORT fp32 vs demo eager):", "",
               "| image | same ids and boxes | max box error (px) | max feature error |", "|---|---|---|---|"]
        md += [f"| {p['size'][0]}x{p['size'][1]} | {p['same_ids_and_boxes']} | {p['max_box_err_px']:.2e} | "
               f"{p['max_feature_err']:.2e} |" for p in parity]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        parts = [k for k in keys if k.endswith("graph ms") or "(numpy)" in k or k in ("processor ms", "VisualBERT ms")]
        fig, ax = plt.subplots(figsize=(8, 4))
        bottom = np.zeros(len(rows))
        for k in parts:
            v = np.array([r[k] for r in rows])
            ax.bar(range(len(rows)), v, bottom=bottom, label=k[:-3])
            bottom += v
        ax.set_xticks(range(len(rows)), [f"{r['resized'][0]}x{r['resized'][1]}" for r in rows])
        ax.set_ylabel("ms per image")
        ax.set_title("per image: detector parts and VisualBERT (ORT fp32)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(f"{stem}_parts.png", dpi=120)
    except ImportError:
        pass
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
