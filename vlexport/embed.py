"""`vlexport embed PATH --images DIR_OR_GLOB... | --texts FILE --out vectors.npy`: many inputs, one matrix.

Works for any artifact whose pipeline has `embed_images` / `embed_texts` (and, optionally, `max_batch`);
nothing here names a family. The Python API is `embed(...)`, which returns an `EmbedResult`.

Inputs
    --images takes one or more directories (searched recursively for .jpg .jpeg .png .bmp .gif .tif .tiff
    .webp, any letter case, symlinked folders not followed), glob patterns ("photos/*.jpg", "data/**/*.png":
    the files they match, taken as they are) or plain file paths. Each input's files are sorted by path, inputs
    keep the order given, and a file named twice is embedded once. An input that matches nothing is an error
    naming it. --texts FILE: one text per line, UTF-8 (a leading BOM is dropped); blank lines are skipped and
    each row records its 1-based line number.

Bad inputs never abort the run. A batch whose inputs fail to read or decode (an InputError, or a
NumericalError for an input the graph cannot represent) is retried one input at a time; only the
failing ones are dropped, each reported on stderr as one line "skipped SOURCE: reason" and listed in
the sidecar. The run fails (exit 2, nothing written) only for things the user must fix: bad flags, an
--out that cannot be written, no input at all, or no input that could be embedded.

Outputs (both written atomically: hidden temporary files in the destination folder, fsync'd, renamed)
    vectors.npy   float32 (rows, dim), one row per embedded input, in input order; L2-normalized rows
                  unless --no-normalize (then the projected, unnormalized features).
    vectors.json  the sidecar (same stem as --out):
                  {"format": "vlexport-embeddings/1", "artifact": absolute path, "kind": "images"|"texts",
                   "normalized": bool, "dim": P, "dtype": "float32", "count": rows,
                   "precision": "fp32", "backend": "onnxruntime" (or {graph: backend} when they differ),
                   "batch_size": B, "seconds": s, "vlexport_version": ...,
                   "rows": [{"row": 0, "source": "photos/a.jpg"}, ...]  (texts: "FILE:LINE"),
                   "skipped": [{"source": ..., "error": ...}, ...]}
                  Sources are the paths as found from the arguments given (relative to the working folder
                  when those were). The .npy is renamed into place first, then the sidecar; a reader can
                  check that len(rows) == count == the array's length.
    An existing vectors.npy / vectors.json is replaced only with overwrite=True (--overwrite). A run that
    is killed leaves at most `.vectors.npy.partial-<pid>-*.tmp` files, removed by the next run there.

Memory stays O(batch) whatever the number of inputs: a batch is decoded, embedded and appended to the
temporary .npy (a header reserved up front, rows written sequentially with plain writes - no memmap, so
no page-cache growth counts against the process), and the header is rewritten with the final row count
at the end; skipped inputs simply leave no row, so nothing is copied. Only the list of input paths and
the sidecar's row table (small strings) grow with the number of inputs.
"""

from __future__ import annotations

import glob
import json
import os
import re
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlexport.errors import ConfigError, InputError, NumericalError, VlexportError
from vlexport.fsutil import _alive, _umask

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEFAULT_BATCH_SIZE = 32
FORMAT = "vlexport-embeddings/1"
_HEADER_BYTES = 128  # the reserved .npy v1.0 header: magic + version + length + dict, padded (a multiple of 64)
_SKIPPABLE = (InputError, NumericalError)  # problems of one input: drop it, keep going


class OutputError(VlexportError, OSError):
    """--out cannot be written (a folder, an existing file without --overwrite, no permission)."""


@dataclass
class EmbedResult:
    out: Path
    sidecar: Path
    kind: str
    rows: int
    dim: int
    skipped: list = field(default_factory=list)  # [{"source", "error"}]
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        return (f"embedded {self.rows} {self.kind[:-1] if self.rows == 1 else self.kind} ({self.dim}-d), "
                f"skipped {len(self.skipped)}, in {self.seconds:.1f} s ({self.rate:.1f} rows/s): "
                f"{self.out} + {self.sidecar}")


# ------------------------------------------------------------------------------------------ paths

def sidecar_path(out: Path) -> Path:
    return Path(out).with_suffix(".json")


