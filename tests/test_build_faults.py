"""A build killed with SIGKILL at any stage leaves nothing that loads where there was nothing, and
leaves the artifact that was there intact (same file hashes, same outputs). Its hidden staging
folder never loads as an artifact, and the next build at that path removes it.

Real processes: `python -m vlexport build` is started with Popen, its stderr read line by line, and
killed when the i-th stage line ("[i/n] ...") appears, for every stage of a `--fp16 --int8` tiny
build that follows one which wrote something (after a validation or a skipped step the staging folder
holds what the point before left), and once more right before the end (on the last "✓ [n/n]" line, while the artifact is being
written and published). Each kill point is run twice at once: into a path that did not exist, and
over an earlier artifact.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import vlexport
from oracle import file_hashes
from vlexport import families
from vlexport.artifact import Artifact
from vlexport.errors import ArtifactError
from vlexport.families.visual_bert.checkpoints import TINY_ID
from vlexport.fsutil import check_output_folder, remove_stale_staging

# small ranges keep each build short; one thread per build: two builds run side by side
FLAGS = ["--fp16", "--int8", "--max-batch", "4", "--max-text-len", "16", "--max-visual-len", "8", "--threads", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
STAGE = re.compile(r"^\[(\d+)/(\d+)\] (.*) \.\.\.$")


def _cmd(out):
    return [sys.executable, "-m", "vlexport", "build", "--model", TINY_ID, *FLAGS, "--out", str(out)]


def build_and_kill(out: Path, trigger: re.Pattern) -> dict:
    """Start a build, SIGKILL it as soon as a stderr line matches `trigger`."""
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    lines, killed = [], False
    try:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if trigger.search(line):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
    finally:
        if not killed and proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    return {"pid": proc.pid, "killed": killed, "rc": proc.returncode, "lines": lines}


def writes_nothing(label: str) -> bool:
    """A stage that leaves the staging folder as it found it: validation (not the TensorRT engine's, which writes
    a provisional manifest for the engine runner), or a step the build skipped."""
    return (label.startswith("Validating ") and "TensorRT" not in label) or label.endswith(": skipped")


def hidden(parent: Path, name: str) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.name.startswith(f".{name}."))


def outputs(folder: Path) -> dict:
    """The artifact's outputs on fixed inputs made from its own description (any family)."""
    model = vlexport.load(folder, backend="onnxruntime")
    spec = families.describe_artifact(model.artifact)
    graph = spec.graphs[0]
    sizes = {k: r.min + (r.max - r.min) // 2 for k, r in spec.axes_for(graph).items()}
    feeds = graph.make_inputs(sizes, np.random.default_rng(0), pad=True)
    return {k: np.asarray(v) for k, v in model(**feeds).items()}


def loadable(folder: Path) -> bool:
    try:
        vlexport.load(folder, backend="onnxruntime")
    except ArtifactError:
        return False
    return True


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One full build (the earlier artifact): its folder, stage labels, file hashes and outputs."""
    out = tmp_path_factory.mktemp("baseline") / "tiny"
    proc = subprocess.run(_cmd(out), capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = [STAGE.match(line) for line in proc.stderr.splitlines()]
    stages = [(int(m[1]), m[3]) for m in stages if m]
    total = int(STAGE.match(next(line for line in proc.stderr.splitlines()
                                 if STAGE.match(line) and not line.startswith("[1/1]")))[2])
    assert [i for i, _ in stages] == list(range(1, total + 1)), proc.stderr
    return {"folder": out, "stages": stages, "total": total, "hashes": file_hashes(out), "outputs": outputs(out)}


def test_killed_builds_leave_nothing_half_written(baseline, tmp_path):
    total = baseline["total"]
    # every stage's start line, then the last stage's "done" line: the artifact is being written then. A kill
    # at a stage's start leaves what the stage before it left; after one that only validates or was skipped
    # (it writes nothing), that is what the point before already left, so those points are not run twice
    stages = baseline["stages"]
    points = [(f"stage {i}/{total} ({label})", re.compile(rf"^\[{i}/\d+\] ")) for j, (i, label) in enumerate(stages)
              if j == 0 or not writes_nothing(stages[j - 1][1])]
    assert len(points) < len(stages)  # the --fp16 --int8 build validates between its writing stages
    points.append(("right before the end", re.compile(rf"^✓ \[{total}/{total}\]")))
    fresh_parent, old_parent = tmp_path / "fresh", tmp_path / "old"
    fresh_parent.mkdir()
    old_parent.mkdir()
    fresh, old = fresh_parent / "tiny", old_parent / "tiny"
    shutil.copytree(baseline["folder"], old)

    fig = {"kill points": len(points), "builds killed": 0, "loadable after a kill": [], "earlier artifact intact": 0,
           "earlier artifact changed": [], "published before the kill landed": 0,
           "dead staging folders removed by the next build": 0, "old artifact restored by the next build": 0}
    dead = {fresh_parent: [], old_parent: []}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for what, trigger in points:
            end = what == "right before the end"
            runs = [pool.submit(build_and_kill, out, trigger) for out in (fresh, old)]
            r_fresh, r_old = (r.result() for r in runs)
            for r in (r_fresh, r_old):
                assert r["killed"] and r["rc"] == -signal.SIGKILL, (what, r["rc"], r["lines"][-5:])
                fig["builds killed"] += 1

            # into a path that did not exist: nothing loads there
            if end and fresh.exists() and Artifact(fresh).manifest.get("complete"):
                # the kill landed after the final rename: then the whole new artifact is there, nothing less
                res = Artifact(fresh).verify_all()
                assert not res["bad"] and not res["unlisted"], res
                fig["published before the kill landed"] += 1
                shutil.rmtree(fresh)
            elif loadable(fresh):
                fig["loadable after a kill"].append(f"{fresh} after {what}")
            # beside it, and beside the earlier artifact: hidden folders never load; those of earlier
            # dead builds were removed by this one once it started staging (its stage-2 line)
            for parent, r in ((fresh_parent, r_fresh), (old_parent, r_old)):
                left = hidden(parent, "tiny")
                fig["loadable after a kill"] += [f"{p} after {what}" for p in left if loadable(p)]
                if any(line.startswith("[2/") for line in r["lines"]):
                    assert all(f".partial-{r['pid']}-" in p.name or p.name == f".tiny.old-{r['pid']}"
                               for p in left), (what, left)
                    assert not any(p.exists() for p in dead[parent]), (what, dead[parent])
                    fig["dead staging folders removed by the next build"] += len(dead[parent])
                dead[parent] = left

            # over an earlier artifact: it is untouched, loads, and answers the same
            if end and not old.exists():
                # killed between the two renames of the publish step (old aside, new not yet in):
                # the next build at this path puts the old one back (what it runs first, run here)
                remove_stale_staging(old)
                fig["old artifact restored by the next build"] += 1
            now = file_hashes(old)
            if end and now != baseline["hashes"] and Artifact(old).manifest["created"] != \
                    Artifact(baseline["folder"]).manifest["created"]:
                res = Artifact(old).verify_all()  # replaced as a whole by the new build
                assert not res["bad"] and not res["unlisted"], res
                fig["published before the kill landed"] += 1
                shutil.rmtree(old)
                shutil.copytree(baseline["folder"], old)
            elif now != baseline["hashes"]:
                fig["earlier artifact changed"].append(what)
            else:
                got = outputs(old)
                assert got.keys() == baseline["outputs"].keys()
                for k in got:
                    np.testing.assert_array_equal(got[k], baseline["outputs"][k])
                fig["earlier artifact intact"] += 1
    print(f"\nkill figures: {fig}")
    assert fig["loadable after a kill"] == [] and fig["earlier artifact changed"] == [], fig
    assert fig["builds killed"] == 2 * len(points)
    assert fig["dead staging folders removed by the next build"] >= 2 * (len(points) - 2)
    assert loadable(old) and not loadable(fresh)


# ----------------------------------------------------------------------------- the states a kill leaves

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_complete_staging_folder_never_loads(baseline, tmp_path):
    """Killed after the manifest was written but before the rename: the staging folder holds a
    complete-looking artifact. It is still not one (only the build opens its staging folder)."""
    pid = _dead_pid()
    for name in (f".tiny.partial-{pid}-k3j9", f".tiny.old-{pid}"):
        shutil.copytree(baseline["folder"], tmp_path / name)
        with pytest.raises(ArtifactError, match="staging folder of a build that did not finish"):
            vlexport.load(tmp_path / name)
        assert Artifact(tmp_path / name, allow_incomplete=True).family  # what the build itself does


def test_killed_between_the_two_renames_keeps_the_old_artifact(baseline, tmp_path):
    """Publishing replaces an artifact with two renames (old -> .tiny.old-<pid>, new -> tiny). A build
    killed between them leaves no 'tiny' at all: the next build there puts the old one back instead
    of deleting it, and removes the dead build's staging folder."""
    pid = _dead_pid()
    out = tmp_path / "tiny"
    shutil.copytree(baseline["folder"], tmp_path / f".tiny.old-{pid}")
    staging = tmp_path / f".tiny.partial-{pid}-a1b2"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"half")
    live = tmp_path / f".tiny.partial-{os.getpid()}-zz"  # a running build's folder is left alone
    live.mkdir()
    removed = remove_stale_staging(out)
    assert removed == [staging]
    assert file_hashes(out) == baseline["hashes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "tiny"]
    check_output_folder(out)  # and it may be rebuilt
    got = outputs(out)
    for k in got:
        np.testing.assert_array_equal(got[k], baseline["outputs"][k])
