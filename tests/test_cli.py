"""The `vlexport` command line: build / export / inspect / predict / validate on the tiny built-in
model, and user mistakes exiting 2 with a one-line message and no traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import vlexport
from oracle import drop_precisions
from vlexport.cli import main
from vlexport.families.visual_bert.checkpoints import TINY_ID, TINY_LABELS


def run_cli(*args, env=None, timeout=300):
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vlexport", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def assert_user_error(proc_or_code, err: str, command: str, match: str):
    """Exit code 2 and one line on stderr: 'vlexport <command>: error: ...', no traceback."""
    code = proc_or_code if isinstance(proc_or_code, int) else proc_or_code.returncode
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"vlexport {command}: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]


@pytest.fixture(scope="module")
def built(tiny_artifacts):
    """`vlexport build --model tiny-visualbert-vqa --fp16 --int8 --out D`, run once per session (conftest.py):
    (D, (stdout, stderr)). Read-only: copy it to edit."""
    return tiny_artifacts[TINY_ID], tiny_artifacts.logs[TINY_ID]


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    path = tmp_path_factory.mktemp("npy") / "regions.npy"
    np.save(path, np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32))
    return path


# ----------------------------------------------------------------------------- commands

def test_build(built):
    out, (stdout, stderr) = built
    assert stdout.strip() == str(out)  # stdout: only the path, for scripts
    for stage in ("Loading tiny-visualbert-vqa", "Exporting 'model' to ONNX", "Simplifying", "mixed precision",
                  "Validating 'model' fp32 against PyTorch", "Validating 'model' fp16", "Quantizing 'model' to int8",
                  "TensorRT", f"Built {out}"):
        assert stage in stderr, stage
    assert "Traceback" not in stderr
    m = json.loads((out / "manifest.json").read_text())
    g = m["graphs"]["model"]
    assert m["complete"] and set(g["onnx"]) == {"fp32", "fp16", "int8"} and m["source"]["model"] == TINY_ID
    if "fp16" not in g["engines"]:  # the note keeps its brackets (printed as text, not rich markup)
        assert f"      {m['engine_skipped']}" in stderr.splitlines()
        if "package is not installed" in m["engine_skipped"]:
            assert "(pip install 'vlexport[gpu]')" in stderr
    assert g["validation"]["fp16"]["passed"] and g["validation"]["fp32"]["passed"]
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()


def test_export_writes_the_onnx_graph_only(tmp_path, capsys):
    out = tmp_path / "onnx-only"
    assert main(["export", "--model", TINY_ID, "--out", str(out), "--quiet", "--max-text-len", "24"]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == str(out) and cap.err == ""  # --quiet: no progress
    m = json.loads((out / "manifest.json").read_text())
    g = m["graphs"]["model"]
    assert set(g["onnx"]) == {"fp32"} and set(g["validation"]) == {"fp32"} and g["engines"] == {}
    assert "engine_skipped" not in m and not (out / "model.fp16.onnx").exists()
    assert m["axes"]["text"] == [2, 20, 24]
    with pytest.raises(SystemExit):  # `export` has no --fp16
        main(["export", "--model", TINY_ID, "--fp16", "--out", str(tmp_path / "x")])


def test_inspect_tables(built):
    out, _ = built
    proc = run_cli("inspect", out)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for needle in ("VisualBertForQuestionAnswering (question-answering)", "tiny-visualbert-vqa (tiny weights)",
                   "axis ranges", "input_ids", "('batch', 'visual', 16)", "logits",
                   "model.fp16.onnx", "validation", "fp32 vs reference", "fp16 vs fp32", "opset 18"):
        assert needle in text, needle
    m = json.loads((out / "manifest.json").read_text())
    for axis, (lo, opt, hi) in m["axes"].items():
        assert re.search(rf"{axis}\s*│\s*{lo}\s*│\s*{opt}\s*│\s*{hi}\s*│", text), axis
    cases = m["graphs"]["model"]["validation"]["fp16"]["cases"]
    assert re.search(rf"fp16 vs fp32\s*│\s*{cases}\s*│", text)


def test_inspect_json(built, capsys):
    out, _ = built
    assert main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((out / "manifest.json").read_text())


def test_predict_prints_labelled_answers(built, regions):
    out, _ = built
    questions = ["what is this?", "is it red?"]
    proc = run_cli("predict", out, "--text", *questions, "--visual-embeds", regions, "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"│\s*(\S+)\s*│\s*(-?\d+\.\d{4})\s*│", proc.stdout)
    assert len(rows) == 6, proc.stdout
    # the same answers, in the same order, as the Python API gives
    model = vlexport.load(out)
    visual = np.load(regions)
    expected = []
    for q in questions:
        logits = model(**model.processor(text=q, visual_embeds=visual)).logits
        expected += [(label, f"{score:.4f}") for label, score in model.top_answers(logits, 3)[0]]
    assert rows == expected
    assert all(label in TINY_LABELS for label, _ in rows)
    assert all(q in proc.stdout for q in questions)
    assert "onnxruntime fp32 on CPUExecutionProvider" in proc.stderr


def test_predict_fp16_and_random_regions(built, capsys):
    out, _ = built
    assert main(["predict", str(out), "--text", "what is this?", "--precision", "fp16", "--random-regions", "4"]) == 0
    cap = capsys.readouterr()
    assert "RANDOM regions" in cap.err and "fp16" in cap.err and "random regions" in cap.out
    assert sum(label in cap.out for label in TINY_LABELS) >= 3


def test_validate_passes(built):
    out, _ = built
    proc = run_cli("validate", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "onnxruntime:fp32 vs torch" in proc.stdout and "onnxruntime:fp16 vs onnxruntime:fp32" in proc.stdout
    assert proc.stdout.count("pass") >= 2 and "FAIL" not in proc.stdout


# ----------------------------------------------------------------------------- user errors: exit 2, one line

def _main_error(capsys, argv, command, match):
    code = main(argv)
    cap = capsys.readouterr()
    assert_user_error(code, cap.err, command, match)


def test_unknown_model_folder(tmp_path, capsys):
    _main_error(capsys, ["build", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--quiet"],
                "build", r"model folder '.*nope' does not exist")
    _main_error(capsys, ["build", "--model", "./not-here", "--out", str(tmp_path / "o"), "--quiet"],
                "build", "does not exist")
    (tmp_path / "empty").mkdir()
    _main_error(capsys, ["export", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--quiet"],
                "export", "has no config.json")
    assert not (tmp_path / "o").exists()


def test_unknown_task_and_bad_ranges(tmp_path, capsys):
    out = tmp_path / "o"
    _main_error(capsys, ["build", "--model", TINY_ID, "--task", "nonsense", "--out", str(out), "--quiet"],
                "build", r"unknown architecture or task 'nonsense'")
    _main_error(capsys, ["build", "--model", TINY_ID, "--max-text-len", "100000", "--out", str(out), "--quiet"],
                "build", r"100000.*max_position_embeddings is 64")
    _main_error(capsys, ["build", "--model", TINY_ID, "--max-choices", "3", "--out", str(out), "--quiet"],
                "build", r"--max-choices does not apply")
    _main_error(capsys, ["export", "--model", TINY_ID, "--min-text-len", "9", "--max-text-len", "4",
                         "--out", str(out), "--quiet"], "export", r"--text-len range: .*min <= opt <= max")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_hub_unreachable(tmp_path):
    """A hub id with the hub offline and an empty cache; also an unknown id with --random-weights."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub")}
    proc = run_cli("build", "--model", "uclanlp/visualbert-vqa", "--out", tmp_path / "o", "--quiet", env=env)
    assert_user_error(proc, proc.stderr, "build",
                      r"cannot get 'uclanlp/visualbert-vqa': HF_HUB_OFFLINE is set and it is not in the local cache")
    proc = run_cli("build", "--model", "uclanlp/no-such-model", "--random-weights", "--out", tmp_path / "o",
                   "--quiet", env=env)
    assert_user_error(proc, proc.stderr, "build", r"'uclanlp/no-such-model'")
    assert not (tmp_path / "o").exists()


