"""The benchmark runner: every backend in ONE process, on IDENTICAL inputs, interleaved.

    from vlexport.bench import BenchOptions, run_benchmark
    result = run_benchmark(BenchOptions("engines/my-model", sweep={"batch": [1, 8, 32]}))
    result = run_benchmark(BenchOptions("engines/dual", graph="vision", sweep={"batch": [1, 32]}))

Generic: the artifact's family (from the registry) gives the description, the dummy inputs, the
FLOP count and the transformers class of the same name; the size points are axis sizes.
One graph per run: an artifact with several graphs (e.g. a dual encoder's "vision" and "text") is
timed one chosen graph at a time (`BenchOptions.graph`; without it such an artifact is an error that
lists its graphs). Each backend then runs that graph alone: our reference's `graph_modules()[graph]`,
the runtime's `prepare(feeds, graph)` + `run_graph(graph, ...)` (what its get_*_features methods
do), and for transformers the family's `Family.hf_graphs` hook (HF eager on our weights, per graph).

Backends (each skipped with a reason when it cannot run here):
    transformers   HF `transformers` eager, our weights loaded into it (the usual baseline)
    torch          our PyTorch reference model (the parity reference for every other backend)
    ort-fp32 / ort-fp16 / ort-int8   the artifact's ONNX graphs through `vlexport.load` (ONNX Runtime)
    tensorrt-fp16  the artifact's TensorRT engine (needs TensorRT, a GPU and an engine)

Method: for each size point the same numpy feeds go to every backend; after warm-up, every
iteration calls all backends once in a rotating order (round robin), so machine drift (thermal,
other processes, noisy neighbours) hits all of them alike. Latency p50/p90/p99, throughput,
achieved GFLOP/s (2 x MACs of all Linear and attention matmuls, from the config and the sizes) and
its fraction of this machine's measured GEMM peak; load time, first-call time and RSS growth per
backend; parity per output against the torch reference, at every point and on a separate set of
random inputs. Wrapper overhead: `model(**feeds)` against `model.backend.session.run(None, feeds)`
on the same ORT session, interleaved. Machine load: the CPU time this process and everything else
on the machine used during each point's timed loop (from /proc/stat via psutil) and the load average,
so a run on a shared machine says how shared it was.
"""

from __future__ import annotations

import gc
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vlexport import metrics
from vlexport.bench import timing as stats
from vlexport.bench.runners import RuntimeRunner, Skip, make_runners

ALL_BACKENDS = ("transformers", "torch", "ort-fp32", "ort-fp32-plain", "ort-fp16", "ort-int8", "tensorrt-fp16")
REFERENCE = "torch"
BASELINE = "transformers"


def prefer_passive_threads() -> None:
    """Two thread pools on few cores: torch's OpenMP workers spin after each call by default, and so
    do ONNX Runtime's, so interleaving them in one process slowed torch ~25x and ORT ~3x on 2 cores
    (measured). Passive OpenMP waiting must be set before torch loads libgomp; ORT sessions get
    allow_spinning=0 (see RuntimeRunner). Either costs < 2% when a backend runs alone. Called by the
    `vlexport bench` command and the benchmark scripts (a process-wide setting: never on import)."""
    if "torch" not in __import__("sys").modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass
class BenchOptions:
    model: str  # artifact folder, or a model id (built into a temporary folder)
    backends: tuple = ALL_BACKENDS
    base: dict = field(default_factory=dict)  # axis sizes of the base point (default: every axis at its opt)
    sweep: dict = field(default_factory=dict)  # axis -> sizes, each varied around `base`
    grid: bool = False  # True: the cartesian product of the sweep instead of one axis at a time
    warmup: int = 3
    iters: int = 20
    max_point_seconds: float | None = None  # stop a point's timed loop early (>= min_iters done) past this
    min_iters: int = 3
    threads: int = 2
    random_weights: bool = False
    build_kwargs: dict = field(default_factory=dict)  # extra keyword arguments for build()
    seed: int = 0
    pad: bool = True  # random right padding of text and regions, as in real batches
    parity_samples: int = 32  # extra random samples for parity (0: only the benchmark points)
    wrapper_iters: int = 40  # 0: skip the wrapper-overhead measurement
    gemm_peak: bool = True
    progress: bool = True
    targets: dict = field(default_factory=dict)  # name -> goal, checked by evaluate_targets (see the scripts)
    graph: str | None = None  # the graph to time, for artifacts with several (None: the artifact's only graph)
    item_name: str = "samples"  # what one batch row is, for the throughput column ("images" -> "images/s")
    # the checkpoint a checkpoint artifact was built from (the torch reference loads its weights; an artifact may not
    # name files outside its folder); None: the model itself when bench builds it, else none (random weights only)
    reference: str | None = None


