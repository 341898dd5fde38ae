"""Files written safely: one atomic writer (fsync + rename), hashing, paths confined to a folder,
and the staging folder a build fills before it is published.

A build never deletes what it did not make: `staging_dir` refuses an existing output folder that
is not a vlexport artifact, replaces an existing artifact only after the new one is complete, and
removes only its own staging folders (`.<name>.partial-<pid>-*` of processes that are gone).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from vlexport.errors import ArtifactError

MANIFEST = "manifest.json"


def sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_atomic(path, data: bytes | str) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, fsync'd, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_json_atomic(path, data: dict) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder below `folder` (before it is renamed into place)."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def inside(folder: Path, rel: str) -> Path:
    """`folder / rel`, refused (ArtifactError) unless `rel` is a plain relative path that stays inside
    `folder` once symlinks are resolved."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise ArtifactError(f"artifact '{folder}' names a file {rel!r}: not a file name")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or rel.startswith(("~", "\\")) or ":" in p.parts[0]:
        raise ArtifactError(f"artifact '{folder}' names the file '{rel}', which is outside its folder: refused")
    root = Path(folder).resolve()
    full = (root / p).resolve()
    if full != root and root not in full.parents:
        raise ArtifactError(f"artifact '{folder}' has '{rel}' pointing outside its folder (symlink to {full}): "
                            f"refused")
    return root / p


def is_artifact(folder: Path) -> bool:
    """A folder that a vlexport build wrote (its manifest parses and says so)."""
    mf = Path(folder) / MANIFEST
    try:
        m = json.loads(mf.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and "format_version" in m and "vlexport_version" in m


def unlisted_files(folder: Path) -> list[str]:
    """Files in an artifact folder that its manifest's `files` table does not list (format 2+);
    [] for a manifest without that table (format 1 listed files per graph)."""
    folder = Path(folder)
    try:
        files = json.loads((folder / MANIFEST).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(files, dict):
        return []
    return sorted(rel for f in folder.rglob("*") if not f.is_dir() or f.is_symlink()
                  for rel in [str(f.relative_to(folder))] if rel != MANIFEST and rel not in files)


def check_output_folder(final: Path) -> None:
    """Refuse, before any work, an output path that a build would have to destroy or cannot use."""
    final = Path(final)
    # the current folder / root first: `--out .` must say so, whatever the folder holds
    if final.resolve() == Path.cwd().resolve() or final.resolve() == Path(final.resolve().anchor):
        raise ArtifactError(f"--out '{final}' is the current folder or the root; name a folder for the artifact "
                            f"(e.g. --out engines/my-model)")
    if final.is_symlink():  # replacing it would act on whatever it points to
        raise ArtifactError(f"--out '{final}' is a symbolic link; name a real folder (or a new path) for the "
                            f"artifact")
    if final.exists() and not final.is_dir():
        raise ArtifactError(f"--out '{final}' is an existing file, not a folder: choose another --out")
    # a file where a parent folder should be fails only at mkdir, after the long build: say so now
    for parent in final.absolute().parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ArtifactError(f"--out '{final}': '{parent}' is a file, not a folder; choose another --out")
            break
    if final.is_dir() and any(final.iterdir()):
        if not is_artifact(final):
            raise ArtifactError(f"--out '{final}' exists and is not a vlexport artifact; vlexport replaces only "
                                f"artifacts it built. Choose another --out (or empty that folder yourself)")
        # an artifact folder holding files of someone else's: replacing it would delete them
        extra = unlisted_files(final)
        if extra:
            raise ArtifactError(f"--out '{final}' is a vlexport artifact but also holds files it did not build "
                                f"({', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}); vlexport replaces only "
                                f"what it built. Move them away or choose another --out")


_STAGING = re.compile(r"^\..+\.(partial-\d+-.+|old-\d+)$")


def is_staging_name(folder) -> bool:
    """A build's hidden staging (`.<name>.partial-<pid>-*`) or trash (`.<name>.old-<pid>`) folder."""
    return bool(_STAGING.match(Path(folder).absolute().name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(final: Path) -> list[Path]:
    """Remove `.<name>.partial-<pid>-*` / `.<name>.old-<pid>` folders left by builds that were killed
    (their process is gone). Only our own naming pattern is touched."""
    removed = []
    final = Path(final)
    parent = final.parent
    if not parent.is_dir():
        return removed
    for p in sorted(parent.iterdir()):
        for tag in (".partial-", ".old-"):
            prefix = f".{final.name}{tag}"
            if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink():
                pid = p.name[len(prefix):].split("-")[0]
                if pid.isdigit() and not _alive(int(pid)):
                    if tag == ".old-" and not final.exists() and not final.is_symlink():
                        # killed between moving the old artifact aside and moving the new one in:
                        # the old artifact is the user's; put it back rather than delete it
                        os.replace(p, final)
                        continue
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
    return removed


@contextmanager
def staging_dir(final: Path, check=check_output_folder):
    """Yield a fresh folder beside `final`; on success it replaces `final`, on error it is removed.

    `final` must be absent, an empty folder, or a vlexport artifact (checked again here; `check` is
    that test: a Triton model repository passes its own). A process
    killed in the middle leaves only the hidden staging folder, which no loader accepts and the next
    build at that path removes."""
    final = Path(final)
    check(final)
    try:  # an unwritable or impossible --out: one line, not an OSError traceback
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(final)
        check(final)  # a stale .old- folder may just have been restored there
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-{os.getpid()}-"))
    except OSError as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"cannot create the artifact folder '{final}': {exc.strerror or exc}") from None
    try:
        yield tmp
        _publish_modes(tmp)
        fsync_tree(tmp)
        check(final)  # it may have changed while we built
        if final.exists() and any(final.iterdir()):
            trash = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            if final.exists():
                final.rmdir()  # empty: nothing of the user's is lost
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish_modes(folder: Path):
    """mkdtemp/mkstemp create owner-only entries; an artifact is meant to be shared (umask applies)."""
    umask = _umask()
    folder.chmod(0o777 & ~umask)
    for f in folder.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)
