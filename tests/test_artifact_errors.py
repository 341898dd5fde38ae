"""Broken, foreign and half-written artifact folders give an ArtifactError that says what is wrong
(never a crash inside ONNX Runtime); builds are atomic: a failed build leaves nothing behind and
does not touch the artifact it was meant to replace.

The first part is generic: it runs on every registered family's tiny models (`vlexport.families`)
and reads what to damage from the artifact's own manifest. The rest uses the VisualBERT kit."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vlexport
from oracle import drop_precisions
from visual_bert_kit import QA, axes_for, build_small, make_feeds
from vlexport import families
from vlexport.artifact import Artifact
from vlexport.cli import main
from vlexport.errors import ArtifactError, ConfigError, ValidationError
from vlexport.export.build import build
from vlexport.fsutil import sha256
from vlexport.families.visual_bert.checkpoints import TINY_ID
from vlexport.specs import AxisRange


@pytest.fixture(scope="module")
def good(tiny_builds):
    """A complete tiny VisualBERT artifact (fp32, fp16 and int8 graphs). Tests edit copies of it."""
    return tiny_builds(TINY_ID)


@pytest.fixture
def art(good, tmp_path):
    dest = tmp_path / "art"
    shutil.copytree(good, dest)
    return dest


def _edit_manifest(folder, **changes):
    mf = folder / "manifest.json"
    m = json.loads(mf.read_text())
    m.update(changes)
    mf.write_text(json.dumps(m))


def _run_once(folder, **kw):
    model = vlexport.load(folder, backend="onnxruntime", **kw)
    enc = model.processor(text=["what is this?"], visual_embeds=np.ones((3, 16), np.float32))
    return model(**enc).logits



# ============================================================================= every family's tiny models

TINY_IDS = sorted(i for f in families.all_families() for i in f.tiny)


@pytest.fixture(scope="module")
def tiny_builds(tiny_artifacts):
    """model id -> a complete artifact of that built-in tiny model (the session's shared build, read-only)."""
    return tiny_artifacts.__getitem__


@pytest.fixture(params=TINY_IDS)
def any_art(request, tiny_builds, tmp_path):
    """A private copy of a tiny artifact, one per family tiny id (tests edit it)."""
    dest = tmp_path / "art"
    shutil.copytree(tiny_builds(request.param), dest)
    return dest


def _manifest(folder) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def _write_manifest(folder, m):
    (Path(folder) / "manifest.json").write_text(json.dumps(m))


def _graph0(m) -> tuple[str, dict]:
    """(name, fp32 entry) of the artifact's first graph."""
    name = next(iter(m["graphs"]))
    return name, m["graphs"][name]["onnx"]["fp32"]


def _rehash(folder, m, rel):
    m["files"][rel] = {"sha256": sha256(Path(folder) / rel), "bytes": (Path(folder) / rel).stat().st_size}


def _load(folder, **kw):
    return vlexport.load(folder, backend="onnxruntime", **kw)


def _load_reading(folder, rel: str, manifest: dict):
    """Load the artifact at the precision whose graphs read the file `rel` (loading checks the files it
    uses: an int8 graph's file is read, and checked, when int8 is loaded)."""
    for g in manifest["graphs"].values():
        for prec, entry in g["onnx"].items():
            if rel == entry["file"] or rel in entry.get("data", []):
                return _load(folder, precision=prec)
    return _load(folder)


def _run(model) -> dict:
    """Every graph of the artifact on its smallest inputs, through the pipeline's generic entry."""
    spec = families.describe_artifact(model.artifact)
    out = {}
    for graph in spec.graphs:
        sizes = {k: r.min for k, r in spec.axes_for(graph).items()}
        feeds = graph.make_inputs(sizes, np.random.default_rng(0), pad=False)
        out.update(model.run_graph(graph.name, model.prepare(feeds, graph.name)))
    return out


def test_files_outside_the_folder_are_refused(any_art, tmp_path):
    """`files` naming ../x.onnx, an absolute path, or a listed file that is a symlink leaving the folder."""
    m = _manifest(any_art)
    gname, entry = _graph0(m)
    main_rel = entry["file"]
    outside = tmp_path / "x.onnx"
    shutil.copy(any_art / main_rel, outside)  # the same bytes, so only the location is wrong
    for rel in ("../x.onnx", str(outside)):
        bad = json.loads(json.dumps(m))
        bad["files"][rel] = bad["files"].pop(main_rel)
        bad["graphs"][gname]["onnx"]["fp32"]["file"] = rel
        _write_manifest(any_art, bad)
        with pytest.raises(ArtifactError, match=rf"names the file '{re.escape(rel)}', which is outside its folder"):
            _load(any_art)
    _write_manifest(any_art, m)
    # a listed file that is a symlink out of the folder (relative or absolute target)
    for target in (os.path.relpath(outside, any_art), str(outside)):
        (any_art / main_rel).unlink()
        os.symlink(target, any_art / main_rel)
        with pytest.raises(ArtifactError, match=rf"'{re.escape(main_rel)}' pointing outside its folder"):
            _load(any_art)
    # a listed file below a symlinked folder that leaves
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(outside, tmp_path / "elsewhere" / "x.onnx")
    os.symlink(tmp_path / "elsewhere", any_art / "sub")
    bad = json.loads(json.dumps(m))
    bad["files"]["sub/x.onnx"] = bad["files"].pop(main_rel)
    bad["graphs"][gname]["onnx"]["fp32"]["file"] = "sub/x.onnx"
    _write_manifest(any_art, bad)
    with pytest.raises(ArtifactError, match="pointing outside its folder"):
        _load(any_art)


def test_graph_files_must_be_listed(any_art):
    m = _manifest(any_art)
    gname, entry = _graph0(m)
    bad = json.loads(json.dumps(m))
    del bad["files"][entry["file"]]
    _write_manifest(any_art, bad)
    with pytest.raises(ArtifactError, match=rf"names '{re.escape(entry['file'])}', which is not among the hashed"):
        _load(any_art)
    # malformed entries are a clear error too (a list where a name belongs was a TypeError)
    for key, value in (("file", [entry["file"]]), ("file", None), ("data", entry["file"]), ("data", ["nope.data"])):
        bad = json.loads(json.dumps(m))
        bad["graphs"][gname]["onnx"]["fp32"][key] = value
        _write_manifest(any_art, bad)
        with pytest.raises(ArtifactError, match="manifest.json is not a valid vlexport manifest"):
            _load(any_art)
    bad = json.loads(json.dumps(m))
    bad["graphs"][gname]["onnx"] = [["fp32", entry]]
    _write_manifest(any_art, bad)
    with pytest.raises(ArtifactError, match="must map precisions to files"):
        _load(any_art)


def _externalize(model_path: Path, location: str, write_to: Path | None):
    """Move the graph's largest initializer to external data at `location` (bytes written to write_to)."""
    import onnx

    model = onnx.load(str(model_path))
    t = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    raw = t.raw_data
    if write_to is not None:
        write_to.write_bytes(raw)
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        e = t.external_data.add()
        e.key, e.value = k, v
    onnx.save(model, str(model_path))


def test_external_data_must_be_the_graphs_own_listed_files(any_art, tmp_path):
    good = _manifest(any_art)
    gname, entry = _graph0(good)
    main_rel = entry["file"]
    pristine = (any_art / main_rel).read_bytes()
    expected = _run(_load(any_art))
    cases = [
        ("stolen.bin", any_art / "stolen.bin", True),  # in the folder and hashed, but not this graph's data
        ("stolen.bin", any_art / "stolen.bin", False),  # not listed at all
        (str(tmp_path / "abs.bin"), tmp_path / "abs.bin", False),  # outside the folder
        ("../abs.bin", tmp_path / "abs.bin", False),
        ("config.json", None, False),  # another listed file of the artifact
    ]
    for location, write_to, listed in cases:
        (any_art / main_rel).write_bytes(pristine)
        _externalize(any_art / main_rel, location, write_to)
        m = json.loads(json.dumps(good))
        _rehash(any_art, m, main_rel)
        if listed:
            _rehash(any_art, m, "stolen.bin")
        _write_manifest(any_art, m)
        with pytest.raises(ArtifactError, match=rf"takes tensor data from '{re.escape(location)}', which is not one "
                                                rf"of its listed data files"):
            _load(any_art)
        if write_to is not None and write_to.parent == any_art:
            write_to.unlink()
    # the same data, listed as the graph's own data file, loads and answers as before
    (any_art / main_rel).write_bytes(pristine)
    _externalize(any_art / main_rel, f"{main_rel}.data", any_art / f"{main_rel}.data")
    m = json.loads(json.dumps(good))
    _rehash(any_art, m, main_rel)
    _rehash(any_art, m, f"{main_rel}.data")
    m["graphs"][gname]["onnx"]["fp32"]["data"] = [f"{main_rel}.data"]
    _write_manifest(any_art, m)
    got = _run(_load(any_art))
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


def _function_with_external_constant(location: str):
    """A local function whose body holds a Constant with external data (ONNX Runtime reads it)."""
    from onnx import TensorProto, helper, numpy_helper

    val = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")
    val.ClearField("raw_data")
    val.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = val.external_data.add()
        e.key, e.value = k, v
    return helper.make_function("vlexport.test", "AddC", ["x"], ["y"],
                                [helper.make_node("Constant", [], ["c"], value=val),
                                 helper.make_node("Add", ["x", "c"], ["y"])], [helper.make_opsetid("", 18)])


def test_external_data_inside_a_function_body_is_seen(any_art, tmp_path):
    """ONNX Runtime reads external data referenced from a local function's Constant node: the
    reference check must look there too, not only at the main graph."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    # first, that it matters: ORT really reads a function body's external data
    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    g = helper.make_graph([helper.make_node("AddC", ["X"], ["Y"], domain="vlexport.test")], "g",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])])
    standalone = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18),
                                                     helper.make_opsetid("vlexport.test", 1)],
                                   functions=[_function_with_external_constant("secret.bin")])
    standalone.ir_version = 9
    onnx.save(standalone, str(tmp_path / "f.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"X": np.zeros(4, np.float32)})[0], [0, 1, 2, 3])

    from vlexport.onnx_refs import external_data_locations

    assert external_data_locations(tmp_path / "f.onnx") == ["secret.bin"]
    # the artifact's graph with such a function added is refused
    m = _manifest(any_art)
    _, entry = _graph0(m)
    model = onnx.load(str(any_art / entry["file"]))
    model.functions.append(_function_with_external_constant(str(tmp_path / "secret.bin")))
    onnx.save(model, str(any_art / entry["file"]))
    _rehash(any_art, m, entry["file"])
    _write_manifest(any_art, m)
    with pytest.raises(ArtifactError, match="takes tensor data from .*secret.bin'"):
        _load(any_art)


@pytest.mark.parametrize("damage", ["truncated", "altered", "removed"])
def test_every_damaged_file_fails_at_load_naming_it(any_art, damage):
    """Graphs, config.json, the processor's files (tokenizer.json / vocab.txt / ...): whatever the
    manifest lists, damaged, gives an ArtifactError naming it when the artifact is loaded."""
    manifest = _manifest(any_art)
    listed = sorted(manifest["files"])
    assert "config.json" in listed
    for rel in listed:
        f = any_art / rel
        data = f.read_bytes()
        if damage == "truncated":
            f.write_bytes(data[: len(data) // 2])
        elif damage == "altered":
            f.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))  # same size, one bit
        else:
            f.unlink()
        why = "is missing" if damage == "removed" else "does not match its recorded SHA-256"
        with pytest.raises(ArtifactError, match=rf"{re.escape(rel)}' {why}"):
            _load_reading(any_art, rel, manifest)  # at load, not at the first call
        f.write_bytes(data)
    _run(_load(any_art))  # all restored: loads and runs


def test_manifest_hash_mismatch_names_the_file(any_art):
    m = _manifest(any_art)
    for rel in sorted(m["files"]):
        bad = json.loads(json.dumps(m))
        bad["files"][rel]["sha256"] = "0" * 64
        _write_manifest(any_art, bad)
        with pytest.raises(ArtifactError, match=rf"{re.escape(rel)}' does not match its recorded SHA-256"):
            _load_reading(any_art, rel, m)


def test_other_format_versions(any_art):
    m = _manifest(any_art)
    _write_manifest(any_art, {**m, "format_version": 3, "vlexport_version": "9.0.0"})
    with pytest.raises(ArtifactError, match=r"manifest.json has format_version 3; .*newer format "
                                            r"\(3, vlexport 9\.0\.0\): upgrade vlexport"):
        _load(any_art)
    _write_manifest(any_art, {**m, "format_version": 1, "vlexport_version": "0.0.1"})
    with pytest.raises(ArtifactError, match=r"manifest.json has format_version 1; .*older format .*rebuild it with "
                                            r"this version"):
        _load(any_art)
    for value in ("2", None, 2.5):
        _write_manifest(any_art, {**m, "format_version": value})
        with pytest.raises(ArtifactError, match="format_version"):
            _load(any_art)


BAD_AXES = [[5, 2, 1], ["a", "b", "c"], [-1, 2, 3], [0, 1, 2], [1, 2], [1, 2, 3, 0], [1.5, 2, 3], [True, 2, 3],
            "1,2,3", None, {"min": 1}]


@pytest.mark.parametrize("value", BAD_AXES, ids=[json.dumps(v) for v in BAD_AXES])
def test_bad_axis_values_fail_at_load(any_art, value):
    m = _manifest(any_art)
    axis = next(iter(m["axes"]))
    m["axes"][axis] = value
    _write_manifest(any_art, m)
    with pytest.raises(ArtifactError, match=r"manifest.json is not a valid vlexport manifest: axis ranges"):
        _load(any_art)
    with pytest.raises(ArtifactError, match="axis ranges"):
        Artifact(any_art, verify=False)  # `vlexport inspect` too


def test_inspect_verify_checks_every_hash(any_art, capsys):
    """`vlexport inspect --verify`: 0 on a good artifact; 1 (naming it) for any one altered file, or a
    file the manifest does not list."""
    listed = sorted(_manifest(any_art)["files"])
    proc = subprocess.run([sys.executable, "-m", "vlexport", "inspect", str(any_art), "--verify"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and f"verify: {len(listed)} file(s) match their SHA-256" in proc.stderr, proc.stderr
    for rel in listed:
        f = any_art / rel
        data = f.read_bytes()
        f.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))
        assert main(["inspect", str(any_art), "--verify"]) == 1
        err = capsys.readouterr().err
        assert f"FAIL {rel}: SHA-256 mismatch" in err and "1 problem(s)" in err, err
        f.write_bytes(data)
    (any_art / "dropped-in.onnx").write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "vlexport", "inspect", str(any_art), "--verify"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "FAIL dropped-in.onnx: in the folder but not in the manifest" in proc.stderr
    assert "Traceback" not in proc.stderr


# ============================================================================= VisualBERT's tiny model

def test_the_copy_is_good(art):
    assert _run_once(art).shape == (1, 16)


def test_missing_folder(tmp_path):
    with pytest.raises(ArtifactError, match=r"'.*nope' does not exist \(build it with `vlexport build`\)"):
        vlexport.load(tmp_path / "nope")


def test_folder_without_manifest(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="has no manifest.json: not a vlexport artifact"):
        vlexport.load(tmp_path)


def test_manifest_is_not_json(art):
    (art / "manifest.json").write_text('{"format_version": 1, "complete": tr')
    with pytest.raises(ArtifactError, match="is not valid JSON.*rebuild it"):
        vlexport.load(art)


def test_other_format_version(art):
    _edit_manifest(art, format_version=vlexport.ARTIFACT_FORMAT_VERSION + 1, vlexport_version="9.0.0")
    with pytest.raises(ArtifactError, match=rf"format_version {vlexport.ARTIFACT_FORMAT_VERSION + 1}; this vlexport .* "
                                            rf"reads format {vlexport.ARTIFACT_FORMAT_VERSION}.*newer format.*9\.0\.0.*upgrade"):
        vlexport.load(art)
    _edit_manifest(art, format_version=None)
    with pytest.raises(ArtifactError, match="format_version None.*rebuild"):
        Artifact(art)


def test_incomplete_build(art):
    _edit_manifest(art, complete=False)
    with pytest.raises(ArtifactError, match="not marked complete"):
        vlexport.load(art)


def test_truncated_graph(art):
    graph = art / "model.onnx"
    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"model\.onnx' does not match its recorded SHA-256.*rebuild"):
        vlexport.load(art)
    # without hash checks, ONNX Runtime's own failure becomes an ArtifactError too
    with pytest.raises(ArtifactError, match=r"model\.onnx' is not a readable ONNX graph.*rebuild"):
        vlexport.load(art, verify=False)


def test_modified_graph(art, good):
    graph = art / "model.onnx"
    data = bytearray(graph.read_bytes())
    # change one weight byte (the tail of the file is initializer data), same size
    data[-100] ^= 0xFF
    graph.write_bytes(bytes(data))
    assert graph.stat().st_size == (good / "model.onnx").stat().st_size
    with pytest.raises(ArtifactError, match="does not match its recorded SHA-256"):
        vlexport.load(art)
    with pytest.raises(ArtifactError, match="SHA-256"):
        Artifact(art).onnx_file("model", "fp32")


def test_missing_graph_file(art):
    (art / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"model\.onnx' is missing; rebuild"):
        vlexport.load(art)
    with pytest.raises(ArtifactError, match="is missing"):
        vlexport.load(art, verify=False)


def test_precision_that_was_not_built(art):
    drop_precisions(art, "model", ["fp16", "int8"])  # as if built fp32 only
    with pytest.raises(ArtifactError, match=r"no fp16 graph for 'model'; it has \['fp32'\]"):
        vlexport.load(art, precision="fp16")
    with pytest.raises(ArtifactError, match="no int8 graph"):
        vlexport.load(art, backend="onnxruntime", precision="int8")
    assert Artifact(art).precisions("model") == ["fp32"]


def test_artifact_errors_are_os_errors(tmp_path):
    """ArtifactError subclasses OSError, so existing `except OSError` handlers keep working."""
    with pytest.raises(OSError):
        vlexport.load(tmp_path / "missing")


# ----------------------------------------------------------------------------- atomic builds

def _leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


@pytest.fixture(scope="module")
def overflowing(hf_checkpoint, tmp_path_factory):
    """A real checkpoint whose visual projection is scaled by 1e5: fine in fp32 (LayerNorm follows), but
    its activations overflow fp16 (max 65504), so the build fails at fp16 validation, after the fp32
    graph was exported and validated into the staging folder."""
    hf = hf_checkpoint(QA)
    folder = tmp_path_factory.mktemp("overflow")
    shutil.copytree(hf.folder, folder, dirs_exist_ok=True)
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    key = next(k for k in state if k.endswith("visual_projection.weight"))
    state[key] = state[key] * 1e5
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_build_failing_at_fp16_validation_leaves_nothing(overflowing, tmp_path):
    out = tmp_path / "engines" / "qa"
    with pytest.raises(ValidationError, match="fp16 'model' graph fails validation against fp32: NaN/inf"):
        build_small(overflowing, out, QA)
    assert not out.exists()
    assert list((tmp_path / "engines").iterdir()) == []  # no .qa.partial-* folder
    # the same model builds without fp16: the failure was the fp16 graph's, not the checkpoint's
    build_small(overflowing, out, QA, fp16=False)
    assert vlexport.load(out).artifact.precisions("model") == ["fp32"]


def test_build_failing_at_export_leaves_nothing(tmp_path):
    out = tmp_path / "engines" / "tiny"
    with pytest.raises(ConfigError, match="min == max"):
        build(TINY_ID, out, progress=False, axes={"text": AxisRange(8, 8, 8)})
    assert not out.exists() and list((tmp_path / "engines").iterdir()) == []


def test_failed_rebuild_keeps_the_old_artifact(overflowing, hf_checkpoint, tmp_path):
    hf = hf_checkpoint(QA)
    out = tmp_path / "qa"
    build_small(hf.folder, out, QA)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    feeds = make_feeds(QA, hf.config, dict(batch=2, text=5, visual=3), np.random.default_rng(0))
    logits = vlexport.load(out)(**feeds).logits
    with pytest.raises(ValidationError):
        build_small(overflowing, out, QA)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    assert after == before
    assert _leftovers(tmp_path, "qa") == []
    np.testing.assert_array_equal(vlexport.load(out)(**feeds).logits, logits)
    with torch.no_grad():
        hf_logits = hf.model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    np.testing.assert_allclose(logits, hf_logits, atol=1e-4)


def test_successful_rebuild_replaces_the_artifact(hf_checkpoint, tmp_path):
    """A rebuild with other ranges replaces the folder as a whole (no stale files) and leaves no .old-*."""
    hf = hf_checkpoint(QA)
    out = tmp_path / "qa"
    build_small(hf.folder, out, QA)
    assert (out / "model.fp16.onnx").exists()
    build(str(hf.folder), out, progress=False, onnx_only=True,
          axes={**axes_for(QA), "text": AxisRange(2, 4, 12)})
    m = json.loads((out / "manifest.json").read_text())
    assert m["axes"]["text"] == [2, 4, 12] and set(m["graphs"]["model"]["onnx"]) == {"fp32"}
    assert not (out / "model.fp16.onnx").exists()
    assert _leftovers(tmp_path, "qa") == []
