"""User mistakes and hostile inputs on the command line: exit code 2 and exactly one stderr line
`vlexport <command>: error: ...`, never a traceback, and nothing of the user's touched.

Everything runs for real: subprocesses, real files (a PNG written with Pillow, a pickle whose
__reduce__ would create a marker file), a folder on PYTHONPATH whose torch/__init__.py raises
ImportError (a real failed import), pipes closed by `head`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlexport import families
from vlexport._deps import available
from vlexport.cli import main
from vlexport.families.visual_bert.checkpoints import TINY_ID, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None, cwd=None, timeout=300):
    full_env = {**os.environ, "COLUMNS": "250", **(env or {})}
    # the checkout first, so a run from another folder (cwd=) uses this vlexport
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (full_env.get("PYTHONPATH"), str(ROOT)) if p)
    return subprocess.run([sys.executable, "-m", "vlexport", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def one_line_error(proc, command: str, match: str) -> str:
    """Exit code 2 and one stderr line 'vlexport <command>: error: ...' matching `match`; returns it."""
    err = proc.stderr
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, err)
    assert lines[0].startswith(f"vlexport {command}: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]
    assert "--overwrite" not in lines[0]  # there is no such flag
    return lines[0]


class _Done:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def main_error(capsys, argv, command: str, match: str) -> str:
    """one_line_error for an in-process `vlexport` call (no interpreter start-up: for the cheap checks)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return one_line_error(_Done(code, capsys.readouterr().err), command, match)


def snapshot(folder: Path) -> dict:
    """Every entry below `folder` (itself included): kind, bytes, mtime - to show nothing changed."""
    out = {}
    for p in [folder, *sorted(folder.rglob("*"))]:
        st = p.lstat()
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else (os.readlink(p) if p.is_symlink() else None)
        out[str(p.relative_to(folder))] = (st.st_mode, st.st_mtime_ns, st.st_size, data)
    return out


@pytest.fixture(scope="module")
def artifact(tiny_artifacts):
    """A tiny fp32 + fp16 + int8 VisualBERT artifact, the session's shared build (read-only: copy to edit)."""
    return tiny_artifacts[TINY_ID]


# ============================================================================= 1. data loss

@pytest.mark.parametrize("kind", ["user files", "foreign manifest", "artifact plus a user file"])
def test_build_refuses_a_folder_it_did_not_make(kind, artifact, tmp_path):
    out = tmp_path / "out"
    if kind == "artifact plus a user file":
        shutil.copytree(artifact, out)
        (out / "my-notes.txt").write_text("results of last week's run\n")
        match = r"is a vlexport artifact but also holds files it did not build \(my-notes\.txt\)"
    else:
        (out / "sub").mkdir(parents=True)
        (out / "thesis.tex").write_text("\\chapter{Results}\n")
        (out / "sub" / "data.bin").write_bytes(os.urandom(1000))
        if kind == "foreign manifest":
            (out / "manifest.json").write_text(json.dumps({"name": "my-web-app", "version": "1.0"}))
        match = r"--out '.*out' exists and is not a vlexport artifact; vlexport replaces only artifacts it built"
    before = snapshot(out)
    for command in ("build", "export"):
        proc = run_cli(command, "--model", TINY_ID, "--out", out)  # progress on: refused before any stage
        one_line_error(proc, command, match)
        assert "[1/" not in proc.stdout + proc.stderr
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder beside it


