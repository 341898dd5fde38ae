"""Load figures for `vlexport serve`: throughput and p50/p99 latency under 1, 8 and 32 concurrent
clients, served with dynamic batching on and off, and the same requests as direct
`vlexport.load` calls from as many threads in one process. One process run per artifact list, so
the ratios (batching on / off, served / direct) compare like with like on this machine.

Run it in the environment with the serve extra (PyTriton pins numpy < 2):

    .venv-serve/bin/python benchmarks/run_serve_load.py --artifact engines/visualbert-vqa \\
        --endpoint model --clients 1 8 32 --seconds 20 --out benchmarks/results/serve-visualbert-vqa

Each client sends one example per request (batch 1), as an application thread serving one user
would; the dynamic batcher's job is to merge them. Requests are made from the artifact's own
description (its dummy inputs at the opt sizes; `--sizes text=20,visual=36` overrides) for raw graph
endpoints, and from a photo and a question for processor endpoints (text / image bytes in).
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from pathlib import Path

import numpy as np

from vlexport import families
from vlexport.artifact import Artifact
from vlexport.bench.machine import machine_info
from vlexport.serving.endpoints import endpoints_for, execute
from vlexport.serving.repository import model_name, safe_name
from vlexport.serving.server import TritonProcess

TRITON = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "bool": "BOOL", "bytes": "BYTES"}


def photo_bytes() -> bytes:
    from PIL import Image

    try:
        from skimage import data

        img = Image.fromarray(data.chelsea())
    except ImportError:  # skimage is a test dependency; a synthetic image otherwise
        img = Image.fromarray((np.indices((300, 450)).sum(0) % 256).astype(np.uint8)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def request_for(artifact, endpoint, sizes: dict) -> dict:
    """One example (batch 1) for an endpoint: dummy graph inputs, or a photo + question."""
    graph = endpoint.extra.get("graph")
    if graph is not None:
        spec = families.describe_artifact(artifact).graph(graph)
        axes = {k: v.opt for k, v in artifact.axes.items()}
        axes.update(sizes)
        axes["batch"] = 1
        if "images" in axes:
            axes["images"] = 1
        feeds = spec.make_inputs(axes, np.random.default_rng(0), False)
        return {t.name: np.asarray(feeds[t.name]) for t in endpoint.inputs if t.name in feeds}
    out = {}
    for t in endpoint.inputs:
        if t.name == "text":
            out[t.name] = np.array([[b"What animal is in the picture?"]], dtype=object)
        elif t.name == "image":
            out[t.name] = np.array([[photo_bytes()] * t.dims[0]], dtype=object)
        elif t.name == "max_new_tokens":
            out[t.name] = np.array([[8]], np.int32)
        elif not t.optional:
            dims = [d if d > 0 else sizes.get("visual", 36) for d in t.dims]
            out[t.name] = np.abs(np.random.default_rng(0).standard_normal((1, *dims))).astype(t.dtype)
    return out


def _inputs(feeds):
    import tritonclient.http as http

    res = []
    for k, v in feeds.items():
        i = http.InferInput(k, list(v.shape), TRITON["bytes" if v.dtype == object else v.dtype.name])
        i.set_data_from_numpy(v, binary_data=True)
        res.append(i)
    return res


def load_point(call_factory, clients: int, seconds: float) -> dict:
    """`clients` threads, each sending requests back to back for `seconds`; latency per request."""
    lat, errors, stop = [], [], threading.Event()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def worker():
        call, close = call_factory()
        start.wait()
        mine = []
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    call()
                except Exception as exc:  # counted, never silently dropped
                    errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                    continue
                mine.append(time.perf_counter() - t0)
        finally:
            close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1e3
    return {"clients": clients, "requests": len(lat), "errors": len(errors), "error_examples": errors[:3],
            "throughput_rps": len(lat) / wall, "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None, "seconds": wall}


def served_factory(url, model, feeds):
    def make():
        import tritonclient.http as http

        client = http.InferenceServerClient(url, network_timeout=600, connection_timeout=60)
        inputs = _inputs(feeds)
        return (lambda: client.infer(model, inputs)), client.close
    return make


def direct_factory(pipeline, endpoint, feeds):
    def make():
        def call():
            (out,) = execute(pipeline, endpoint, [feeds])
            if isinstance(out, BaseException):
                raise out
        return call, (lambda: None)
    return make


def batch_ceiling(pipeline, endpoint, feeds, batch: int, repeats: int = 5) -> dict:
    """What batching can give at most here: examples/s of one direct call on `batch` copies of the
    request vs one call on the request alone (best of `repeats`). On a CPU that is compute-bound at
    batch 1 this is small, and no server can beat it."""
    big = {k: np.concatenate([v] * batch, axis=0) for k, v in feeds.items()}

    def best(f, n):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            (out,) = execute(pipeline, endpoint, [f])
            if isinstance(out, BaseException):
                raise out
            ts.append(time.perf_counter() - t0)
        return n / min(ts)

    one, many = best(feeds, 1), best(big, batch)
    return {"batch": batch, "examples_per_s_batch1": one, "examples_per_s_batched": many, "ratio": many / one}


def triton_counts(metrics_url: str, model: str) -> tuple[int, int]:
    """Triton's (inferences, executions) for a model so far: their ratio over an interval is the
    dynamic batcher's mean batch size."""
    import re
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=5) as r:
        text = r.read().decode()
    counts = {}
    for metric in ("nv_inference_count", "nv_inference_exec_count"):
        m = re.search(rf'^{metric}{{model="{re.escape(model)}",version="1"}} (\d+)', text, re.M)
        counts[metric] = int(m.group(1)) if m else 0
    return counts["nv_inference_count"], counts["nv_inference_exec_count"]