# ------------------------------------------------------------------------------------------ sweeps
def expand_sweep(base: dict, sweep: dict | None = None, grid: bool = False) -> list[dict]:
    """Size points: `base`, then each axis of `sweep` varied alone (others at base), in order,
    without duplicates. grid=True: the full cartesian product instead."""
    base = dict(base)
    sweep = {k: list(v) for k, v in (sweep or {}).items() if v}
    points = []
    if grid and sweep:
        import itertools

        keys = list(sweep)
        for combo in itertools.product(*(sweep[k] for k in keys)):
            points.append({**base, **dict(zip(keys, (int(c) for c in combo)))})
    else:
        points.append(dict(base))
        for axis, values in sweep.items():
            for v in values:
                points.append({**base, axis: int(v)})
    seen, out = set(), []
    for p in points:
        key = tuple(sorted(p.items()))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# ------------------------------------------------------------------------------------------ memory
def _rss() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        return 0


class PeakRSS:
    """Samples this process's RSS every `interval` s while active; .peak - .start = growth."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.start = self.peak = self.end = 0
        self._stop = threading.Event()

    def __enter__(self):
        gc.collect()
        self.start = self.peak = _rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.end = _rss()
        self.peak = max(self.peak, self.end)

    @property
    def delta_mb(self):
        return (self.end - self.start) / 2**20

    @property
    def peak_delta_mb(self):
        return (self.peak - self.start) / 2**20


class CpuLoad:
    """CPU use of the whole machine while active, split into this process and everything else.

    `.summary()`: wall seconds, cores busy on average (system-wide, from /proc/stat), of which this
    process's and the others' (system minus ours; on a VM also the hypervisor's steal), and the 1-minute
    load average at both ends. Empty without psutil."""

    def __enter__(self):
        self._start = self._sample()
        return self

    def __exit__(self, *exc):
        self._end = self._sample()

    @staticmethod
    def _sample():
        try:
            import psutil
        except ImportError:
            return None
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        mine = psutil.Process().cpu_times()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {"wall": time.perf_counter(), "busy": busy, "steal": getattr(t, "steal", 0.0),
                "self": mine.user + mine.system, "loadavg": load}

    def summary(self) -> dict:
        a, b = self._start, getattr(self, "_end", None) or self._sample()
        if a is None or b is None:
            return {}
        wall = b["wall"] - a["wall"]
        if wall <= 0:
            return {}
        system = (b["busy"] - a["busy"]) / wall
        mine = (b["self"] - a["self"]) / wall
        return {"wall_s": round(wall, 2), "system_cores": round(system, 2), "self_cores": round(mine, 2),
                "others_cores": round(max(0.0, system - mine), 2), "steal_cores": round((b["steal"] - a["steal"]) / wall, 2),
                "loadavg_1m_start": a["loadavg"], "loadavg_1m_end": b["loadavg"], "logical_cores": os.cpu_count()}


# ----------------------------------------------------------------------------------------- runners
class Context:
    """The artifact, its description (the timed graph), and the reference model (built once, shared)."""

    def __init__(self, artifact_path: Path, threads: int, graph: str | None = None,
                 reference: str | None = None):
        from vlexport import families
        from vlexport.artifact import Artifact
        from vlexport.errors import ConfigError

        self.artifact = Artifact(artifact_path)
        names = list(self.artifact.graph_names)
        if graph is None and len(names) != 1:
            raise ConfigError(f"'{artifact_path}' has {len(names)} graphs ({', '.join(names)}); vlexport bench times "
                              f"one at a time: choose one with --graph NAME (BenchOptions.graph), e.g. --graph {names[0]}")
        if graph is not None and graph not in names:
            raise ConfigError(f"graph '{graph}' is not in '{artifact_path}'; its graphs are {', '.join(names)}")
        self.threads = threads
        self.architecture = self.artifact.architecture
        self.config_dict = self.artifact.config
        self.family = families.get(self.artifact.family)
        self.config = self.family.config_from_dict(self.config_dict)
        self.spec = families.describe_artifact(self.artifact)
        self.graph = graph if graph is not None else names[0]
        self.multi_graph = len(names) > 1
        self.graph_spec = self.spec.graph(self.graph)
        self.axes = self.spec.axes_for(self.graph_spec)
        self.output_names = self.graph_spec.output_names
        self._reference, self.reference = None, reference

    def make_inputs(self, sizes, rng, pad):
        return self.graph_spec.make_inputs(sizes, rng, pad)

    def flops(self, sizes) -> float:
        return self.family.flops(self.config, self.architecture, sizes) if self.family.flops else float("nan")

    def reference_module(self):
        """Our torch model with the artifact's weights (rebuilt from the manifest's source)."""
        if self._reference is None:
            from vlexport.runtime.backends.torch import reference_model

            self._reference = reference_model(self.artifact, self.reference).eval()
        return self._reference

    def torch_module(self):
        """The module our torch backend times: the model, or its module for the timed graph."""
        if not self.multi_graph:
            return self.reference_module()
        from vlexport.runtime.backends.torch import graph_modules

        return graph_modules(self.reference_module(), self.artifact.graph_names)[self.graph]


def resolve_artifact(opts: BenchOptions, workdir: Path) -> tuple[Path, dict]:
    """An artifact folder as given, or a fresh build of a model id into `workdir`."""
    p = Path(opts.model)
    if (p / "manifest.json").is_file():
        return p, {"built": False}
    try:
        from vlexport.export.build import build
    except ImportError as exc:
        from vlexport.errors import MissingDependencyError

        raise MissingDependencyError(f"benchmarking a model id needs the build pipeline ({exc}); "
                                     f"pass an artifact folder instead") from None
    wants = set(opts.backends)
    kw = dict(random_weights=opts.random_weights, fp16="ort-fp16" in wants or "tensorrt-fp16" in wants,
              int8="ort-int8" in wants, progress=opts.progress, threads=opts.threads)
    kw.update(opts.build_kwargs)
    t = time.perf_counter()
    out = build(opts.model, workdir / "artifact", **kw)
    return Path(out), {"built": True, "build_seconds": round(time.perf_counter() - t, 1),
                       "build_options": {k: v for k, v in kw.items() if k != "progress"}}


# ------------------------------------------------------------------------------------------- timing
def _interleaved(calls: dict, feeds: dict, iters: int, budget_s: float | None = None,
                 min_iters: int = 3) -> dict[str, list[float]]:
    """Per name, `iters` latencies; each iteration calls every entry once, starting one further on.
    With `budget_s`, stops after the iteration that crosses it (but not before `min_iters`)."""
    names = list(calls)
    times = {n: [] for n in names}
    t0 = time.perf_counter()
    for i in range(iters):
        if budget_s is not None and i >= min_iters and time.perf_counter() - t0 > budget_s:
            break
        k = i % len(names)
        for n in names[k:] + names[:k]:
            t = time.perf_counter()
            calls[n](feeds)
            times[n].append(time.perf_counter() - t)
    return times


def wrapper_overhead(model, feeds: dict, iters: int = 40, warmup: int = 3, graph: str | None = None) -> dict:
    """`model(**feeds)` vs `model.backend.session.run(None, feeds)`, interleaved, same session. With
    `graph` (a pipeline of several graphs): `model.run_graph(graph, model.prepare(feeds, graph))`
    vs `model.backends[graph].session.run(None, feeds)`."""
    if graph is None:
        session = model.backend.session
        prepared = model.prepare(dict(feeds))  # the raw call gets exactly typed feeds, like the wrapper passes
        calls = {"wrapper": lambda f: model(**f), "raw_session": lambda f: session.run(None, prepared)}
    else:
        session = model.backends[graph].session
        prepared = model.prepare(dict(feeds), graph)
        calls = {"wrapper": lambda f: model.run_graph(graph, model.prepare(f, graph)),
                 "raw_session": lambda f: session.run(None, prepared)}
    for _ in range(warmup):
        for c in calls.values():
            c(feeds)
    times = _interleaved(calls, feeds, iters)
    w, r = np.median(times["wrapper"]), np.median(times["raw_session"])
    out = {"wrapper": stats.latency_summary(times["wrapper"]), "raw_session": stats.latency_summary(times["raw_session"]),
           "overhead_pct": float((w - r) / r * 100.0), "overhead_ms": float((w - r) * 1e3), "iters": iters}
    if graph is not None:
        out["call"] = f"model.run_graph('{graph}', model.prepare(feeds, '{graph}'))"
    return out


# ------------------------------------------------------------------------------------------ the run
def _say(opts, msg):
    if opts.progress:
        from rich.console import Console

        from rich.text import Text

        Console(stderr=True).print(Text("bench ", style="dim") + Text(str(msg)))  # msg may hold "[gpu]"


def run_benchmark(opts: BenchOptions) -> dict:
    """Run the whole benchmark; returns a JSON-ready dict (see vlexport.bench.report to show it)."""
    from vlexport.bench.machine import gemm_peak_gflops, machine_info

    t_start = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(opts.threads)
    except ImportError:
        torch = None
    os.environ.setdefault("OMP_NUM_THREADS", str(opts.threads))
    run_load = CpuLoad().__enter__()
    result = {"options": {k: v for k, v in asdict(opts).items()}, "machine": machine_info(opts.threads)}
    result["machine"]["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    if opts.gemm_peak:
        _say(opts, f"measuring the fp32 GEMM peak on {opts.threads} threads")
        result["gemm_peak"] = gemm_peak_gflops(opts.threads, isolated=True)
    peak = (result.get("gemm_peak") or {}).get("peak")

    with tempfile.TemporaryDirectory(prefix="vlexport-bench-") as work:
        path, build_info = resolve_artifact(opts, Path(work))
        result["artifact"] = {"path": str(path), **build_info}
        ctx = Context(path, opts.threads, opts.graph, reference=opts.reference)
        weights = (ctx.artifact.manifest.get("source") or {}).get("weights")
        if ctx.reference is None and build_info["built"] and weights not in ("random", "tiny"):
            ctx.reference = opts.model  # bench built it from this checkpoint
        base = {k: int(opts.base.get(k, r.opt)) for k, r in ctx.axes.items()}
        foreign = sorted(set(opts.sweep or {}) - set(ctx.axes))
        if foreign:
            from vlexport.errors import ConfigError

            raise ConfigError(f"--sizes names axis {foreign} that the '{ctx.graph or 'model'}' graph does not have; "
                              f"its axes are {sorted(ctx.axes)}")
        result["options"]["base"] = base
        result["model"] = {"source": ctx.artifact.manifest.get("source"), "family": ctx.artifact.family,
                           "architecture": ctx.architecture,
                           "task": ctx.artifact.task, "outputs": ctx.output_names, "graph": ctx.graph,
                           "graphs": list(ctx.artifact.graph_names),
                           # the ONNX precisions the benchmarked graph was built in (the artifact may be a
                           # temporary build that is gone when this returns)
                           "precisions": ctx.artifact.precisions(ctx.graph)}
        names = list(opts.backends)
        if REFERENCE not in names:
            names.insert(0, REFERENCE)  # parity needs the reference even when it is not timed
        runners, backends = [], {}
        rng = np.random.default_rng(opts.seed)
        first_feeds = ctx.make_inputs(dict(base), np.random.default_rng(opts.seed + 1), opts.pad)
        for r in make_runners(ctx, names):
            _say(opts, f"loading {r.name}")
            info = {"status": "ok"}
            try:
                with PeakRSS() as mem:
                    t = time.perf_counter()
                    r.load()
                    info["load_s"] = time.perf_counter() - t
                    t = time.perf_counter()
                    r.call(first_feeds)
                    info["first_call_ms"] = (time.perf_counter() - t) * 1e3
                info.update(rss_delta_mb=mem.delta_mb, peak_rss_delta_mb=mem.peak_delta_mb)
                if isinstance(r, RuntimeRunner):
                    info["runtime"] = r.graph_backend.describe()
                runners.append(r)
            except Skip as exc:
                info = {"status": "skipped", "reason": str(exc)}
                _say(opts, f"skipping {r.name}: {exc}")
            backends[r.name] = info
        result["backends"] = backends
        timed = [r for r in runners if r.name in opts.backends]
        ref = next((r for r in runners if r.name == REFERENCE), None)

        # parity on a separate random set, in chunks of up to 8
        if opts.parity_samples and ref is not None:
            _say(opts, f"parity on {opts.parity_samples} random samples")
            parts = {r.name: [] for r in runners if r is not ref}
            left = opts.parity_samples
            while left > 0:
                b = min(8, left)
                left -= b
                sizes = {k: (b if k == "batch" else int(rng.integers(max(r.min, base[k] // 2), base[k] + 1)))
                         for k, r in ctx.axes.items()}
                sizes = {k: v - v % ctx.axes[k].step for k, v in sizes.items()}
                feeds = ctx.make_inputs(sizes, rng, opts.pad)
                want = ref.call(feeds)
                for r in runners:
                    if r is not ref:
                        got = r.call(feeds)
                        parts[r.name].append({o: _parity(ctx, o, want[o], got[o]) for o in want if o in got})
            for name, chunks in parts.items():
                backends[name]["parity"] = ({o: metrics.merge_parity([c[o] for c in chunks]) for o in chunks[0]}
                                            if chunks else {})

        points = []
        for sizes in expand_sweep(base, opts.sweep, opts.grid):
            _say(opts, "point " + ", ".join(f"{k}={v}" for k, v in sizes.items()))
            feeds = ctx.make_inputs(sizes, rng, opts.pad)
            flops = ctx.flops(sizes)
            outs = {}
            for r in timed + ([ref] if ref not in timed and ref is not None else []):
                for _ in range(max(1, opts.warmup)):
                    outs[r.name] = r.call(feeds)
            for r in timed:
                r.device_ms = []
            with CpuLoad() as load:
                times = _interleaved({r.name: r.call for r in timed}, feeds, opts.iters, opts.max_point_seconds,
                                     opts.min_iters)
            res = {}
            for r in timed:
                lat = stats.latency_summary(times[r.name])
                p50 = lat["p50_ms"] / 1e3
                # examples per call: the batch axis, or the image count of a graph that has none (a vision tower)
                examples = sizes.get("batch", sizes.get("images", 1))
                entry = {**lat, "throughput": stats.throughput(examples, p50),
                         "gflops": stats.gflops_per_s(flops, p50)}
                if peak:
                    entry["pct_peak"] = entry["gflops"] / peak * 100.0
                if getattr(r, "device_ms", None):
                    entry["device"] = {**stats.latency_summary([ms / 1e3 for ms in r.device_ms]),
                                       "method": "CUDA events around execute_async_v3: host<->device copies "
                                                 "excluded (the wall-time figures include them)"}
                if ref is not None and r is not ref:
                    entry["parity"] = {o: _parity(ctx, o, outs[REFERENCE][o], outs[r.name][o])
                                       for o in outs[REFERENCE] if o in outs[r.name]}
                res[r.name] = entry
            if BASELINE in res:
                for name, e in res.items():
                    e["speedup_vs_transformers"] = res[BASELINE]["p50_ms"] / e["p50_ms"]
            points.append({"sizes": sizes, "flops": flops, "results": res, "load": load.summary()})
        result["points"] = points

        ort32 = next((r for r in runners if r.name == "ort-fp32"), None)
        if opts.wrapper_iters and ort32 is not None and hasattr(getattr(ort32.graph_backend, "session", None), "run"):
            _say(opts, "wrapper overhead")
            feeds = ctx.make_inputs(dict(base), rng, opts.pad)
            result["wrapper_overhead"] = wrapper_overhead(ort32.model, feeds, opts.wrapper_iters,
                                                          graph=ctx.graph if ctx.multi_graph else None)
        del runners, timed, ref, ort32
        gc.collect()
    result["targets"] = evaluate_targets(result, opts.targets)
    run_load.__exit__(None, None, None)
    result["load"] = run_load.summary()
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    return result


def _parity(ctx, name, ref, out):
    spec = next((o for o in ctx.graph_spec.outputs if o.name == name), None)
    return metrics.parity(ref, out, classes=bool(spec and spec.classes), masked_below=spec and spec.masked_below)


# ------------------------------------------------------------------------------------------ targets
def _point(result, **sizes):
    for p in result.get("points", []):
        if all(p["sizes"].get(k) == v for k, v in sizes.items()):
            return p
    return None


# What each target name measures; the goals belong to the benchmark scripts (benchmarks/*.py).
TARGET_KINDS = {
    "ort_fp32_speedup": "ort-fp32 p50 speedup over transformers eager at the base point",
    "ort_int8_speedup": "ort-int8 p50 speedup over transformers eager at the base point",
    "ort_fp32_speedup_b32": "ort-fp32 p50 speedup over transformers eager at batch 32 (other axes at base)",
    "ort_int8_speedup_b32": "ort-int8 p50 speedup over transformers eager at batch 32 (other axes at base)",
    "ort_fp32_pct_peak_b32": "ort-fp32 achieved GFLOP/s at batch 32 as % of the measured fp32 GEMM peak",
    "wrapper_overhead_pct": "model(**feeds) over session.run(None, feeds), p50, same session",
}


def evaluate_targets(result: dict, targets: dict | None = None) -> list[dict]:
    """`targets` ({name in TARGET_KINDS: goal}) as measured in this result ('not measured' when missing)."""
    base = (result.get("options") or {}).get("base") or {}
    out = []
    p = _point(result, **base)

    def add(name, value, goal, higher=True):
        what = TARGET_KINDS[name]
        if value is None:
            out.append({"target": name, "goal": goal, "value": None, "met": None, "what": what})
        else:
            met = value >= goal if higher else value < goal
            out.append({"target": name, "goal": goal, "value": value, "met": bool(met), "what": what,
                        "margin": value - goal if higher else goal - value})

    for name, goal in (targets or {}).items():
        if name not in TARGET_KINDS:
            raise KeyError(f"unknown benchmark target '{name}'; known: {sorted(TARGET_KINDS)}")
        if name in ("ort_fp32_speedup", "ort_int8_speedup"):
            b = "ort-fp32" if name == "ort_fp32_speedup" else "ort-int8"
            add(name, (p or {}).get("results", {}).get(b, {}).get("speedup_vs_transformers"), goal)
        elif name in ("ort_fp32_speedup_b32", "ort_int8_speedup_b32"):
            b = "ort-fp32" if name == "ort_fp32_speedup_b32" else "ort-int8"
            p32 = _point(result, **{**base, "batch": 32})
            add(name, (p32 or {}).get("results", {}).get(b, {}).get("speedup_vs_transformers"), goal)
        elif name == "ort_fp32_pct_peak_b32":
            p32 = _point(result, **{**base, "batch": 32})
            add(name, (p32 or {}).get("results", {}).get("ort-fp32", {}).get("pct_peak"), goal)
        else:
            add(name, (result.get("wrapper_overhead") or {}).get("overhead_pct"), goal, higher=False)
    return out