def check_out(out, overwrite: bool = False) -> tuple[Path, Path]:
    """(out, sidecar), refused (OutputError) before any work when they cannot or may not be written."""
    if out is None:
        raise OutputError("--out is required: the .npy file to write (e.g. --out vectors.npy)")
    out = Path(out)
    if out.is_dir():
        raise OutputError(f"--out '{out}' is a directory; name the .npy file to write (e.g. --out {out / 'vectors.npy'})")
    if out.suffix.lower() != ".npy":
        raise OutputError(f"--out '{out}' must end in .npy (the vectors are a NumPy .npy file; the sidecar "
                          f"'{sidecar_path(out.with_suffix('.npy')).name}' is written beside it)")
    side = sidecar_path(out)
    if side.is_dir():
        raise OutputError(f"the sidecar '{side}' (beside --out) is a directory; choose another --out")
    if not overwrite:
        for p in (out, side):
            if p.exists() or p.is_symlink():
                raise OutputError(f"'{p}' exists; pass --overwrite to replace it (or choose another --out)")
    for parent in out.absolute().parents:  # a file where a folder should be
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"--out '{out}': '{parent}' is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK) and parent == out.absolute().parent:
                raise OutputError(f"--out '{out}': the folder '{parent}' is not writable")
            break
    return out, side


def _has_magic(s: str) -> bool:
    return glob.has_magic(s)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _walk_images(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, onerror=None, followlinks=False):
        dirs.sort()
        for name in files:
            if _is_image_name(name):
                found.append(os.path.join(root, name))
    return sorted(found, key=lambda p: Path(os.path.relpath(p, folder)).parts)


def collect_images(specs) -> list[str]:
    """The image files that --images names (see the module docstring), in a deterministic order."""
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    specs = [os.fspath(s) for s in (specs or [])]
    if not specs:
        raise InputError("--images needs at least one directory, glob pattern or file")
    out, seen = [], set()
    for spec in specs:
        if not spec:
            raise InputError("--images: an empty path")
        if os.path.isdir(spec):
            files = _walk_images(spec)
            if not files:
                raise InputError(f"--images '{spec}': the directory holds no image files "
                                 f"({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}, searched recursively)")
        elif os.path.isfile(spec) or (os.path.lexists(spec) and not _has_magic(spec)):
            files = [spec]  # a file named explicitly: taken whatever its extension (unreadable: skipped)
        elif _has_magic(spec):
            files = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not files:
                raise InputError(f"--images '{spec}' matches no files")
        else:
            raise InputError(f"--images '{spec}': no such file or directory")
        for f in files:
            key = os.path.normcase(os.path.abspath(f))
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def _text_lines(path: str):
    """(line number, bytes of the line without its end) for each non-blank line of the file."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                yield n, raw


def count_texts(path) -> int:
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"--texts '{path}' is a directory; give a text file (one text per line)")
    try:
        return sum(1 for _ in _text_lines(path))
    except FileNotFoundError:
        raise InputError(f"--texts '{path}': no such file") from None
    except OSError as exc:
        raise InputError(f"--texts '{path}' cannot be read: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------- the writer

def _npy_header(rows: int, dim: int) -> bytes:
    """A .npy v1.0 header for a C-order little-endian float32 (rows, dim) array, exactly _HEADER_BYTES long."""
    d = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, dim)
    magic = np.lib.format.magic(1, 0)
    text = d.ljust(_HEADER_BYTES - len(magic) - 2 - 1) + "\n"
    head = magic + struct.pack("<H", len(text)) + text.encode("latin1")
    assert len(head) == _HEADER_BYTES
    return head


def _remove_stale(folder: Path, names) -> None:
    """Temporary files of earlier runs (at these destinations) whose process is gone."""
    pattern = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)-[^/]*\.tmp$")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for p in entries:
        m = pattern.match(p.name)
        if m and m["name"] in names and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            try:
                if p.is_file() and not p.is_symlink():
                    p.unlink()
            except OSError:
                pass


class _Outputs:
    """The two temporary files beside --out; publish() renames them into place, discard() removes them."""

    def __init__(self, out: Path, side: Path):
        self.out, self.side = out, side
        self.tmp: list[str] = []
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(out.parent, {out.name, side.name})
            for p in (out, side):
                fd, name = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.partial-{os.getpid()}-", suffix=".tmp")
                os.close(fd)
                self.tmp.append(name)
            self.f = open(self.tmp[0], "r+b")
            self.f.write(_npy_header(0, 0))  # rewritten with the real shape at the end
            self.f.flush()
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot write --out '{out}': {exc.strerror or exc}") from None
        self.rows, self.dim = 0, None

    def append(self, block: np.ndarray):
        block = np.ascontiguousarray(block, dtype="<f4")
        if block.ndim != 2:
            raise VlexportError(f"the pipeline returned embeddings of shape {block.shape}; expected (batch, dim)")
        if self.dim is None:
            self.dim = block.shape[1]
        elif block.shape[1] != self.dim:
            raise VlexportError(f"the pipeline returned {block.shape[1]}-d embeddings after {self.dim}-d ones")
        try:
            self.f.write(memoryview(block).cast("B"))
            self.f.flush()  # out of the process as each batch finishes (the page cache may hold it)
        except OSError as exc:
            raise OutputError(f"cannot write --out '{self.out}': {exc.strerror or exc}") from None
        self.rows += len(block)

    def publish(self, sidecar: dict, overwrite: bool):
        try:
            self.f.seek(0)
            self.f.write(_npy_header(self.rows, self.dim))
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            with open(self.tmp[1], "w", encoding="utf-8") as f:
                _write_sidecar(f, sidecar)
                f.flush()
                os.fsync(f.fileno())
            mode = 0o666 & ~_umask()
            for t in self.tmp:
                os.chmod(t, mode)
            if not overwrite:  # created while we worked?
                for p in (self.out, self.side):
                    if p.exists() or p.is_symlink():
                        raise OutputError(f"'{p}' appeared while embedding; pass --overwrite to replace it")
            for p in (self.out, self.side):
                if p.is_dir():
                    raise OutputError(f"'{p}' is now a directory; nothing was written")
            os.replace(self.tmp[0], self.out)
            self.tmp[0] = None
            os.replace(self.tmp[1], self.side)
            self.tmp[1] = None
            try:
                fd = os.open(self.out.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass
        except OSError as exc:
            if isinstance(exc, VlexportError):
                raise
            raise OutputError(f"cannot write --out '{self.out}': {exc.strerror or exc}") from None

    def discard(self):
        f = getattr(self, "f", None)
        if f is not None and not f.closed:
            f.close()
        for t in self.tmp:
            if t is not None:
                try:
                    os.unlink(t)
                except OSError:
                    pass


def _write_sidecar(f, data: dict) -> None:
    """JSON with the header fields indented and one entry per line for the lists (written as it goes:
    "rows" holds the sources, each written as {"row": i, "source": ...})."""
    f.write("{\n")
    items = list(data.items())
    for i, (k, v) in enumerate(items):
        end = "," if i < len(items) - 1 else ""
        if isinstance(v, list):
            if not v:
                f.write(f"  {json.dumps(k)}: []{end}\n")
                continue
            f.write(f"  {json.dumps(k)}: [\n")
            for j, x in enumerate(v):
                x = {"row": j, "source": x} if k == "rows" else x
                f.write(f"    {json.dumps(x, ensure_ascii=False)}{',' if j < len(v) - 1 else ''}\n")
            f.write(f"  ]{end}\n")
        else:
            f.write(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}{end}\n")
    f.write("}\n")


# ------------------------------------------------------------------------------------- reporting

class _Progress:
    """A rich bar on stderr (count/total, rate, elapsed, ETA) on a terminal; on a pipe or log, a plain
    line every 30 s. Messages (skipped inputs) print above the bar. Disabled: messages only."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.done = total, label, 0
        self._bar = self._task = None
        self._start = self._last = time.perf_counter()
        self._plain = False
        if enabled:
            from rich.console import Console

            console = Console(stderr=True, soft_wrap=True)
            if console.is_terminal:
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                           TimeElapsedColumn, TimeRemainingColumn)

                self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                     TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True)
            else:
                self._plain = True

    def __enter__(self):
        if self._bar is not None:
            self._bar.start()
            from rich.markup import escape

            self._task = self._bar.add_task(escape(self.label), total=self.total, rate="")
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False

    def advance(self, k: int):
        self.done += k
        now = time.perf_counter()
        rate = self.done / max(now - self._start, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, advance=k, rate=f"{rate:.1f}/s")
        elif self._plain and now - self._last >= 30:
            self._last = now
            print(f"{self.label}: {self.done}/{self.total} ({rate:.1f}/s)", file=sys.stderr, flush=True)

    def message(self, text: str):
        if self._bar is not None:
            from rich.text import Text

            self._bar.console.print(Text(text), highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)


