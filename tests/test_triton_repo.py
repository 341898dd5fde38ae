"""`vlexport triton-repo`: every config.pbtxt parses as Triton's own ModelConfig (tritonclient ships
its protobuf), says what the artifact says (dims, types, batch range, batching, instances), and the
version folders hold what Triton's backends load: the ONNX graph (external data beside it) for
onnxruntime_onnx, and model.py + a hash-checked copy of the artifact for the Python-backend
endpoints, whose body (python_model.EndpointModel) runs here without Triton."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

import vlexport
from serve_kit import TINY
from vlexport.artifact import Artifact
from vlexport.cli import main
from vlexport.errors import ArtifactError, ConfigError
from vlexport.serving import repository
from vlexport.serving.endpoints import endpoints_for
from vlexport.serving.pbtxt import dumps

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient (test extra) ships Triton's ModelConfig protobuf")
from google.protobuf import json_format, text_format  # noqa: E402  (tritonclient depends on protobuf)


def parse(path) -> dict:
    msg = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


@pytest.fixture(scope="module")
def tiny(tiny_artifacts):
    return tiny_artifacts


@pytest.mark.parametrize("model_id", TINY)
def test_every_config_parses_and_matches_the_artifact(tiny, tmp_path, model_id):
    art = Artifact(tiny[model_id])
    models = repository.write(art, tmp_path / "repo", instances=2, delay_us=700)
    written = sorted(p.parent.name for p in (tmp_path / "repo").glob("*/config.pbtxt"))
    assert written == sorted(m["name"] for m in models)
    summary = json.loads((tmp_path / "repo" / repository.MARKER).read_text())
    assert [m["name"] for m in summary["models"]] == [m["name"] for m in models]
    graphs = set(art.graph_names)
    seen_graphs = set()
    for m in models:
        cfg = parse(tmp_path / "repo" / m["name"] / "config.pbtxt")
        assert cfg["name"] == m["name"]
        assert cfg["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
        version = tmp_path / "repo" / m["name"] / "1"
        ep = next(e for e in endpoints_for(art) if e.name == m["endpoint"])
        assert int(cfg["max_batch_size"]) == ep.max_batch
        if ep.max_batch > 1:
            assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": "700"}
        assert [i["name"] for i in cfg["input"]] == [t.name for t in ep.inputs]
        assert [o["name"] for o in cfg["output"]] == [t.name for t in ep.outputs]
        if m["kind"] == "graph":
            graph = ep.extra["graph"]
            seen_graphs.add(graph)
            assert cfg["platform"] == "onnxruntime_onnx"
            for spec, tin in zip(art.inputs(graph), cfg["input"]):
                want = [d if isinstance(d, int) else -1 for d in spec.dims[1:]]
                assert [int(d) for d in tin["dims"]] == want
                assert tin["data_type"] == {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}[spec.dtype]
                assert not tin.get("optional")  # ORT's backend feeds every declared input
            import onnxruntime as ort

            sess = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
            assert [i.name for i in sess.get_inputs()] == [s.name for s in art.inputs(graph)]
        else:
            assert cfg["backend"] == "python"
            params = {k: v["string_value"] for k, v in cfg["parameters"].items()}
            assert params["endpoint"] == m["endpoint"] and params["artifact"] == "artifact"
            assert (version / "model.py").is_file()
            copy = Artifact(version / "artifact")
            assert not copy.verify_all()["bad"]
    assert seen_graphs == graphs


def test_python_endpoint_body_runs_the_copied_artifact(tiny, tmp_path):
    """What Triton's Python backend runs (EndpointModel) on the repository's own copy gives what
    vlexport.load gives, and a bad request gets its own error."""
    from vlexport.serving.python_model import EndpointModel

    art = Artifact(tiny["tiny-visualbert-vqa"])
    repository.write(art, tmp_path / "repo", mode="deploy", platform="onnx")
    eps = [e for e in endpoints_for(art) if e.kind != "graph"]
    model = vlexport.load(tiny["tiny-visualbert-vqa"])
    rng = np.random.default_rng(0)
    feeds = model.prepare({"input_ids": rng.integers(1, 100, (2, 7)), "attention_mask": np.ones((2, 7), np.int64),
                           "visual_embeds": rng.standard_normal((2, 5, 16)).astype(np.float32)})
    want = model(**feeds).logits
    # the graph endpoint's body, pointed at the copied artifact of the first python model
    python_models = [p for p in (tmp_path / "repo").iterdir() if (p / "1" / "model.py").is_file()]
    assert len(python_models) == len(eps)
    body = EndpointModel({"artifact": str(tiny["tiny-visualbert-vqa"]), "endpoint": "model"}, tmp_path)
    bad = dict(feeds, input_ids=np.full((1, 7), 10**6, np.int64))
    bad = {k: v[:1] for k, v in bad.items()}
    good, err = body.execute([feeds, bad])
    np.testing.assert_allclose(good["logits"], want, atol=1e-5)
    assert isinstance(err, vlexport.errors.InputError) and "input_ids" in body.message(err)
    body.close()


def test_no_batching_and_max_batch(tiny, tmp_path):
    art = Artifact(tiny["tiny-visualbert-vqa"])
    repository.write(art, tmp_path / "repo", delay_us=None, max_batch=4)
    cfg = parse(tmp_path / "repo" / "tiny-visualbert-vqa" / "config.pbtxt")
    assert "dynamic_batching" not in cfg and int(cfg["max_batch_size"]) == 4


def test_tensorrt_plan_config_parses(tiny):
    """A tensorrt_plan model (written where the artifact has an engine; none can be built here) is a
    valid ModelConfig with the GPU instance group on the engine's profile."""
    art = Artifact(tiny["tiny-visualbert-vqa"])
    (ep,) = [e for e in endpoints_for(art) if e.kind == "graph"]
    cfg = repository.model_config("m", ep, platform="tensorrt_plan", gpu=True)
    msg = text_format.Parse(dumps(cfg), model_config_pb2.ModelConfig())
    assert msg.platform == "tensorrt_plan" and msg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert list(msg.instance_group[0].profile) == ["0"]
    with pytest.raises(ArtifactError, match="no TensorRT engine"):
        repository.plan(art, mode="deploy", platform="tensorrt")


