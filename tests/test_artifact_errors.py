"""Broken, foreign and half-written artifact folders give an ArtifactError that says what is wrong
(never a crash inside ONNX Runtime); builds are atomic: a failed build leaves nothing behind and
does not touch the artifact it was meant to replace."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

import vlexport
from visual_bert_kit import QA, axes_for, build_small, make_feeds
from vlexport.artifact import Artifact
from vlexport.errors import ArtifactError, ConfigError, ValidationError
from vlexport.export.build import build
from vlexport.families.visual_bert.checkpoints import TINY_ID
from vlexport.specs import AxisRange


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A complete tiny artifact (fp32 graph only). Tests edit copies of it."""
    out = tmp_path_factory.mktemp("good") / "tiny"
    build(TINY_ID, out, onnx_only=True, progress=False)
    return out


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