def run(args) -> dict:
    import vlexport

    sizes = dict(kv.split("=") for kv in args.sizes.split(",")) if args.sizes else {}
    sizes = {k: int(v) for k, v in sizes.items()}
    result = {"machine": machine_info(threads=args.threads), "seconds_per_point": args.seconds,
              "max_queue_delay_us": args.delay_us, "artifacts": []}
    for path in args.artifact:
        art = Artifact(path)
        eps = [e for e in endpoints_for(art) if not args.endpoint or e.name in args.endpoint]
        entry = {"artifact": str(path), "architecture": art.architecture, "config": {k: art.config.get(k) for k in (
            "hidden_size", "num_hidden_layers") if k in art.config}, "endpoints": []}
        result["artifacts"].append(entry)
        for ep in eps:
            feeds = request_for(art, ep, sizes)
            row = {"endpoint": ep.name, "request": {k: list(v.shape) for k, v in feeds.items()}, "modes": {}}
            entry["endpoints"].append(row)
            pipeline = vlexport.load(path, graphs=ep.graphs or None, intra_op_num_threads=args.threads)
            execute(pipeline, ep, [feeds])  # warm-up
            row["modes"]["direct"] = [load_point(direct_factory(pipeline, ep, feeds), c, args.seconds)
                                      for c in args.clients]
            row["ceiling"] = batch_ceiling(pipeline, ep, feeds, min(max(args.clients), ep.max_batch))
            pipeline.close()
            for mode, delay in (("batching on", args.delay_us), ("batching off", None)):
                with TritonProcess([art], endpoints=[ep.name], delay_us=delay, threads=args.threads,
                                   http_port=args.port, grpc_port=args.port + 1, metrics_port=args.port + 2) as server:
                    name = model_name(safe_name(art.path.name), ep)
                    served_factory(server.http_url[7:], name, feeds)()[0]()  # warm-up
                    points = []
                    for c in args.clients:
                        metrics = f"http://{server.host}:{server.metrics_port}/metrics"
                        n0, e0 = triton_counts(metrics, name)
                        point = load_point(served_factory(server.http_url[7:], name, feeds), c, args.seconds)
                        n1, e1 = triton_counts(metrics, name)
                        point["mean_batch"] = (n1 - n0) / (e1 - e0) if e1 > e0 else None
                        points.append(point)
                    row["modes"][mode] = points
                print(f"{path} {ep.name} {mode}: " + ", ".join(
                    f"{p['clients']} clients {p['throughput_rps']:.1f} req/s" for p in row["modes"][mode]), flush=True)
    return result


def report(result: dict, out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.with_suffix(".json")).write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = ["# `vlexport serve` under load (CPU)", "",
             f"**Machine**: {m.get('date', '')} {m.get('cpu', '')} ({m.get('logical_cores', '?')} logical cores, "
             f"{m.get('threads_used', '?')} threads per model instance); {result['seconds_per_point']} s per point, one "
             f"example per request, dynamic batching delay {result['max_queue_delay_us']} us.", "",
             "| artifact | endpoint | mode | clients | req/s | p50 ms | p99 ms | errors | mean batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for a in result["artifacts"]:
        for e in a["endpoints"]:
            for mode, points in e["modes"].items():
                for p in points:
                    mb = p.get("mean_batch")
                    lines.append(f"| {Path(a['artifact']).name} | {e['endpoint']} | {mode} | {p['clients']} | "
                                 f"{p['throughput_rps']:.1f} | {p['p50_ms'] or 0:.1f} | {p['p99_ms'] or 0:.1f} | {p['errors']} |"
                                 + (f" {mb:.1f} |" if mb else " |"))
            on, off = e["modes"].get("batching on"), e["modes"].get("batching off")
            if on and off:
                ratios = ", ".join(f"{x['clients']} clients {x['throughput_rps'] / max(y['throughput_rps'], 1e-9):.2f}x"
                                   for x, y in zip(on, off))
                lines.append(f"| | | **on / off** | | {ratios} | | | |")
            c = e.get("ceiling")
            if c:
                lines.append(f"| | | batching ceiling | | direct batch {c['batch']}: {c['examples_per_s_batched']:.1f} vs "
                             f"batch 1: {c['examples_per_s_batch1']:.1f} examples/s = {c['ratio']:.2f}x | | | |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [(Path(a["artifact"]).name, e) for a in result["artifacts"] for e in a["endpoints"]]
    fig, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 3.6), squeeze=False)
    for ax, (name, e) in zip(axes[0], rows):
        for mode, points in e["modes"].items():
            ax.plot([p["clients"] for p in points], [p["throughput_rps"] for p in points], marker="o", label=mode)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{name} / {e['endpoint']}", fontsize=9)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("requests/s")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_name(out.name + "_throughput.png"), dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", nargs="+", type=Path, required=True)
    p.add_argument("--endpoint", nargs="+", help="endpoints to load (default: all of each artifact)")
    p.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--delay-us", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads per model instance")
    p.add_argument("--sizes", help="axis sizes for raw graph requests, e.g. text=20,visual=36")
    p.add_argument("--port", type=int, default=18700)
    p.add_argument("--out", type=Path, required=True, help="results stem (.json, .md, _throughput.png)")
    args = p.parse_args(argv)
    report(run(args), args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
