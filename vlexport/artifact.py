"""The artifact folder: graphs, engines, manifest.json, config.json and tokenizer files.

Layout (default `engines/<name>/`):
    manifest.json            what was built, from what, with which tools, and how well it validated
    config.json              the model config (HF format)
    tokenizer.json/vocab.txt the processor's files
    model.onnx (+ .data)     fp32 graph        model.fp16.onnx   mixed-precision graph
    model.int8.onnx          dynamic-quantized graph (CPU)      model.fp16.plan   TensorRT engine

Writing is atomic: a build fills `<name>.partial-XXXX/` and renames it into place only when every
step succeeded, so an interrupted build leaves nothing that loads as valid. The manifest's
`complete` flag and per-file SHA-256 catch folders assembled by hand or truncated later.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from vlexport import ARTIFACT_FORMAT_VERSION, __version__
from vlexport.errors import ArtifactError
from vlexport.tasks import AxisRange, InputSpec, OutputSpec

MANIFEST = "manifest.json"


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, data: dict):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


@contextmanager
def staging_dir(final: Path, overwrite: bool = True):
    """Yield a fresh folder beside `final`; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise ArtifactError(f"'{final}' exists; pass --overwrite to replace it")
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    try:
        yield tmp
        _publish_modes(tmp)
        if final.exists():
            trash = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish_modes(folder: Path):
    """mkdtemp/mkstemp create owner-only entries; an artifact is meant to be shared (umask applies)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def spec_to_json(spec) -> dict:
    """The TaskSpec parts the runtime needs, as JSON (no callables)."""
    return {
        "inputs": [{"name": i.name, "dims": list(i.dims), "dtype": i.dtype, "low": i.low, "high": i.high,
                    "required": i.required} for i in spec.inputs],
        "outputs": [{"name": o.name, "dims": list(o.dims), "dtype": o.dtype} for o in spec.outputs],
        "axes": {k: r.as_list() for k, r in spec.axes.items()},
    }


class Artifact:
    """A built artifact folder, read through its manifest. Cheap to open: no graph is loaded."""

    def __init__(self, path, verify: bool = True):
        self.path = Path(path)
        mf = self.path / MANIFEST
        if not self.path.is_dir():
            raise ArtifactError(f"artifact folder '{self.path}' does not exist (build it with `vlexport build`)")
        if not mf.is_file():
            raise ArtifactError(f"'{self.path}' has no {MANIFEST}: not a vlexport artifact, or an unfinished build")
        try:
            self.manifest = json.loads(mf.read_text())
        except ValueError as exc:
            raise ArtifactError(f"{mf} is not valid JSON ({exc}); the artifact is corrupted, rebuild it") from None
        fmt = self.manifest.get("format_version")
        if fmt != ARTIFACT_FORMAT_VERSION:
            raise ArtifactError(
                f"{mf} has format_version {fmt!r} (written by vlexport {self.manifest.get('vlexport_version')}); "
                f"this vlexport {__version__} reads format {ARTIFACT_FORMAT_VERSION}: rebuild the artifact")
        if not self.manifest.get("complete"):
            raise ArtifactError(f"{mf} is not marked complete: the build that wrote it did not finish")
        self._verified: set[str] = set()
        self.verify = verify

    # --- what the manifest says
    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def architecture(self) -> str:
        return self.manifest["architecture"]

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    @property
    def inputs(self) -> list[InputSpec]:
        return [InputSpec(i["name"], tuple(i["dims"]), i["dtype"], i.get("low"), i.get("high"), i.get("required", True))
                for i in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec(o["name"], tuple(o["dims"]), o["dtype"]) for o in self.manifest["outputs"]]

    @property
    def axes(self) -> dict[str, AxisRange]:
        return {k: AxisRange(*v) for k, v in self.manifest["axes"].items()}

    @property
    def precisions(self) -> list[str]:
        return sorted(self.manifest.get("graphs", {}))

    def graph(self, precision: str) -> Path:
        """Path of the ONNX graph for a precision, checked against its recorded hash."""
        return self._file("graphs", precision)

    def engine(self, precision: str = "fp16") -> Path:
        return self._file("engines", precision)

    def entry(self, kind: str, precision: str) -> dict:
        table = self.manifest.get(kind, {})
        if precision not in table:
            what = "graph" if kind == "graphs" else "TensorRT engine"
            raise ArtifactError(f"artifact '{self.path}' has no {precision} {what}; it has {sorted(table) or 'none'}"
                                + (" (build with --fp16 on a machine with TensorRT and a GPU)" if kind == "engines" else ""))
        return table[precision]

    def _file(self, kind: str, precision: str) -> Path:
        entry = self.entry(kind, precision)
        for rel, digest in entry.get("files", {}).items():
            f = self.path / rel
            if not f.is_file():
                raise ArtifactError(f"artifact file '{f}' is missing; rebuild the artifact")
            if self.verify and rel not in self._verified:
                if sha256(f) != digest:
                    raise ArtifactError(f"artifact file '{f}' does not match its recorded SHA-256: it is corrupted "
                                        f"or was changed after the build; rebuild the artifact")
                self._verified.add(rel)
        return self.path / entry["file"]


def file_entry(folder: Path, main: str, **extra) -> dict:
    """A manifest entry for `main` and its external-data files, with their hashes."""
    folder = Path(folder)
    stem = main
    files = {p.name: sha256(p) for p in sorted(folder.iterdir())
             if p.name == main or (p.name.startswith(stem) and p.name.endswith((".data", ".weights")))}
    return {"file": main, "files": files, "bytes": sum((folder / f).stat().st_size for f in files), **extra}
