"""Checkpoint loading (file layouts, key names, strict checks, unsafe pickles) and the hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import vlexport.models as vm
from oracle import (assert_same_outputs, run_hf, run_ours, write_checkpoint,
                       write_sharded_bin)
from vlexport.errors import CheckpointError, HubError, UnknownModelError
from vlexport.families.visual_bert.describe import describe
from vlexport import reference as factory
from vlexport.families.visual_bert.config import VisualBertConfig
from vlexport.families.visual_bert.checkpoints import PUBLIC_CHECKPOINTS, TINY_ID

QA, PT, BASE = "VisualBertForQuestionAnswering", "VisualBertForPreTraining", "VisualBertModel"
ATOL = 1e-5


def _feeds(arch, config: dict, seed=0, **sizes):
    sizes = {"batch": 2, "text": 7, "visual": 5, **sizes}
    return describe(arch, VisualBertConfig.from_dict(config)).graphs[0].make_inputs(sizes, np.random.default_rng(seed), pad=True)


def _assert_matches(hf, folder, arch=None, what=""):
    """Load `folder` with vlexport and compare with the HF model on padded inputs."""
    arch = arch or hf.config["architectures"][0]
    loaded = factory.from_pretrained(str(folder), architecture=arch)
    feeds = _feeds(loaded.architecture, hf.config)
    assert_same_outputs(run_ours(loaded.model, feeds), run_hf(hf.model, feeds), ATOL, what or str(folder))
    return loaded


def _state(hf):
    return {k: v.detach().clone() for k, v in hf.model.state_dict().items()}


def _ckpt_keys(folder):
    from safetensors import safe_open

    with safe_open(str(Path(folder) / "model.safetensors"), "pt") as f:
        return set(f.keys())


# ----------------------------------------------------------------------------- file layouts

@pytest.mark.parametrize("arch", [QA, PT])
def test_sharded_safetensors(arch, hf_checkpoint, tmp_path):
    hf = hf_checkpoint(arch)
    hf.model.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").is_file(), shards
    _assert_matches(hf, tmp_path)


@pytest.mark.parametrize("arch", [QA, PT])
def test_sharded_bin(arch, hf_checkpoint, tmp_path):
    hf = hf_checkpoint(arch)
    (tmp_path / "config.json").write_text(json.dumps(hf.config))
    write_sharded_bin(hf.model.state_dict(), tmp_path, n_shards=3)
    assert len(list(tmp_path.glob("pytorch_model-*.bin"))) == 3
    _assert_matches(hf, tmp_path)


def test_shard_index_errors(hf_checkpoint, copy_checkpoint, tmp_path):
    hf = hf_checkpoint(QA)
    (tmp_path / "config.json").write_text(json.dumps(hf.config))
    write_sharded_bin(hf.model.state_dict(), tmp_path, n_shards=2)
    (tmp_path / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(CheckpointError, match="pytorch_model-00002-of-00002.bin"):
        factory.from_pretrained(str(tmp_path))
    (tmp_path / "pytorch_model.bin.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="shard index"):
        factory.from_pretrained(str(tmp_path))


def test_folder_without_weights_or_config(hf_checkpoint, tmp_path):
    hf = hf_checkpoint(QA)
    (tmp_path / "config.json").write_text(json.dumps(hf.config))
    with pytest.raises(CheckpointError, match="no weights"):
        factory.from_pretrained(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnknownModelError, match="config.json"):
        factory.from_pretrained(str(empty))
    with pytest.raises(UnknownModelError, match="is a file"):
        factory.from_pretrained(str(tmp_path / "config.json"))


def test_other_model_type_is_refused(hf_checkpoint, copy_checkpoint):
    folder = copy_checkpoint(hf_checkpoint(QA).folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "vilt"}))
    with pytest.raises(UnknownModelError, match="vilt"):
        factory.from_pretrained(str(folder))


# ----------------------------------------------------------------------------- key names

def test_keys_without_base_prefix(hf_checkpoint, tmp_path):
    hf = hf_checkpoint(QA)
    state = {k.removeprefix("visual_bert."): v for k, v in _state(hf).items()}
    assert "embeddings.word_embeddings.weight" in state and "cls.weight" in state
    _assert_matches(hf, write_checkpoint(tmp_path, hf.config, state))


def test_base_model_keys_with_prefix(hf_checkpoint, tmp_path):
    """A bare VisualBertModel from keys saved as `visual_bert.*` (and from HF's own unprefixed save)."""
    hf = hf_checkpoint(BASE)
    assert not any(k.startswith("visual_bert.") for k in hf.model.state_dict())
    state = {"visual_bert." + k: v for k, v in _state(hf).items()}
    _assert_matches(hf, write_checkpoint(tmp_path, hf.config, state))


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_gamma_beta_layernorm_names(hf_checkpoint, tmp_path, safe):
    hf = hf_checkpoint(PT)
    state = {}
    for k, v in _state(hf).items():
        if "LayerNorm" in k:
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[k] = v
    assert sum(k.endswith(".gamma") for k in state) == 2 * 2 + 2  # 2 layers x 2, embeddings, MLM transform
    _assert_matches(hf, write_checkpoint(tmp_path, hf.config, state, safe=safe))


def test_position_ids_buffer_is_dropped(hf_checkpoint, tmp_path):
    hf = hf_checkpoint(QA)
    state = {**_state(hf), "visual_bert.embeddings.position_ids": torch.arange(40)[None]}
    _assert_matches(hf, write_checkpoint(tmp_path, hf.config, state, safe=False))


def test_decoder_weight_tied_absent_and_present(hf_checkpoint, tmp_path):
    hf = hf_checkpoint(PT)
    key = "cls.predictions.decoder.weight"
    assert key not in _ckpt_keys(hf.folder)  # transformers drops the tied copy: the absent case
    loaded = _assert_matches(hf, hf.folder, what="decoder absent")
    m = loaded.model
    assert m.cls.predictions.decoder.weight is m.visual_bert.embeddings.word_embeddings.weight
    state = _state(hf)
    state[key] = state["visual_bert.embeddings.word_embeddings.weight"].clone()
    _assert_matches(hf, write_checkpoint(tmp_path / "present", hf.config, state), what="decoder present")


def test_decoder_weight_differing_from_embeddings_is_kept_untied(hf_checkpoint, tmp_path):
    """Both tied tensors stored, with different values: transformers unties them; so must we (loading the
    decoder into the shared parameter would overwrite the word embeddings)."""
    import transformers

    hf = hf_checkpoint(PT)
    state = _state(hf)
    decoder = torch.randn_like(state["visual_bert.embeddings.word_embeddings.weight"])
    folder = write_checkpoint(tmp_path, hf.config, {**state, "cls.predictions.decoder.weight": decoder})
    theirs = transformers.VisualBertForPreTraining.from_pretrained(str(folder)).eval()
    assert torch.equal(theirs.cls.predictions.decoder.weight, decoder)
    ours = factory.from_pretrained(str(folder)).model
    assert torch.equal(ours.visual_bert.embeddings.word_embeddings.weight,
                       state["visual_bert.embeddings.word_embeddings.weight"])
    assert torch.equal(ours.cls.predictions.decoder.weight, decoder)
    feeds = _feeds(PT, hf.config)
    assert_same_outputs(run_ours(ours, feeds), run_hf(theirs, feeds), ATOL, "untied decoder")


def test_decoder_bias_alias(hf_checkpoint, tmp_path):
    """Old checkpoints store `cls.predictions.decoder.bias` (== cls.predictions.bias), alone or with it."""
    hf = hf_checkpoint(PT)
    state = _state(hf)
    both = {**state, "cls.predictions.decoder.bias": state["cls.predictions.bias"].clone()}
    _assert_matches(hf, write_checkpoint(tmp_path / "both", hf.config, both), what="both biases")
    alone = dict(both)
    del alone["cls.predictions.bias"]
    _assert_matches(hf, write_checkpoint(tmp_path / "alone", hf.config, alone), what="decoder.bias only")


# ----------------------------------------------------------------------------- strict checks

def test_unexpected_key_is_listed(hf_checkpoint, tmp_path):
    hf = hf_checkpoint(QA)
    state = {**_state(hf), "visual_bert.encoder.layer.7.surprise.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"unexpected keys: visual_bert\.encoder\.layer\.7\.surprise\.weight"):
        factory.from_pretrained(str(write_checkpoint(tmp_path, hf.config, state)))


def test_missing_key_is_listed(hf_checkpoint, tmp_path):
    hf = hf_checkpoint(QA)
    state = _state(hf)
    del state["visual_bert.encoder.layer.1.output.dense.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: visual_bert\.encoder\.layer\.1\.output\.dense\.bias"):
        factory.from_pretrained(str(write_checkpoint(tmp_path, hf.config, state)))


def test_many_missing_keys_are_summarised(hf_checkpoint, tmp_path):
    """Loading a base-model checkpoint as a head: the head's weights are missing."""
    hf = hf_checkpoint(BASE)
    with pytest.raises(CheckpointError, match=r"missing keys: cls\.bias, cls\.weight") as e:
        factory.from_pretrained(str(hf.folder), architecture=QA)
    assert "VisualBertForQuestionAnswering" in str(e.value)


def test_wrong_shape_names_key_and_shapes(hf_checkpoint, tmp_path):
    hf = hf_checkpoint(QA)
    state = _state(hf)
    state["cls.weight"] = torch.zeros(7, 32)  # config says 5 labels
    with pytest.raises(CheckpointError, match=r"'cls\.weight' has shape \(7, 32\).*\(5, 32\)"):
        factory.from_pretrained(str(write_checkpoint(tmp_path, hf.config, state)))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupted_weights_file(fmt, damage, hf_checkpoint, copy_checkpoint):
    folder = copy_checkpoint(hf_checkpoint(QA, fmt).folder)
    f = folder / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    data = f.read_bytes()
    f.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=f.name):
        factory.from_pretrained(str(folder))


class _Payload:
    """Unpickling this runs `touch <marker>`: what a hostile .bin could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_bin_with_code_is_refused_and_does_not_run(hf_checkpoint, tmp_path):
    hf = hf_checkpoint(QA)
    # the payload is real: an unsafe load would create the marker
    probe, probe_marker = tmp_path / "probe.bin", tmp_path / "probe-ran"
    torch.save({"x": _Payload(probe_marker)}, probe)
    torch.load(probe, weights_only=False)
    assert probe_marker.exists()

    marker = tmp_path / "pwned"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf.config))
    torch.save({**_state(hf), "evil": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        factory.from_pretrained(str(folder))
    assert not marker.exists(), "loading a checkpoint ran pickled code"


class _Opaque:
    pass


def test_bin_with_non_tensor_objects_is_refused(hf_checkpoint, tmp_path):
    hf = hf_checkpoint(QA)
    (tmp_path / "config.json").write_text(json.dumps(hf.config))
    torch.save({**_state(hf), "obj": _Opaque()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        factory.from_pretrained(str(tmp_path))
    torch.save([1, 2, 3], tmp_path / "pytorch_model.bin")  # allowed by weights_only, but not a state dict
    with pytest.raises(CheckpointError, match="not a state dict"):
        factory.from_pretrained(str(tmp_path))


# ----------------------------------------------------------------------------- heads and dtypes

def test_qa_checkpoint_as_base_model(hf_checkpoint):
    hf = hf_checkpoint(QA)
    feeds = _feeds(QA, hf.config)
    with torch.no_grad():
        out = hf.model.visual_bert(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    theirs = {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}
    for model in (vm.VisualBertModel.from_pretrained(str(hf.folder)),
                  factory.from_pretrained(str(hf.folder), architecture="feature-extraction").model,
                  factory.from_pretrained(str(hf.folder), architecture=BASE).model):
        assert type(model).__name__ == BASE
        assert_same_outputs(run_ours(model, feeds), theirs, ATOL, "QA checkpoint as VisualBertModel")


def test_architecture_as_task_name(hf_checkpoint, copy_checkpoint):
    hf = hf_checkpoint(QA)
    folder = copy_checkpoint(hf.folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["architectures"]  # without it the factory would build the bare model
    (folder / "config.json").write_text(json.dumps(cfg))
    assert factory.from_pretrained(str(folder)).architecture == BASE
    loaded = _assert_matches(hf, folder, arch="question-answering")
    assert loaded.architecture == QA
    with pytest.raises(UnknownModelError, match="no-such-task"):
        factory.from_pretrained(str(folder), architecture="no-such-task")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_fp16_checkpoint_loads_as_fp32(hf_checkpoint, tmp_path, safe, dtype):
    hf = hf_checkpoint(QA)
    half = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in _state(hf).items()}
    config = {**hf.config, "torch_dtype": str(dtype).replace("torch.", "")}
    loaded = factory.from_pretrained(str(write_checkpoint(tmp_path, config, half, safe=safe)))
    params = dict(loaded.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    for k, v in half.items():
        assert torch.equal(params[k], v.float()), k
    feeds = _feeds(QA, hf.config)
    out = run_ours(loaded.model, feeds)
    assert out["logits"].dtype == torch.float32
    # against HF in fp32: equal up to the fp16 rounding of the weights
    theirs = run_hf(hf.model, feeds)["logits"]
    torch.testing.assert_close(out["logits"], theirs, atol=1e-2 if dtype == torch.float16 else 0.1, rtol=0)  # seen: 2e-3, 2e-2


# ----------------------------------------------------------------------------- hub, public ids, tiny model

def _run_hub(code: str, env: dict, timeout=60):
    """Run `code` in a fresh interpreter (huggingface_hub reads its env constants at import)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full_env.update(env)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True, text=True,
                       timeout=timeout, cwd=str(Path(__file__).resolve().parents[1]))
    return r, time.perf_counter() - t0


