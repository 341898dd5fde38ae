"""Render a benchmark result: terminal table (rich), JSON, Markdown, PNG plots (matplotlib, lazily)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from vlexport.bench.harness import BASELINE, REFERENCE


def _f(x, fmt="{:.2f}", none="-"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return fmt.format(x)


def _sizes(s: dict) -> str:
    return " ".join(f"{k[0].upper()}={v}" for k, v in s.items())


def _parity_cells(e: dict) -> list[str]:
    par = e.get("parity") or {}
    if not par:
        return ["ref", "", ""]
    p = next(iter(par.values())) if len(par) == 1 else par.get("logits") or next(iter(par.values()))
    return [_f(p.get("max_abs_err"), "{:.1e}"), _f(p.get("cosine"), "{:.6f}"), _f(p.get("top1"), "{:.0%}")]


COLUMNS = ["sizes", "backend", "p50 ms", "p90 ms", "p99 ms", "samples/s", "GFLOP/s", "% peak", "x eager",
           "max abs err", "cosine", "top-1"]


def item_name(result: dict) -> str:
    """What one batch row is ("samples" unless the run says, e.g. "images", "texts")."""
    return (result.get("options") or {}).get("item_name") or "samples"


def columns(result: dict) -> list[str]:
    """COLUMNS with the throughput column named after the run's items ("images/s" = batch / p50)."""
    return [f"{item_name(result)}/s" if c == "samples/s" else c for c in COLUMNS]


def rows(result: dict) -> list[list[str]]:
    out = []
    for p in result.get("points", []):
        for name, e in p["results"].items():
            out.append([_sizes(p["sizes"]), name, _f(e["p50_ms"]), _f(e["p90_ms"]), _f(e["p99_ms"]),
                        _f(e["throughput"], "{:.1f}"), _f(e["gflops"], "{:.1f}"), _f(e.get("pct_peak"), "{:.0f}%"),
                        _f(e.get("speedup_vs_transformers"), "{:.2f}x"), *_parity_cells(e)])
    return out


def backend_rows(result: dict) -> list[list[str]]:
    out = []
    for name, b in result.get("backends", {}).items():
        if b["status"] != "ok":
            out.append([name, "skipped", "", "", "", "", "", "", b.get("reason", "")])
            continue
        p = next(iter((b.get("parity") or {}).values()), {})
        out.append([name, "ok", _f(b.get("load_s"), "{:.2f}"), _f(b.get("first_call_ms"), "{:.1f}"),
                    _f(b.get("peak_rss_delta_mb"), "{:.0f}"),
                    _f(p.get("max_abs_err"), "{:.1e}") if p else "ref",
                    _f(p.get("cosine_min"), "{:.6f}") if p else "", 
                    (_f(p.get("top1"), "{:.1%}") + " / " + _f(p.get("top5"), "{:.1%}")) if p else "",
                    b.get("runtime", "")])
    return out


BACKEND_COLUMNS = ["backend", "status", "load s", "first call ms", "peak RSS +MB", "max abs err",
                   "min cosine", "top-1 / top-5", "runtime / reason"]


def target_rows(result: dict) -> list[list[str]]:
    out = []
    for t in result.get("targets", []):
        met = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        unit = "%" if "pct" in t["target"] else "x"
        goal = ("< " if "overhead" in t["target"] else ">= ") + f"{t['goal']:g}{unit}"
        out.append([t["target"], goal, _f(t["value"], "{:.2f}") + (unit if t["value"] is not None else ""), met,
                    t.get("what", "")])
    return out


def machine_line(result: dict) -> str:
    m = result.get("machine", {})
    v = m.get("versions", {})
    peak = result.get("gemm_peak") or {}
    gp = (f"; fp32 GEMM peak {peak['peak']:.0f} GFLOP/s ({peak['peak_library']}; "
          + ", ".join(f"{k} {x:.0f}" for k, x in peak.get("by_library", {}).items()) + ")") if peak.get("peak") else ""
    gpus = ", ".join(g["name"] for g in m.get("gpus", [])) or "no GPU"
    return (f"{m.get('date', '')}: {m.get('cpu', '?')} ({m.get('logical_cores')} logical cores, "
            f"{m.get('threads_used')} threads used, {m.get('memory_gb', '?')} GB; {gpus}); "
            + ", ".join(f"{k} {x}" for k, x in v.items()) + gp)