def test_build_into_an_empty_folder(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["export", "--model", TINY_ID, "--out", str(out), "--quiet", "--max-text-len", "16"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_out_paths_refused_up_front(artifact, tmp_path):
    """`--out .`, a regular file, a symlink (to a folder, a file, nowhere), a path below a file: one
    line before the build starts (no stage line), and the target untouched."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "paper.pdf").write_bytes(b"%PDF-1.4 not mine to delete")
    linked = tmp_path / "linked"
    shutil.copytree(artifact, linked)  # even a link to an artifact: replacing it would act on the target
    os.symlink(linked, work / "to-artifact")
    os.symlink(work / "paper.pdf", work / "to-file")
    os.symlink(tmp_path / "nowhere", work / "dangling")
    before = snapshot(tmp_path)
    cases = [(".", r"--out '\.' is the current folder or the root"),
             (str(work), r"is the current folder or the root"),
             ("paper.pdf", r"--out 'paper\.pdf' is an existing file, not a folder"),
             ("to-artifact", r"--out 'to-artifact' is a symbolic link"),
             ("to-file", r"is a symbolic link"),
             ("dangling", r"is a symbolic link"),
             ("paper.pdf/model", r"'.*paper\.pdf' is a file, not a folder")]
    for out, match in cases:
        proc = run_cli("build", "--model", TINY_ID, "--fp16", "--out", out, cwd=work)
        one_line_error(proc, "build", match)
        assert "[1/" not in proc.stderr and proc.stdout == ""
    assert snapshot(tmp_path) == before


# ============================================================================= 4. one line, no traceback

@pytest.fixture(scope="module")
def no_torch(tmp_path_factory):
    """PYTHONPATH whose first folder holds a torch package that fails to import."""
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "torch").mkdir()
    (folder / "torch" / "__init__.py").write_text("raise ImportError('No module named torch (simulated)')\n")
    return {"PYTHONPATH": str(folder)}


def test_commands_that_need_torch_say_so(no_torch, artifact, tmp_path):
    for args in (["build", "--model", TINY_ID, "--out", tmp_path / "o"],
                 ["export", "--model", TINY_ID, "--out", tmp_path / "o"],
                 ["bench", TINY_ID], ["bench", artifact]):
        proc = run_cli(*args, env=no_torch)
        one_line_error(proc, args[0], r"needs the 'torch' package, which is not installed: pip install torch")
    assert not (tmp_path / "o").exists()
    # the runtime does not need torch
    proc = run_cli("predict", artifact, "--text", "what is this?", "--random-regions", "3", env=no_torch)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    proc = run_cli("inspect", artifact, "--verify", env=no_torch)
    assert proc.returncode == 0, proc.stderr


def _region_files(folder: Path) -> list[tuple[Path, str]]:
    from PIL import Image

    cases = []
    p = folder / "photo.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(p)  # an image, not region features
    cases.append((p, r"is not a readable \.npy file"))
    p = folder / "photo.npy"  # the same image under a .npy name
    shutil.copy(folder / "photo.png", p)
    cases.append((p, r"is not a readable \.npy file"))
    p = folder / "two.npz"
    np.savez(p, boxes=np.ones((3, 4), np.float32), scores=np.ones(3, np.float32))
    cases.append((p, r"archive with arrays \['boxes', 'scores'\]; expected one named 'features' or 'x'"))
    p = folder / "empty.npz"
    np.savez(p)
    cases.append((p, r"archive with arrays \[\]"))
    p = folder / "objects.npz"
    np.savez(p, features=np.array([{"box": 1}], dtype=object))
    cases.append((p, r"not a readable \.npz archive of numeric arrays"))
    p = folder / "objects.npy"
    np.save(p, np.array([{"box": 1}], dtype=object), allow_pickle=True)
    cases.append((p, r"holds Python objects"))
    p = folder / "strings.npz"
    np.savez(p, features=np.array(["a", "b"]))
    cases.append((p, r"holds <U1 values; expected float region features"))
    p = folder / "truncated.npz"
    np.savez(p, features=np.ones((5, 16), np.float32))
    p.write_bytes(p.read_bytes()[:200])
    cases.append((p, r"--visual-embeds '.*truncated\.npz'"))
    return cases


def test_unusable_region_files(artifact, tmp_path):
    for path, match in _region_files(tmp_path):
        proc = run_cli("predict", artifact, "--text", "what?", "--visual-embeds", path)
        line = one_line_error(proc, "predict", match)
        assert "allow_pickle" not in line and path.name in line, line


def _bad_axes_copy(artifact, folder: Path, value) -> Path:
    art = folder / "bad-axes"
    shutil.rmtree(art, ignore_errors=True)
    shutil.copytree(artifact, art)
    m = json.loads((art / "manifest.json").read_text())
    m["axes"]["text"] = value
    (art / "manifest.json").write_text(json.dumps(m))
    return art


@pytest.mark.parametrize("value", [[5, 2, 1], ["2", "20", "64"], [-4, 2, 64]],
                         ids=["descending", "strings", "negative"])
def test_bad_axis_values(artifact, tmp_path, value):
    art = _bad_axes_copy(artifact, tmp_path, value)
    for args in (["inspect", art], ["inspect", art, "--json"], ["validate", art],
                 ["predict", art, "--text", "hi", "--random-regions", "2"]):
        proc = run_cli(*args)
        one_line_error(proc, args[0], r"manifest\.json is not a valid vlexport manifest: axis ranges")


def test_inspect_into_a_closed_pipe(artifact):
    """`vlexport inspect --json | head -c 100` and friends: no BrokenPipeError traceback, exit 0 when
    everything fit in the pipe, else 141 like other tools - never 1, which means "verify failed"."""
    py = f"PYTHONPATH={ROOT} {sys.executable} -m vlexport"
    for reader, cmd in (("head -c 100", "inspect --json"), ("head -c 0", "inspect --json"),
                        ("head -c 100", "inspect"), ("true", "inspect"), ("head -c 10", "inspect --verify")):
        proc = subprocess.run(["bash", "-c", f"{py} {cmd} '{artifact}' | {reader} > /dev/null; "
                                             f"echo ${{PIPESTATUS[0]}} >&2"], capture_output=True, text=True)
        *lines, status = proc.stderr.strip().splitlines()
        assert lines == [], (reader, cmd, proc.stderr)
        assert int(status) in (0, 141), (reader, cmd, status)
    # what did come through is the manifest's beginning
    proc = subprocess.run(["bash", "-c", f"{py} inspect --json '{artifact}' | head -c 100"], capture_output=True)
    assert proc.stdout == json.dumps(json.loads((artifact / "manifest.json").read_text()), indent=2).encode()[:100]
    assert proc.stderr == b""


class _Marker:
    """Unpickling this would run os.system('touch MARKER')."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_checkpoint(writer, tmp_path):
    marker = tmp_path / "PWNED"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(tiny_config()))
    payload = {"visual_bert.embeddings.word_embeddings.weight": _Marker(marker)}
    if writer == "pickle":
        with open(model / "pytorch_model.bin", "wb") as f:
            pickle.dump(payload, f, protocol=4)
    else:
        import torch

        torch.save(payload, model / "pytorch_model.bin")
    assert not marker.exists()
    proc = run_cli("build", "--model", model, "--out", tmp_path / "out", "--quiet")
    one_line_error(proc, "build", r"pytorch_model\.bin was refused as unsafe: it holds pickled objects other than "
                                  r"tensors, and vlexport never runs code from a checkpoint")
    assert not marker.exists()
    assert "weights_only" not in proc.stderr and not (tmp_path / "out").exists()


# ============================================================================= 5. small ones

def test_max_align_needs_with_alignment(tmp_path, capsys):
    out = tmp_path / "aligned"
    assert main(["export", "--model", TINY_ID, "--with-alignment", "--max-align", "4", "--max-text-len", "16",
                 "--max-batch", "2", "--max-visual-len", "8", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    m = json.loads((out / "manifest.json").read_text())
    assert m["axes"]["align"][2] == 4 and m["options"]["with_alignment"] is True
    assert "image_text_alignment" in [i["name"] for i in m["graphs"]["model"]["inputs"]]
    import vlexport

    model = vlexport.load(out)
    enc = model.processor(text=["what?"], visual_embeds=np.ones((3, 16), np.float32))
    enc["image_text_alignment"] = np.full((1, 3, 4), -1, np.int64)
    assert model(**enc).logits.shape == (1, 16)
    main_error(capsys, ["export", "--model", TINY_ID, "--max-align", "4", "--out", tmp_path / "plain"], "export",
               r"--max-align does not apply: this model has no 'align' axis")
    assert not (tmp_path / "plain").exists()


def test_bad_numbers_and_texts(artifact, tmp_path, capsys):
    for args, match in ((["--top-k", "0"], r"--top-k must be >= 1, got 0"),
                        (["--top-k", "-3"], r"--top-k must be >= 1, got -3"),
                        (["--text", ""], r"--text number 1 is empty"),
                        (["--text", "   "], r"--text number 1 is empty"),
                        (["--text", "what?", ""], r"--text number 2 is empty")):
        text = [] if "--text" in args else ["--text", "what?"]
        full = ["predict", artifact, "--random-regions", "2", *text, *args]
        main_error(capsys, full, "predict", match)
    out = tmp_path / "o"
    for args, match in ((["--opt-text-len", "100"],
                         r"--opt-text-len 100 is outside \[--min-text-len 2, --max-text-len 64\]"),
                        (["--opt-batch", "64"], r"--opt-batch 64 is outside \[--min-batch 1, --max-batch 32\]"),
                        (["--opt-text-len", "30", "--max-text-len", "20"], r"--opt-text-len 30 is outside"),
                        (["--opt-visual-len", "0"], r"--opt-visual-len 0 is outside")):
        main_error(capsys, ["export", "--model", TINY_ID, *args, "--out", out], "export", match)
    assert not out.exists()


def test_progress_labels_are_not_markup(capfd):
    """A stage label carries user text (a model path): '[gpu]' stays, '[/]' does not crash rich."""
    from vlexport.progress import Stages

    st = Stages(2)
    with st.stage("Loading models/vqa[gpu]"):
        pass
    with st.stage("Loading odd[/]name"):
        st.note("pip install 'vlexport[gpu]'")
    err = capfd.readouterr().err
    assert re.search(r"✓ \[1/2\] Loading models/vqa\[gpu\] \(", err), err
    assert re.search(r"✓ \[2/2\] Loading odd\[/\]name \(", err), err
    assert "pip install 'vlexport[gpu]'" in err


@pytest.mark.skipif(available("tensorrt"), reason="the TensorRT-skip reason appears only where TensorRT is missing")
def test_validate_table_keeps_brackets(artifact):
    """The reason a TensorRT check cannot run, in validate's table. (The build's own TensorRT-skip note:
    tests/test_cli.py::test_build.)"""
    proc = run_cli("validate", artifact, "--backend", "tensorrt", "--quiet")
    assert proc.returncode == 1  # asked for by name and cannot run: a failure, with the reason
    assert "pip install 'vlexport[gpu]'" in re.sub(r"\s*│\s*", " ", proc.stdout).replace("\n", " "), proc.stdout


@pytest.mark.skipif(available("tensorrt"), reason="the skip reason appears only where TensorRT is missing")
def test_bench_skip_reason_keeps_its_brackets(artifact):
    proc = run_cli("bench", artifact, "--backends", "ort-fp32,tensorrt-fp16", "--iters", "1", "--warmup", "0",
                   "--parity-samples", "1", "--no-gemm-peak", "--no-wrapper-overhead", "--no-plots")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "vlexport[gpu]" in proc.stderr and "vlexport[gpu]" in proc.stdout.replace("\n", "")


@pytest.mark.parametrize("simplifier, expected", [
    ({"tool": "onnxsim", "message": "simplified with onnxsim", "kept": "raw", "raw_ms": 0.2, "simplified_ms": 0.19},
     "raw graph kept (onnxsim: 0.19 ms vs raw 0.2 ms)"),
    ({"tool": "onnxsim", "message": "simplified with onnxsim", "kept": "raw"}, "raw graph kept (onnxsim ran)"),
    ({"tool": "onnxslim", "message": "simplified with onnxslim", "kept": "simplified", "raw_ms": 0.3,
      "simplified_ms": 0.2}, "simplified with onnxslim (0.2 ms vs raw 0.3 ms)"),
    ({"tool": "none", "message": "disabled (--no-simplify)", "kept": "raw"}, "disabled (--no-simplify)"),
], ids=["raw kept", "raw kept, no timings", "simplified kept", "disabled"])
def test_inspect_says_which_graph_was_kept(artifact, tmp_path, simplifier, expected):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    m = json.loads((art / "manifest.json").read_text())
    m["graphs"]["model"]["onnx"]["fp32"]["simplifier"] = simplifier
    (art / "manifest.json").write_text(json.dumps(m))
    proc = run_cli("inspect", art, env={"COLUMNS": "300"})
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "model.onnx " in line and "fp32" in line)
    assert expected in row, row
    if simplifier["kept"] == "raw":
        assert "simplified with" not in row


def test_every_family_tiny_id_is_offered():
    """The build's --model help names every family's tiny ids (the tests above use VisualBERT's)."""
    proc = run_cli("build", "--help")
    assert proc.returncode == 0
    for fam in families.all_families():
        for model_id in fam.tiny:
            assert model_id in proc.stdout.replace("\n", "")
    assert "--overwrite" not in proc.stdout


def test_no_message_mentions_an_overwrite_flag(capsys):
    """`vlexport build` has no --overwrite (it replaces only its own artifacts): no message, help text or
    doc string may send a user to it. `vlexport embed` and `vlexport regions` have a real --overwrite flag,
    for their output files."""
    import vlexport
    from vlexport.cli import main

    own_flag = {("vlexport", "embed.py"), ("frcnn", "extract.py")}
    for f in Path(vlexport.__file__).parent.rglob("*.py"):
        if tuple(f.parts[-2:]) not in own_flag:
            text = f.read_text().replace('"--overwrite", action="store_true"', "")  # the embed parser's own flag
            assert "--overwrite" not in text, f
    for command in ("build", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--overwrite" not in capsys.readouterr().out