@given(st.text(min_size=1, max_size=40))
def test_strings_round_trip_through_protobuf_text(text):
    """Any name or parameter (quotes, backslashes, control characters, non-ASCII) parses back as written."""
    msg = text_format.Parse(dumps({"name": text, "parameters": [{"key": text, "value": {"string_value": text}}]}),
                            model_config_pb2.ModelConfig())
    assert msg.name == text and msg.parameters[text].string_value == text


def test_refuses_folders_it_did_not_write(tiny, tmp_path):
    art = Artifact(tiny["tiny-visualbert-vqa"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not a model repository vlexport wrote"):
        repository.write(art, mine)
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    repo = tmp_path / "repo"
    repository.write(art, repo)
    first = (repo / repository.MARKER).stat().st_mtime_ns
    repository.write(art, repo, delay_us=None)  # its own repository: replaced
    assert (repo / repository.MARKER).stat().st_mtime_ns >= first
    assert "dynamic_batching" not in parse(repo / "tiny-visualbert-vqa" / "config.pbtxt")
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_failed_write_leaves_nothing(tiny, tmp_path):
    """A corrupted artifact file stops the write before anything is published at --out."""
    import shutil

    art_dir = shutil.copytree(tiny["tiny-visualbert-vqa"], tmp_path / "art")
    onnx = art_dir / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="SHA-256"):
        repository.write(Artifact(art_dir), tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo")]


def test_cli(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich's table then shows whole names
    path = str(tiny["tiny-dual-encoder"])
    assert main(["triton-repo", path, "--list"]) == 0
    assert "tiny-dual-encoder_vision" in capsys.readouterr().out
    assert main(["triton-repo", path]) == 2
    assert "--out REPO is required" in capsys.readouterr().err
    assert main(["triton-repo", path, "--out", str(tmp_path / "r"), "--endpoints", "nope"]) == 2
    assert "no endpoint named ['nope']" in capsys.readouterr().err
    assert main(["triton-repo", path, "--out", str(tmp_path / "r"), "--endpoints", "text", "--instances", "0"]) == 2
    assert "--instances must be >= 1" in capsys.readouterr().err
    assert main(["triton-repo", path, "--out", str(tmp_path / "r"), "--endpoints", "text"]) == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["tiny-dual-encoder_text", repository.MARKER]
    with pytest.raises(ConfigError):
        repository.plan(Artifact(path), mode="elsewhere")


def test_serve_without_the_serve_extra_says_what_to_install(tiny, capsys):
    import importlib.util

    if importlib.util.find_spec("pytriton") is not None:
        pytest.skip("PyTriton is installed here: the running-server tests (tests/test_serve.py) cover serve")
    assert main(["serve", str(tiny["tiny-visualbert-vqa"])]) == 2
    assert "pip install 'vlexport[serve]'" in capsys.readouterr().err


def test_python_backend_models_of_a_written_repository_run_in_triton(tiny, tmp_path):
    """The deploy-mode repository's Python-backend model (model.py + its own artifact copy, found
    relative to its version folder) loaded by a real tritonserver (PyTriton's, which has only the
    Python backend: the repository is written with the processor endpoint alone)."""
    from serve_kit import free_ports, infer, serve_python

    py, why = serve_python()
    if py is None:
        pytest.skip(why)
    import subprocess

    http = pytest.importorskip("tritonclient.http")
    art = tiny["tiny-dual-encoder"]
    repo = tmp_path / "repo"
    assert main(["triton-repo", str(art), "--out", str(repo), "--endpoints", "text_features"]) == 0
    h, g, m = free_ports(3)
    script = ("import sys, time; from vlexport.serving.server import TritonProcess\n"
              f"p = TritonProcess([], repository_dir={str(repo)!r}, http_port={h}, grpc_port={g}, metrics_port={m})\n"
              "p.start(); print('ready', flush=True); sys.stdin.read(); p.stop(); p.cleanup()\n")
    proc = subprocess.Popen([py, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()[-3000:]
        client = http.InferenceServerClient(f"127.0.0.1:{h}")
        texts = np.array([[b"a photo of a cat"], [b"two dogs"]], dtype=object)
        got = infer(client, "tiny-dual-encoder_text_features", {"text": texts}, ["text_embeds"])["text_embeds"]
        client.close()
        model = vlexport.load(art)
        want = model.get_text_features(**model.processor(text=["a photo of a cat", "two dogs"])).pooler_output
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    finally:
        proc.stdin.close()
        proc.wait(60)
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