def load_line(result: dict) -> str:
    """How busy the machine was: other processes' CPU use during the timed loops, and the load average."""
    pts = [p for p in result.get("points", []) if p.get("load")]
    run = result.get("load") or {}
    if not pts and not run:
        return ""
    cores = (run or pts[0]["load"]).get("logical_cores") or (result.get("machine") or {}).get("logical_cores")
    parts = []
    if pts:
        others = [p["load"]["others_cores"] for p in pts]
        steal = max(p["load"].get("steal_cores", 0.0) for p in pts)
        parts.append(f"during the timed loops other processes kept {min(others):.2f}-{max(others):.2f} of {cores} cores "
                     f"busy (per point: " + ", ".join(f"{_sizes(p['sizes'])} {p['load']['others_cores']:.2f}"
                                                      for p in pts) + ")"
                     + (f", hypervisor steal up to {steal:.2f} cores" if steal >= 0.01 else ""))
    if run:
        la = [x for x in (run.get("loadavg_1m_start"), run.get("loadavg_1m_end")) if x is not None]
        parts.append(f"whole run {run['wall_s']:.0f} s: this process {run['self_cores']:.2f} cores, others "
                     f"{run['others_cores']:.2f} cores on average"
                     + (f"; 1-min load average {la[0]:.2f} at the start, {la[-1]:.2f} at the end" if la else ""))
    return "; ".join(parts)


def print_report(result: dict, console=None):
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # files and pipes: wide enough for the tables
            console = Console(width=200)
    from rich.text import Text

    # values come from the machine, the artifact and error messages: text, never rich markup
    console.print(Text("vlexport bench ", style="bold") + Text(str(result.get("artifact", {}).get("path", ""))))
    console.print(Text(machine_line(result), style="dim"))
    if load_line(result):
        console.print(Text("load: " + load_line(result), style="dim"))
    graph = _graph_note(result)
    for title, cols, body in (("Backends (parity on the random set vs the torch reference)" + graph, BACKEND_COLUMNS,
                               backend_rows(result)),
                              ("Latency and parity per size point (backends interleaved)" + graph, columns(result),
                               rows(result)),
                              ("Targets", ["target", "goal", "measured", "status", "what"], target_rows(result))):
        t = Table(title=title, title_justify="left")
        for c in cols:
            t.add_column(c, justify="left" if c in ("sizes", "backend", "runtime / reason", "what", "target") else "right")
        for r in body:
            t.add_row(*(Text(str(x)) for x in r))
        console.print(t)
    w = result.get("wrapper_overhead")
    if w:
        console.print(Text(f"wrapper overhead: {w.get('call', 'model(**feeds)')} p50 {w['wrapper']['p50_ms']:.3f} ms vs "
                           f"session.run {w['raw_session']['p50_ms']:.3f} ms: {w['overhead_pct']:+.2f}%"))


def write_json(result: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def _md_table(cols, body) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in body]
    return "\n".join(lines)


def _graph_note(result: dict) -> str:
    m = result.get("model") or {}
    return f" - graph '{m['graph']}'" if len(m.get("graphs") or []) > 1 else ""


def _model_line(result: dict) -> str:
    opts = result.get("options", {})
    m = result.get("model") or {}
    graph = (f", graph `{m['graph']}` (of {', '.join(m['graphs'])})" if len(m.get("graphs") or []) > 1 else "")
    return (f"**Model**: `{opts.get('model')}` ({m.get('architecture')}){graph}, "
            f"{opts.get('threads')} threads, {opts.get('warmup')} warm-up + {opts.get('iters')} interleaved "
            f"iterations per point, inputs {'randomly right-padded' if opts.get('pad') else 'unpadded'}; "
            f"parity against `{REFERENCE}` (our PyTorch reference), speed-ups against `{BASELINE}` eager.")


def _sections(result: dict, h: str = "##") -> list[str]:
    """The tables of one result, under headings of level `h`."""
    parts = [f"{h} Targets", "", _md_table(["target", "goal", "measured", "status", "what"], target_rows(result)), ""]
    parts += [f"{h} Backends", "", _md_table(BACKEND_COLUMNS, backend_rows(result)), ""]
    parts += [f"{h} Latency per size point", "", _md_table(columns(result), rows(result)), ""]
    gpu = [(p["sizes"], name, e) for p in result.get("points", []) for name, e in p["results"].items() if "device" in e]
    if gpu:
        parts += [f"{h} GPU device time", "", gpu[0][2]["device"]["method"] + ".", "",
                  _md_table(["sizes", "backend", "wall p50 ms", "device p50 ms", "device p90 ms"],
                            [[_sizes(sizes), name, f"{e['p50_ms']:.3f}",
                              f"{e['device']['p50_ms']:.3f}", f"{e['device']['p90_ms']:.3f}"]
                             for sizes, name, e in gpu]), ""]
    w = result.get("wrapper_overhead")
    if w:
        parts += [f"Wrapper overhead (ort-fp32, base sizes, {w['iters']} interleaved calls): `{w.get('call', 'model(**feeds)')}` p50 "
                  f"{w['wrapper']['p50_ms']:.3f} ms vs `session.run(None, feeds)` {w['raw_session']['p50_ms']:.3f} ms "
                  f"= {w['overhead_pct']:+.2f}%.", ""]
    return parts


def to_markdown(result: dict, title: str = "vlexport benchmark", reading: str = "") -> str:
    parts = [f"# {title}", "", f"**Machine**: {machine_line(result)}", ""]
    if load_line(result):
        parts += [f"**Load**: {load_line(result)}", ""]
    parts += [_model_line(result), ""]
    if reading:
        parts += ["## Reading", "", reading.strip(), ""]
    parts += _sections(result)
    return "\n".join(parts)


