"""The command line for every registered family's tiny models (picked up from the registry):
build -> inspect (tables, --json, --verify) -> validate -> export, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vlexport import families

TINY_IDS = sorted(i for f in families.all_families() for i in f.tiny)


def run_cli(*args, timeout=300):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "vlexport", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.parametrize("model_id", TINY_IDS)
def test_build_inspect_verify_validate(model_id, tiny_artifacts, tmp_path):
    # the build: `vlexport build --model ID --fp16 --int8 --out OUT`, run once per session (conftest.py)
    out = tiny_artifacts[model_id]
    stdout, stderr = tiny_artifacts.logs[model_id]
    assert stdout.strip() == str(out) and "Traceback" not in stderr
    m = json.loads((out / "manifest.json").read_text())
    for g in m["graphs"]:
        assert f"Exporting '{g}' to ONNX" in stderr and f"Validating '{g}' fp16" in stderr

    proc = run_cli("inspect", out)
    assert proc.returncode == 0, proc.stderr
    for needle in (m["architecture"], m["family"], "axis ranges", *m["graphs"]):
        assert needle in proc.stdout, needle
    proc = run_cli("inspect", out, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == m
    proc = run_cli("inspect", out, "--verify")
    assert proc.returncode == 0 and f"{len(m['files'])} file(s) match" in proc.stderr, proc.stderr

    proc = run_cli("validate", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "onnxruntime:fp32 vs torch" in proc.stdout and "FAIL" not in proc.stdout
    for prec in ("fp16", "int8"):
        if prec == "int8" and not any("int8" in g["onnx"] for g in m["graphs"].values()):
            continue  # every graph refused int8 (a detector), saying why at build time
        assert f"onnxruntime:{prec} vs onnxruntime:fp32" in proc.stdout

    proc = run_cli("export", "--model", model_id, "--out", tmp_path / "onnx-only", "--quiet")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    m2 = json.loads((tmp_path / "onnx-only" / "manifest.json").read_text())
    assert all(set(g["onnx"]) == {"fp32"} for g in m2["graphs"].values())