def test_predict_errors(built, regions, tmp_path):
    out, _ = built
    proc = run_cli("predict", tmp_path / "missing", "--text", "what?")
    assert_user_error(proc, proc.stderr, "predict", r"artifact folder '.*missing' does not exist")
    proc = run_cli("predict", out, "--text", "what?", "--visual-embeds", tmp_path / "nope.npy")
    assert_user_error(proc, proc.stderr, "predict", r"--visual-embeds '.*nope\.npy' is not a readable \.npy file")
    (tmp_path / "bad.npy").write_text("not numpy")
    proc = run_cli("predict", out, "--text", "what?", "--visual-embeds", tmp_path / "bad.npy")
    assert_user_error(proc, proc.stderr, "predict", r"is not a readable \.npy file")
    long_text = " ".join(["red"] * 80)  # 82 tokens with [CLS]/[SEP]; the artifact takes up to 64
    proc = run_cli("predict", out, "--text", long_text, "--visual-embeds", regions)
    err = "\n".join(line for line in proc.stderr.splitlines()
                    if line.startswith("vlexport") or "Traceback" in line)  # the tokenizer's length warning aside
    assert_user_error(proc.returncode, err, "predict", r"'input_ids' has text=82, outside .*\[2, 64\]")
    no_int8 = tmp_path / "no-int8"  # a copy built as if without --int8
    shutil.copytree(out, no_int8)
    drop_precisions(no_int8, "model", ["int8"])
    proc = run_cli("predict", no_int8, "--text", "what?", "--visual-embeds", regions, "--precision", "int8")
    assert_user_error(proc, proc.stderr, "predict", r"no int8 graph")