def _reason(exc: BaseException, source: str, kind: str = "images") -> str:
    """The error without the processor's 'images[3] ('/x.jpg'): ' prefix and the path it repeats."""
    try:
        if kind == "images" and os.path.isfile(source) and os.path.getsize(source) == 0:
            return "an empty file (0 bytes)"
    except OSError:
        pass
    text = " ".join(str(exc).split())
    text = re.sub(r"^(images|texts?)(\[\d+\])?( \(.*?\))?: ", "", text, count=1)
    quoted = repr(source)
    if text.startswith(quoted + " "):
        text = text[len(quoted) + 1:]
        text = text[3:] if text.startswith("is ") else text
    return text or type(exc).__name__


# ------------------------------------------------------------------------------------------ main

def _load(path, backend, precision):
    import vlexport

    return vlexport.load(path, backend=backend, precision=precision)


def _backend_info(pipeline, precision):
    backends = getattr(pipeline, "backends", None) or {}
    names = {g: getattr(b, "name", type(b).__name__) for g, b in backends.items()}
    precs = {getattr(b, "precision", precision) for b in backends.values()}
    backend = next(iter(set(names.values()))) if len(set(names.values())) == 1 else (names or None)
    return backend, (next(iter(precs)) if len(precs) == 1 else sorted(precs) or precision)