def suite_markdown(results: list[dict], title: str = "vlexport benchmark", reading: str = "",
                   headings: list[str] | None = None, appendix: str = "") -> str:
    """Several runs (e.g. one per graph of an artifact, run one after another in one process) in one
    file: the machine once, then each run's load, model line and tables under its own heading."""
    parts = [f"# {title}", ""]
    if results:
        parts += [f"**Machine**: {machine_line(results[0])}", ""]
    if reading:
        parts += ["## Reading", "", reading.strip(), ""]
    for i, r in enumerate(results):
        m = r.get("model") or {}
        head = (headings or [])[i] if i < len(headings or []) else f"Graph `{m.get('graph')}`"
        parts += [f"## {head}", "", _model_line(r), ""]
        if load_line(r):
            parts += [f"**Load**: {load_line(r)}", ""]
        parts += _sections(r, "###")
    if appendix:
        parts += [appendix.strip(), ""]
    return "\n".join(parts)


def write_markdown(result: dict, path, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(result, **kw) + "\n")
    return path


def series(result: dict, axis: str) -> dict[str, list[tuple[int, float, float]]]:
    """backend -> [(size along `axis`, p50 ms, samples/s)] over the points where only `axis` moves."""
    base = result.get("options", {}).get("base", {})
    out: dict[str, list] = {}
    for p in result.get("points", []):
        s = p["sizes"]
        if any(s.get(k) != v for k, v in base.items() if k != axis):
            continue
        for name, e in p["results"].items():
            out.setdefault(name, []).append((s[axis], e["p50_ms"], e["throughput"]))
    return {k: sorted(v) for k, v in out.items()}


def write_plots(result: dict, folder, prefix: str = "latency") -> list[Path]:
    """One PNG per swept axis (batch, text, visual): p50 latency (and, for batch, throughput) per backend."""
    from vlexport._deps import require

    matplotlib = require("matplotlib", "benchmark plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    axes_swept = [a for a in ("batch", "text", "visual") if len({p["sizes"].get(a) for p in result.get("points", [])}) > 1]
    for axis in axes_swept:
        data = series(result, axis)
        if not data or max(len(v) for v in data.values()) < 2:
            continue
        ncols = 2 if axis == "batch" else 1
        fig, axs = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.2), squeeze=False)
        for name, pts in data.items():
            xs = [p[0] for p in pts]
            axs[0][0].plot(xs, [p[1] for p in pts], marker="o", label=name)
            if ncols == 2:
                axs[0][1].plot(xs, [p[2] for p in pts], marker="o", label=name)
        axs[0][0].set(xlabel=axis, ylabel="p50 latency (ms)", title=f"latency vs {axis}")
        if axis == "batch":
            axs[0][0].set_xscale("log", base=2)
            axs[0][0].set_yscale("log")
            axs[0][1].set(xlabel=axis, ylabel=f"{item_name(result)}/s", title="throughput vs batch")
            axs[0][1].set_xscale("log", base=2)
        for a in axs[0]:
            a.grid(True, alpha=0.3)
            a.legend(fontsize=8)
        m = result.get("machine", {})
        graph = (result.get("model") or {}).get("graph") if len((result.get("model") or {}).get("graphs") or []) > 1 else None
        fig.suptitle(f"{m.get('cpu', '')}, {m.get('threads_used')} threads" + (f", graph '{graph}'" if graph else ""),
                     fontsize=9)
        fig.tight_layout()
        path = folder / f"{prefix}_vs_{axis}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_all(result: dict, folder, stem: str = "bench", plots: bool = True, **md) -> dict[str, object]:
    folder = Path(folder)
    files = {"json": write_json(result, folder / f"{stem}.json"), "markdown": write_markdown(result, folder / f"{stem}.md", **md)}
    if plots:
        files["plots"] = write_plots(result, folder, prefix=f"{stem}_latency")
    return files


def write_suite(results: list[dict], folder, stem: str = "bench", plots: bool = True, title: str = "vlexport benchmark",
                reading: str = "", headings: list[str] | None = None, extra: dict | None = None,
                appendix: str = "") -> dict[str, object]:
    """One JSON ({"title", "runs": [...], **extra}) and one Markdown file for several runs (`appendix`:
    Markdown put after them); plots per run (`<stem>_<graph>_latency_vs_<axis>.png`)."""
    folder = Path(folder)
    files = {"json": write_json({"title": title, "runs": results, **(extra or {})}, folder / f"{stem}.json")}
    path = folder / f"{stem}.md"
    path.write_text(suite_markdown(results, title=title, reading=reading, headings=headings, appendix=appendix) + "\n")
    files["markdown"] = path
    if plots:
        files["plots"] = [f for i, r in enumerate(results)
                          for f in write_plots(r, folder, prefix=f"{stem}_{(r.get('model') or {}).get('graph') or i}_latency")]
    return files