def test_broken_artifact_errors(built, tmp_path, capsys):
    art = tmp_path / "art"
    shutil.copytree(built[0], art)
    (art / "manifest.json").write_text("{")
    _main_error(capsys, ["inspect", str(art)], "inspect", "is not valid JSON")
    _main_error(capsys, ["validate", str(art)], "validate", "is not valid JSON")
    shutil.rmtree(art)
    shutil.copytree(built[0], art)
    with open(art / "model.fp16.onnx", "r+b") as f:
        f.truncate(1000)
    # validate reports the damaged graph as a failed check (exit 1), with the reason
    proc = run_cli("validate", art, "--quiet")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "FAIL" in proc.stdout and "does not match its" in proc.stdout.replace("\n", " ")
    _main_error(capsys, ["predict", str(art), "--text", "hi", "--precision", "fp16"], "predict", "SHA-256")


# ----------------------------------------------------------------------------- full size

@pytest.mark.slow
def test_random_weights_full_size_build(tmp_path):
    """`--random-weights uclanlp/visualbert-vqa`: the real checkpoint's size (BERT-base, 3129 answers),
    offline. fp32 only and without the ORT fusion pass (tested on the tiny model: test_ort_fusion.py), to keep
    it under a minute on 2 cores; the weights go to external data."""
    out = tmp_path / "vqa"
    proc = run_cli("build", "--model", "uclanlp/visualbert-vqa", "--random-weights", "--out", out, "--quiet",
                   "--max-batch", "4", "--fuse", "never", env={"HF_HUB_OFFLINE": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(out)
    m = json.loads((out / "manifest.json").read_text())
    cfg = m["config"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["visual_embedding_dim"]) == (768, 12, 2048)
    assert m["graphs"]["model"]["outputs"][0]["dims"] == ["batch", 3129] and m["source"]["weights"] == "random"
    g = m["graphs"]["model"]
    assert g["onnx"]["fp32"]["data"] == ["model.onnx.data"] and g["onnx"]["fp32"]["bytes"] > 400e6
    assert "model.onnx.data" in m["files"]
    assert g["validation"]["fp32"]["passed"] and g["validation"]["fp32"]["worst"]["logits"]["max_abs_err"] <= 1e-4
    model = vlexport.load(out)
    enc = model.processor(text=["what is on the table?"],
                          visual_embeds=np.random.default_rng(0).standard_normal((10, 2048)).astype(np.float32))
    logits = model(**enc).logits
    assert logits.shape == (1, 3129) and np.isfinite(logits).all()
    assert model.top_answers(logits, 1)[0][0][0].startswith("LABEL_")