def embed(path, *, images=None, texts=None, out=None, batch_size: int = DEFAULT_BATCH_SIZE, normalize: bool = True,
          overwrite: bool = False, backend: str = "auto", precision: str = "fp32", progress: bool = True,
          pipeline=None) -> EmbedResult:
    """Embed every image that `images` names (or every non-blank line of the `texts` file) with the artifact
    at `path` into `out` (.npy) and its sidecar (.json); see the module docstring. `pipeline`: an already
    loaded pipeline to use instead of loading `path`."""
    start = time.perf_counter()
    if (images is None or images == []) == (texts is None):
        raise InputError("give exactly one of --images (directories, globs or files) and --texts (a file, one text "
                         "per line)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"--batch-size must be a positive integer, got {batch_size!r}")
    out, side = check_out(out, overwrite)
    kind = "images" if texts is None else "texts"
    if kind == "images":
        sources = collect_images(images)
        total = len(sources)
    else:
        texts = os.fspath(texts)
        total = count_texts(texts)
        if total == 0:
            raise InputError(f"--texts '{texts}' holds no text (every line is blank)")
    if pipeline is None:
        pipeline = _load(path, backend, precision)
    method = getattr(pipeline, f"embed_{kind}", None)
    if not callable(method):
        art = getattr(pipeline, "artifact", None)
        what = f"a {art.family} artifact ({art.architecture})" if art is not None else type(pipeline).__name__
        raise ConfigError(f"'{path}' is {what}: this artifact's pipeline ({type(pipeline).__name__}) does not embed "
                          f"{kind} (it has no embed_{kind})")
    cap = getattr(pipeline, "max_batch", None)
    step = min(batch_size, cap) if isinstance(cap, int) and cap >= 1 else batch_size

    if kind == "images":
        def batches():
            for i in range(0, total, step):
                chunk = sources[i:i + step]
                yield chunk, list(chunk), []
    else:
        def batches():
            chunk, bad = [], []
            for n, raw in _text_lines(texts):
                src = f"{texts}:{n}"
                try:
                    chunk.append((src, raw.decode("utf-8").strip()))
                except UnicodeDecodeError as exc:
                    bad.append((src, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"))
                if len(chunk) + len(bad) >= step:
                    yield [s for s, _ in chunk], [t for _, t in chunk], bad
                    chunk, bad = [], []
            if chunk or bad:
                yield [s for s, _ in chunk], [t for _, t in chunk], bad

    rows, skipped = [], []
    outputs = _Outputs(out, side)
    try:
        with _Progress(total, f"embedding {kind}", progress) as bar:
            def skip(src, why):
                skipped.append({"source": src, "error": why})
                bar.message(f"skipped {src}: {why}")

            for srcs, items, bad in batches():
                for src, why in bad:
                    skip(src, why)
                if items:
                    try:
                        blocks = [(srcs, method(items, batch_size=len(items), normalize=normalize))]
                    except _SKIPPABLE:
                        blocks = []
                        for src, item in zip(srcs, items):  # one at a time: drop only the bad ones
                            try:
                                blocks.append(([src], method([item], batch_size=1, normalize=normalize)))
                            except _SKIPPABLE as exc:
                                skip(src, _reason(exc, src, kind))
                    for got, block in blocks:
                        block = np.asarray(block)
                        if block.ndim != 2 or len(block) != len(got):
                            raise VlexportError(f"embed_{kind} returned shape {block.shape} for {len(got)} inputs")
                        outputs.append(block)
                        rows.extend(got)  # the sources, in row order
                bar.advance(len(srcs) + len(bad))
        if not rows:
            raise InputError(f"none of the {total} {kind} could be embedded (each is reported above as skipped); "
                             f"nothing was written")
        backend_used, precision_used = _backend_info(pipeline, precision)
        from vlexport import __version__

        seconds = time.perf_counter() - start
        sidecar = {"format": FORMAT, "artifact": str(Path(path).absolute()) if path is not None else None,
                   "kind": kind, "normalized": bool(normalize), "dim": int(outputs.dim), "dtype": "float32",
                   "count": len(rows), "precision": precision_used, "backend": backend_used, "batch_size": step,
                   "seconds": round(seconds, 3), "vlexport_version": __version__,
                   "rows": rows, "skipped": skipped}
        outputs.publish(sidecar, overwrite)
    except BaseException:
        outputs.discard()
        raise
    return EmbedResult(out=out, sidecar=side, kind=kind, rows=len(rows), dim=int(outputs.dim), skipped=skipped,
                       seconds=time.perf_counter() - start)
