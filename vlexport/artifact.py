"""The artifact folder (format 2): component graphs, engines, config, processor files, manifest.json.

Layout (default `engines/<name>/`):
    manifest.json               what was built, from what, with which tools, how well it validated
    config.json, tokenizer.*    the model config (HF format) and the processor's files
    <graph>.onnx (+ .data)      fp32 graph of each component graph ("model" for one-graph families)
    <graph>.fp16.onnx           mixed-precision graph;  <graph>.int8.onnx  dynamic-quantized (CPU)
    <graph>.fp16.plan           TensorRT engine

manifest.json, format 2:
    family, architecture, task, pipeline, options, config, source, axes {name: [min, opt, max(, step)]}
    graphs {name: {inputs, outputs, onnx {precision: {file, data [...], ...}}, engines {precision:
            {file, ...}}, trace_sizes, validation}}
    files {relative path: {sha256, bytes}}   every file in the folder but the manifest itself

An artifact is untrusted input. Opening one checks the manifest's shape (axis ranges, dims, names)
so a bad one fails at load, not at the first call. Every file the runtime opens must be listed in
`files`, lie inside the folder (no `..`, absolute paths or symlinks leaving it) and match its
SHA-256; an ONNX graph may only take external data from files listed for it. Nothing in a
manifest names code to import or turns on code execution (TensorRT host code needs the caller's
explicit opt-in, see `vlexport.load`). Writing is atomic (see `vlexport.fsutil.staging_dir`).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from vlexport import ARTIFACT_FORMAT_VERSION, __version__
from vlexport.errors import ArtifactError
from vlexport.fsutil import MANIFEST, inside, is_staging_name, sha256
from vlexport.specs import AxisRange, InputSpec, OutputSpec, check_io, input_from_json, output_from_json

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _bad(path, what) -> ArtifactError:
    return ArtifactError(f"{Path(path) / MANIFEST} is not a valid vlexport manifest: {what}; rebuild the artifact")


class Artifact:
    """A built artifact folder, read through its manifest. Cheap to open: no graph is loaded."""

    def __init__(self, path, verify: bool = True, allow_incomplete: bool = False):
        self.path = Path(path)
        mf = self.path / MANIFEST
        if not self.path.is_dir():
            raise ArtifactError(f"artifact folder '{self.path}' does not exist (build it with `vlexport build`)")
        if not mf.is_file():
            raise ArtifactError(f"'{self.path}' has no {MANIFEST}: not a vlexport artifact, or an unfinished build")
        if is_staging_name(self.path) and not allow_incomplete:
            # a killed build can leave a complete-looking manifest in its staging folder (written just
            # before the rename): only the build itself (allow_incomplete) opens one
            raise ArtifactError(f"'{self.path}' is the hidden staging folder of a build that did not finish (or is "
                                f"still running), not an artifact; rebuild, or load the folder the build was writing")
        try:
            self.manifest = json.loads(mf.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{mf} is not valid JSON ({exc}); the artifact is corrupted, rebuild it") from None
        if not isinstance(self.manifest, dict):
            raise _bad(self.path, "it is not a JSON object")
        fmt = self.manifest.get("format_version")
        if fmt != ARTIFACT_FORMAT_VERSION:
            by = self.manifest.get("vlexport_version")
            if isinstance(fmt, int) and fmt < ARTIFACT_FORMAT_VERSION:
                why = f"an older format ({fmt}, vlexport {by}): rebuild it with this version (vlexport build ...)"
            elif isinstance(fmt, int):
                why = f"a newer format ({fmt}, vlexport {by}): upgrade vlexport, or rebuild it with this version"
            else:
                why = f"an unknown format_version {fmt!r}: rebuild it"
            raise ArtifactError(f"{mf} has format_version {fmt!r}; this vlexport {__version__} reads format "
                                f"{ARTIFACT_FORMAT_VERSION}. The artifact is in {why}")
        if self.manifest.get("complete") is not True and not allow_incomplete:
            raise ArtifactError(f"{mf} is not marked complete: the build that wrote it did not finish")
        self.verify = verify
        self._verified: set[str] = set()
        self._lock = threading.Lock()
        self._parse()
        if verify:
            # config.json, the processor's files and the like are small: check them now, so a damaged
            # one fails at load (not at the first call, or never: the runtime reads the manifest's config)
            for rel in self.manifest["files"]:
                if rel not in self._graph_files:
                    self.file(rel)

    # ------------------------------------------------------------------ schema
    def _parse(self):
        m, p = self.manifest, self.path
        for key in ("family", "architecture", "task", "pipeline"):
            if not isinstance(m.get(key), str) or not _NAME.match(m[key]):
                raise _bad(p, f"'{key}' must be a name, got {m.get(key)!r}")
        if not isinstance(m.get("config"), dict) or not isinstance(m.get("options", {}), dict):
            raise _bad(p, "'config' and 'options' must be objects")
        try:
            self.axes = {str(k): AxisRange.from_list(v) for k, v in dict(m.get("axes") or {}).items()}
        except (ValueError, TypeError) as exc:
            raise _bad(p, f"axis ranges: {exc}") from None
        files = m.get("files")
        if not isinstance(files, dict):
            raise _bad(p, "'files' must map file names to their SHA-256")
        for rel, entry in files.items():
            inside(p, rel)
            if not isinstance(entry, dict) or not _HEX64.match(str(entry.get("sha256", ""))):
                raise _bad(p, f"file '{rel}' has no SHA-256")
        graphs = m.get("graphs")
        if not isinstance(graphs, dict) or not graphs:
            raise _bad(p, "'graphs' must list at least one graph")
        self._inputs, self._outputs = {}, {}
        self._graph_files: set[str] = set()
        for name, g in graphs.items():
            if not _NAME.match(str(name)) or not isinstance(g, dict):
                raise _bad(p, f"graph {name!r} is malformed")
            try:
                ins = [input_from_json(i) for i in g["inputs"]]
                outs = [output_from_json(o) for o in g["outputs"]]
                check_io(ins, outs, self.axes)
            except (KeyError, TypeError, ValueError) as exc:
                raise _bad(p, f"graph '{name}' inputs/outputs: {exc}") from None
            self._inputs[name], self._outputs[name] = ins, outs
            for kind in ("onnx", "engines"):
                table = g.get(kind) or {}
                if not isinstance(table, dict):
                    raise _bad(p, f"graph '{name}' '{kind}' must map precisions to files")
                for prec, e in table.items():
                    # a list or number where a file name belongs crashed the lookup below (TypeError)
                    data = e.get("data", []) if isinstance(e, dict) else None
                    if not isinstance(e, dict) or not isinstance(data, list):
                        raise _bad(p, f"graph '{name}' {kind} entry '{prec}' is malformed")
                    for rel in [e.get("file"), *data]:
                        if not isinstance(rel, str) or rel not in files:
                            raise _bad(p, f"graph '{name}' {prec} names {rel!r}, which is not among the hashed files")
                        self._graph_files.add(rel)

    # ------------------------------------------------------------------ what the manifest says
    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def architecture(self) -> str:
        return self.manifest["architecture"]

    @property
    def pipeline(self) -> str:
        return self.manifest["pipeline"]

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    @property
    def options(self) -> dict:
        return dict(self.manifest.get("options") or {})

    @property
    def graph_names(self) -> list[str]:
        return list(self.manifest["graphs"])

    def graph_entry(self, graph: str) -> dict:
        try:
            return self.manifest["graphs"][graph]
        except KeyError:
            raise ArtifactError(f"artifact '{self.path}' has no graph '{graph}'; it has {self.graph_names}") from None

    def inputs(self, graph: str) -> list[InputSpec]:
        self.graph_entry(graph)
        return self._inputs[graph]

    def outputs(self, graph: str) -> list[OutputSpec]:
        self.graph_entry(graph)
        return self._outputs[graph]

    def precisions(self, graph: str) -> list[str]:
        return sorted(self.graph_entry(graph).get("onnx", {}))

    def engine_precisions(self, graph: str) -> list[str]:
        return sorted(self.graph_entry(graph).get("engines", {}))

    def onnx_entry(self, graph: str, precision: str) -> dict:
        table = self.graph_entry(graph).get("onnx", {})
        if precision not in table:
            raise ArtifactError(f"artifact '{self.path}' has no {precision} graph for '{graph}'; it has "
                                f"{sorted(table) or 'none'}")
        return table[precision]

    def engine_entry(self, graph: str, precision: str = "fp16") -> dict:
        table = self.graph_entry(graph).get("engines", {})
        if precision not in table:
            raise ArtifactError(f"artifact '{self.path}' has no {precision} TensorRT engine for '{graph}'; it has "
                                f"{sorted(table) or 'none'} (build with --fp16 on a machine with TensorRT and a GPU)")
        return table[precision]

    # ------------------------------------------------------------------ files
    def file(self, rel: str) -> Path:
        """The path of a listed file, checked: inside the folder, present, and (verify=True) matching
        its recorded SHA-256 (hashed once per Artifact)."""
        entry = self.manifest["files"].get(rel)
        if entry is None:
            raise ArtifactError(f"artifact '{self.path}' does not list the file '{rel}' among its hashed files")
        full = inside(self.path, rel)
        if not full.is_file():
            raise ArtifactError(f"artifact file '{full}' is missing; rebuild the artifact")
        if self.verify:
            with self._lock:
                if rel not in self._verified:
                    if sha256(full) != entry["sha256"]:
                        raise ArtifactError(f"artifact file '{full}' does not match its recorded SHA-256: it is "
                                            f"corrupted or was changed after the build; rebuild the artifact")
                    self._verified.add(rel)
        return full

    def optional_file(self, rel: str) -> Path | None:
        """A listed file (checked as `file`), or None when the artifact does not have it."""
        return self.file(rel) if rel in self.manifest["files"] else None

    def onnx_file(self, graph: str, precision: str, variant: str | None = None) -> Path:
        """The ONNX graph of `graph` at `precision`, with its external-data files checked, and the graph's
        own external-data references confined to those files. variant: a copy recorded inside the entry
        (e.g. "ort_fused", the ONNX-Runtime-only fused fp32 graph)."""
        entry = self.onnx_entry(graph, precision)
        if variant is not None:
            entry = entry.get(variant)
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise ArtifactError(f"artifact '{self.path}' has no {variant} {precision} graph for '{graph}'")
        data = list(entry.get("data", []))
        for rel in data:
            self.file(rel)
        main = self.file(entry["file"])
        _check_external_data(main, set(data), self)
        return main

    def has_variant(self, graph: str, precision: str, variant: str) -> bool:
        return isinstance(self.graph_entry(graph).get("onnx", {}).get(precision, {}).get(variant), dict)

    def engine_file(self, graph: str, precision: str = "fp16") -> Path:
        return self.file(self.engine_entry(graph, precision)["file"])

    def verify_all(self) -> dict:
        """Every listed file hashed, plus files in the folder the manifest does not list.
        {"ok": [...], "bad": [(file, why)], "unlisted": [...]}"""
        ok, bad = [], []
        for rel, entry in self.manifest["files"].items():
            try:
                full = inside(self.path, rel)
                if not full.is_file():
                    bad.append((rel, "missing"))
                elif sha256(full) != entry["sha256"]:
                    bad.append((rel, "SHA-256 mismatch"))
                else:
                    ok.append(rel)
            except ArtifactError as exc:
                bad.append((rel, str(exc)))
        listed = set(self.manifest["files"]) | {MANIFEST}
        unlisted = sorted(str(f.relative_to(self.path)) for f in self.path.rglob("*")
                          if (f.is_file() or f.is_symlink()) and str(f.relative_to(self.path)) not in listed)
        return {"ok": ok, "bad": bad, "unlisted": unlisted}


def _check_external_data(main: Path, allowed: set[str], art: Artifact) -> None:
    """Refuse a graph whose tensors take external data from any file but its listed data files."""
    from vlexport.onnx_refs import ProtobufError, external_data_locations

    try:
        locations = external_data_locations(main)
    except (ProtobufError, OSError, ValueError) as exc:
        raise ArtifactError(f"'{main}' is not a readable ONNX graph ({exc}); rebuild the artifact") from None
    for loc in locations:
        if loc not in allowed:
            raise ArtifactError(f"'{main}' takes tensor data from '{loc}', which is not one of its listed data files "
                                f"{sorted(allowed) or '(none)'}: refused")


def new_manifest(spec, source: dict, config: dict) -> dict:
    """The manifest skeleton of a build (filled in stage by stage, marked complete last)."""
    import datetime

    return {
        "format_version": ARTIFACT_FORMAT_VERSION, "vlexport_version": __version__, "complete": False,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "family": spec.family, "architecture": spec.architecture, "task": spec.task, "pipeline": spec.pipeline,
        "options": dict(spec.options), "notes": spec.notes, "source": source, "config": config,
        "axes": {k: r.as_list() for k, r in spec.axes.items()},
        "graphs": {g.name: {**g.to_json(), "onnx": {}, "engines": {}, "validation": {}} for g in spec.graphs},
        "files": {},
    }


def onnx_entry(folder: Path, main: str, **facts) -> dict:
    """A graph entry: the main file and its external-data files (`<main>.data`, written beside it)."""
    folder = Path(folder)
    data = sorted(p.name for p in folder.iterdir() if p.name != main and p.name.startswith(main)
                  and p.name.endswith((".data", ".weights")))
    size = sum((folder / f).stat().st_size for f in [main, *data])
    return {"file": main, "data": data, "bytes": size, **facts}


def hash_files(folder: Path) -> dict:
    """{relative path: {sha256, bytes}} of every file below `folder` except the manifest."""
    folder = Path(folder)
    out = {}
    for f in sorted(folder.rglob("*")):
        rel = str(f.relative_to(folder))
        if f.is_file() and rel != MANIFEST:
            out[rel] = {"sha256": sha256(f), "bytes": f.stat().st_size}
    return out