_RESOLVE = """
    import sys
    from vlexport.errors import VlexportError
    from vlexport.sources import resolve_model_dir
    try:
        print("OK", resolve_model_dir(sys.argv[1] if len(sys.argv) > 1 else "uclanlp/visualbert-vqa"))
    except VlexportError as e:
        print(type(e).__name__, "|", e)
"""


def test_hub_offline_empty_cache(tmp_path):
    r, _ = _run_hub(_RESOLVE, {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert r.returncode == 0, r.stderr
    kind, _, msg = r.stdout.strip().partition(" | ")
    assert kind == "HubError", r.stdout
    assert "uclanlp/visualbert-vqa" in msg and "HF_HUB_OFFLINE" in msg and "not in the local cache" in msg
    assert "local folder" in msg and "--random-weights" in msg


def test_hub_unreachable_fails_fast(tmp_path):
    # a closed local port: connection refused, as when the hub cannot be reached
    r, took = _run_hub(_RESOLVE, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9",
                                  "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert r.returncode == 0, r.stderr
    kind, _, msg = r.stdout.strip().partition(" | ")
    assert kind == "HubError", r.stdout
    assert "could not be reached" in msg and "local folder" in msg
    assert took < 30, f"took {took:.1f}s"


def test_hub_offline_uses_the_cache(tmp_path, hf_checkpoint):
    """A repo already in the HF cache loads offline (cache layout: refs/main -> snapshots/<commit>)."""
    hf = hf_checkpoint(QA)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-vb"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in hf.folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    code = _RESOLVE + """
    from vlexport import reference as factory
    print("ARCH", factory.from_pretrained("someone/tiny-vb").architecture)
    """
    r, _ = _run_hub(code.replace('sys.argv[1] if len(sys.argv) > 1 else "uclanlp/visualbert-vqa"',
                                 '"someone/tiny-vb"'),
                    {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert r.returncode == 0, r.stderr
    assert f"OK {snap}" in r.stdout and f"ARCH {QA}" in r.stdout, r.stdout


@pytest.mark.parametrize("path", ["./no-such-model-dir", "/definitely/not/here", "~/no-such-vlexport-model",
                                  "runs/vqa/final", "not a hub id!"])
def test_nonexistent_local_path(path):
    with pytest.raises(UnknownModelError, match="does not exist"):
        factory.from_pretrained(path)


EXPECTED_PUBLIC = {  # id -> (architecture, visual_embedding_dim, logits width or None)
    "uclanlp/visualbert-vqa": (QA, 2048, 3129),
    "uclanlp/visualbert-vqa-coco-pre": (PT, 2048, None),
    "uclanlp/visualbert-nlvr2": ("VisualBertForVisualReasoning", 1024, 2),
    "uclanlp/visualbert-vcr": ("VisualBertForMultipleChoice", 512, None),
    "uclanlp/visualbert-vcr-coco-pre": (PT, 512, None),
}


def test_public_table_is_covered():
    assert set(EXPECTED_PUBLIC) == set(PUBLIC_CHECKPOINTS)


@pytest.mark.parametrize("model_id", sorted(EXPECTED_PUBLIC))
def test_public_id_random_weights_offline(model_id, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    arch, vdim, labels = EXPECTED_PUBLIC[model_id]
    loaded = factory.from_pretrained(model_id, random_weights=True)
    assert loaded.weights == "random" and loaded.architecture == arch and type(loaded.model).__name__ == arch
    c = loaded.config
    assert (c.visual_embedding_dim, c.hidden_size, c.num_hidden_layers, c.vocab_size) == (vdim, 768, 12, 30522)
    m = loaded.model
    assert m.visual_bert.embeddings.visual_projection.weight.shape == (768, vdim)
    if labels is not None:
        assert c.num_labels == labels and m.cls.weight.shape == (labels, 768)
    if arch == "VisualBertForMultipleChoice":
        assert m.cls.weight.shape == (1, 768)
    # a forward pass at a tiny shape works and gives finite numbers
    spec = describe(arch, c).graphs[0]
    sizes = {"batch": 1, "text": 4, "visual": 3, "choices": 2}
    out = run_ours(m, spec.make_inputs(sizes, np.random.default_rng(0), pad=False))
    assert all(torch.isfinite(v).all() for v in out.values())


def test_unknown_id_with_random_weights_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    # not a known public id: random weights need its config.json, which is not cached
    with pytest.raises((HubError, UnknownModelError)):
        factory.from_pretrained("someone/not-a-known-model", random_weights=True)


def test_random_weights_from_local_folder(hf_checkpoint):
    hf = hf_checkpoint(QA)
    loaded = factory.from_pretrained(str(hf.folder), random_weights=True)
    assert loaded.weights == "random" and loaded.architecture == QA and loaded.config.num_labels == 5
    ours = loaded.model.state_dict()["cls.weight"]
    assert not torch.equal(ours, hf.model.state_dict()["cls.weight"])  # the checkpoint's weights are not read


def _tiny_available():
    try:
        from vlexport.processing.vocab import tiny_vocab  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def test_tiny_model_is_deterministic():
    why = _tiny_available()
    if why:
        pytest.skip(f"vlexport.processing.vocab.tiny_vocab is not available yet ({why})")
    a, b = factory.from_pretrained(TINY_ID), factory.from_pretrained(TINY_ID)
    assert a.weights == "tiny" and a.architecture == QA
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # non-trivial biases and LayerNorm weights (graph tools would fold trivial ones away)
    assert not torch.equal(sa["visual_bert.embeddings.LayerNorm.weight"], torch.ones_like(sa["visual_bert.embeddings.LayerNorm.weight"]))
    assert sa["cls.bias"].abs().sum() > 0
    # the class entry point gives the same weights
    sc = vm.VisualBertForQuestionAnswering.from_pretrained(TINY_ID).state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
