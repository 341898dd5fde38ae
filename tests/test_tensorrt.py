"""TensorRT: profiles, compatibility rules, skip paths, ORT provider options (no GPU needed), and
engine-vs-ONNX Runtime checks that run only on a machine with TensorRT and a CUDA GPU (-m gpu)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vlexport.errors import ArtifactError, ConfigError, InputError, MissingDependencyError
from vlexport.specs import AxisRange
from vlexport.tensorrt import cuda as tcuda
from vlexport.tensorrt.engine import (
    check_compatibility,
    engine_compatibility,
    maybe_build_engine,
    parse_version,
    require_compatible,
    tensorrt_status,
)
from vlexport.tensorrt.ort_provider import PROVIDER, tensorrt_provider_options
from vlexport.tensorrt.profiles import (
    build_profiles,
    profiles_from_json,
    profiles_from_manifest,
    profiles_to_json,
    select_profile,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
SRC = Path(__file__).resolve().parents[1] / "vlexport"


def _config(**kw):
    base = dict(vocab_size=99, type_vocab_size=2, visual_embedding_dim=16, hidden_size=32, num_labels=5,
                max_position_embeddings=64)
    base.update(kw)
    return SimpleNamespace(**base)


def _manifest(architecture="VisualBertForQuestionAnswering", with_alignment=False, axes=None):
    from vlexport.artifact import new_manifest
    from vlexport.families.visual_bert.describe import describe

    m = new_manifest(describe(architecture, _config(), with_alignment=with_alignment, axes=axes), {}, {})
    m["graphs"]["model"]["onnx"] = {"fp16": {"file": "model.fp16.onnx", "data": []}}
    m["files"] = {"model.fp16.onnx": {"sha256": "ab" * 32, "bytes": 1}}
    return m


def _inputs(m):
    return m["graphs"]["model"]["inputs"]


def _check_covers(profiles, manifest):
    names = [i["name"] for i in _inputs(manifest)]
    axes = {k: AxisRange(*v) for k, v in manifest["axes"].items()}
    for p in profiles:
        assert list(p) == names  # every input, in order
        for spec in _inputs(manifest):
            lo, opt, hi = p[spec["name"]]
            assert len(lo) == len(opt) == len(hi) == len(spec["dims"])
            for d, a, o, b in zip(spec["dims"], lo, opt, hi):
                assert a <= o <= b
                if isinstance(d, int):
                    assert a == o == b == d
                else:
                    assert axes[d].min <= a and b <= axes[d].max


# --------------------------------------------------------------------------- profiles

def test_two_profiles_for_wide_batch():
    m = _manifest()
    profiles = profiles_from_manifest(m)
    assert len(profiles) == 2
    _check_covers(profiles, m)
    lat, thr = profiles
    assert lat["input_ids"] == ((1, 2), (1, 20), (1, 64))
    assert lat["visual_embeds"] == ((1, 1, 16), (1, 36, 16), (1, 100, 16))
    assert thr["input_ids"] == ((2, 2), (32, 20), (32, 64))  # throughput opt = batch max


def test_throughput_opt_uses_requested_batch_opt():
    m = _manifest(axes={"batch": AxisRange(1, 8, 16)})
    _, thr = profiles_from_manifest(m)
    assert thr["attention_mask"][:2] == ((2, 2), (8, 20))
    assert thr["attention_mask"][2] == (16, 64)


@pytest.mark.parametrize("batch", [AxisRange(1, 1, 1), AxisRange(4, 4, 8), AxisRange(2, 3, 2 + 1)])
def test_single_profile_when_batch_is_fixed_or_starts_above_one(batch):
    m = _manifest(axes={"batch": batch})
    profiles = profiles_from_manifest(m)
    assert len(profiles) == 1
    _check_covers(profiles, m)
    assert profiles[0]["input_ids"][0][0] == batch.min and profiles[0]["input_ids"][2][0] == batch.max


def test_single_strategy_forces_one_profile():
    m = _manifest()
    (p,) = profiles_from_manifest(m, strategy="single")
    assert p["input_ids"] == ((1, 2), (1, 20), (32, 64))


def test_choices_axis_multiple_choice():
    m = _manifest("VisualBertForMultipleChoice")
    profiles = profiles_from_manifest(m)
    assert len(profiles) == 2
    _check_covers(profiles, m)
    assert profiles[0]["input_ids"] == ((1, 1, 2), (1, 4, 20), (1, 4, 64))
    assert profiles[1]["visual_embeds"] == ((2, 1, 1, 16), (8, 4, 36, 16), (8, 4, 100, 16))


def test_phrases_and_align_axes():
    m = _manifest("VisualBertForRegionToPhraseAlignment", with_alignment=True)
    profiles = profiles_from_manifest(m)
    _check_covers(profiles, m)
    assert profiles[0]["region_to_phrase_position"] == ((1, 1), (1, 8), (1, 32))
    assert profiles[1]["image_text_alignment"] == ((2, 1, 1), (32, 36, 2), (32, 100, 8))


def test_profiles_reject_unknown_axis_and_strategy():
    inputs = [{"name": "x", "dims": ["batch", "nope"]}]
    with pytest.raises(ConfigError, match="nope"):
        build_profiles(inputs, {"batch": [1, 1, 4]})
    with pytest.raises(ConfigError, match="strategy"):
        build_profiles(inputs, {"batch": [1, 1, 4], "nope": [1, 1, 1]}, strategy="many")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        build_profiles(inputs, {"batch": [1, 5, 4], "nope": [1, 1, 1]})


def test_profiles_without_batch_axis():
    (p,) = build_profiles([{"name": "x", "dims": ["n", 3]}], {"n": [1, 2, 5]})
    assert p == {"x": ((1, 3), (2, 3), (5, 3))}


def test_profiles_json_roundtrip():
    profiles = profiles_from_manifest(_manifest())
    import json

    again = profiles_from_json(json.loads(json.dumps(profiles_to_json(profiles))))
    assert again == profiles


def test_select_profile_picks_containing_profile():
    m = _manifest()
    profiles = profiles_from_manifest(m)
    dims = {i["name"]: i["dims"] for i in _inputs(m)}
    assert select_profile(profiles, {"input_ids": (1, 10), "visual_embeds": (1, 5, 16)}, dims) == 0
    assert select_profile(profiles, {"input_ids": (3, 10), "visual_embeds": (3, 5, 16)}, dims) == 1
    assert select_profile(profiles, {"input_ids": (32, 64)}, dims) == 1
    # JSON-shaped profiles (lists) work too
    assert select_profile(profiles_to_json(profiles), {"input_ids": (1, 2)}, dims) == 0


def test_select_profile_error_names_input_and_axis():
    m = _manifest()
    profiles = profiles_from_manifest(m)
    dims = {i["name"]: i["dims"] for i in _inputs(m)}
    with pytest.raises(InputError, match=r"'input_ids' has text=65 .*\[2, 64\]"):
        select_profile(profiles, {"input_ids": (1, 65)}, dims)
    with pytest.raises(InputError, match=r"'visual_embeds' has batch=33"):
        select_profile(profiles, {"visual_embeds": (33, 5, 16)}, dims)
    with pytest.raises(InputError, match=r"'input_ids' should have 2 dims"):
        select_profile(profiles, {"input_ids": (1, 2, 3)}, dims)
    # without dims the error still names the input and the dimension index
    with pytest.raises(InputError, match=r"'input_ids' has dim 1=65"):
        select_profile(profiles, {"input_ids": (1, 65)})


def test_select_profile_no_single_profile_for_combination():
    profiles = [{"a": ((1,), (1,), (1,)), "b": ((1,), (1,), (1,))},
                {"a": ((2,), (2,), (4,)), "b": ((2,), (2,), (4,))}]
    with pytest.raises(InputError, match="together"):
        select_profile(profiles, {"a": (1,), "b": (3,)})


# --------------------------------------------------------------------------- compatibility

ENTRY = {"tensorrt_version": "10.13.0.35", "gpu": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0",
         "options": {"version_compatible": False, "hardware_compatibility": None}}


def _entry(**opts):
    e = dict(ENTRY)
    e["options"] = {**ENTRY["options"], **opts}
    return e


def test_parse_version():
    assert parse_version("10.13.0.35") == (10, 13, 0, 35)
    assert parse_version("11.0.0.post1") == (11, 0, 0)
    assert parse_version("8.6") == (8, 6)


def test_compatible_same_version_and_cc():
    assert check_compatibility(ENTRY, "10.13.0.35", "8.0") == (True, "")


@pytest.mark.parametrize("have", ["10.13.0.36", "10.13.1.1", "10.12.0.36", "11.0.0.1"])
def test_default_engine_needs_exact_version(have):
    ok, reason = check_compatibility(ENTRY, have, "8.0")
    assert not ok and "10.13.0.35" in reason and have in reason


def test_version_compatible_engine_accepts_later_versions_only():
    e = _entry(version_compatible=True)
    assert check_compatibility(e, "10.14.1.48", "8.0")[0]
    assert check_compatibility(e, "11.0.0.1", "8.0")[0]
    ok, reason = check_compatibility(e, "10.12.0.36", "8.0")
    assert not ok and ">= 10.13.0.35" in reason


def test_hardware_compatibility_rules():
    ok, reason = check_compatibility(ENTRY, "10.13.0.35", "8.6", "NVIDIA RTX A6000")
    assert not ok and "8.0" in reason and "8.6" in reason and "A6000" in reason
    same_cc = _entry(hardware_compatibility="same_cc")
    assert check_compatibility(same_cc, "10.13.0.35", "8.0", "NVIDIA A30")[0]
    assert not check_compatibility(same_cc, "10.13.0.35", "9.0")[0]
    amp = _entry(hardware_compatibility="ampere+")
    assert check_compatibility(amp, "10.13.0.35", "9.0")[0]
    assert check_compatibility(amp, "10.13.0.35", "8.9")[0]
    ok, reason = check_compatibility(amp, "10.13.0.35", "7.5")
    assert not ok and "Ampere" in reason


def test_compatibility_with_missing_pieces():
    assert check_compatibility({}, "10.13.0.35", "8.0") == (False, "the manifest records no TensorRT version for this engine")
    assert not check_compatibility(ENTRY, None, "8.0")[0]
    assert check_compatibility(ENTRY, "10.13.0.35", None) == (False, "no CUDA GPU is visible")


@pytest.mark.skipif(HAVE_TRT, reason="checks the behaviour without the tensorrt package")
def test_engine_compatibility_here_without_tensorrt():
    assert engine_compatibility(ENTRY) == (False, "the 'tensorrt' package is not installed")
    with pytest.raises(ArtifactError, match="cannot run here: the 'tensorrt' package is not installed.*[Rr]ebuild"):
        require_compatible(ENTRY)


# --------------------------------------------------------------------------- skip paths (real, no mocks)

@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_maybe_build_engine_skips_without_tensorrt(tmp_path):
    entry, msg = maybe_build_engine(tmp_path, _manifest(), require=False)
    assert entry is None
    assert msg.startswith("TensorRT engine skipped: the 'tensorrt' package is not installed")
    assert "\n" not in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_maybe_build_engine_require_raises_without_tensorrt(tmp_path):
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        maybe_build_engine(tmp_path, _manifest(), require=True)


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_backend_availability_and_constructor_without_tensorrt():
    from vlexport.runtime.backends import backend_class

    cls = backend_class("tensorrt")
    ok, reason = cls.availability()
    assert not ok and "tensorrt" in reason and "pip install" in reason
    assert tensorrt_status() == (ok, reason)
    with pytest.raises(MissingDependencyError, match="TensorRT backend"):
        cls(SimpleNamespace(path=Path("nowhere")), precision="fp16")


def test_backend_rejects_bad_output_device():
    from vlexport.runtime.backends.tensorrt import TensorRTBackend

    with pytest.raises(ConfigError, match="output_device"):
        TensorRTBackend(SimpleNamespace(path=Path("nowhere")), output_device="gpu0")


def test_gpu_status_is_a_reason_not_an_exception():
    ok, reason = tcuda.gpu_status()
    assert isinstance(ok, bool) and isinstance(reason, str)
    if not ok:
        assert reason


def test_tensorrt_import_is_lazy():
    code = ("import sys, vlexport.tensorrt, vlexport.runtime.backends.tensorrt; "
            "bad = [m for m in ('tensorrt', 'torch', 'cuda', 'polygraphy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- ORT provider options

def test_provider_options_from_manifest(tmp_path):
    m = _manifest()
    name, opts = tensorrt_provider_options(m, cache_dir=tmp_path)
    assert name == PROVIDER == "TensorrtExecutionProvider"
    assert "trt_fp16_enable" not in opts  # strongly typed: precision comes from the fp16 graph
    assert opts["trt_engine_cache_enable"] == "1" and opts["trt_timing_cache_enable"] == "1"
    assert opts["trt_engine_cache_path"] == str(tmp_path / ("ab" * 8))
    assert opts["trt_timing_cache_path"] == str(tmp_path)
    mins = opts["trt_profile_min_shapes"].split(",")
    assert len(mins) == 2 * len(_inputs(m))  # two profiles, every input in each
    assert mins[0] == "input_ids:1x2" and mins[len(_inputs(m))] == "input_ids:2x2"
    assert "visual_embeds:1x36x16" in opts["trt_profile_opt_shapes"].split(",")
    assert "visual_embeds:32x100x16" in opts["trt_profile_max_shapes"].split(",")
    pattern = re.compile(r"^[A-Za-z_][\w.]*:\d+(x\d+)*$")
    for key in ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"):
        assert all(pattern.match(p) for p in opts[key].split(","))
    assert all(isinstance(v, str) for v in opts.values())


def test_provider_options_restricted_inputs_and_single_profile(tmp_path):
    m = _manifest()
    _, opts = tensorrt_provider_options(m, cache_dir=tmp_path, input_names=["input_ids", "visual_embeds"],
                                        profile_strategy="single", workspace_gb=2)
    assert opts["trt_profile_max_shapes"] == "input_ids:32x64,visual_embeds:32x100x16"
    assert opts["trt_max_workspace_size"] == str(2 << 30)


def test_provider_options_need_fp16_graph(tmp_path):
    m = _manifest()
    m["graphs"]["model"]["onnx"] = {"fp32": {"file": "model.onnx", "data": []}}
    with pytest.raises(ArtifactError, match="no fp16 graph"):
        tensorrt_provider_options(m, cache_dir=tmp_path)


# --------------------------------------------------------------------------- source hygiene

REMOVED_IN_TRT11 = ["BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.BF16", "BuilderFlag.FP8",
                    "BuilderFlag.INT4", "BuilderFlag.FP4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                    "EXPLICIT_BATCH", "set_precision", "precision_constraints", "set_output_type",
                    "int8_calibrator", "platform_has_fast_fp16", "device_memory_size",
                    # removed in TensorRT 10 already
                    "execute_async_v2", "get_binding", ".max_workspace_size", "build_engine("]


@pytest.mark.parametrize("path", ["tensorrt/__init__.py", "tensorrt/profiles.py", "tensorrt/engine.py",
                                  "tensorrt/ort_provider.py", "tensorrt/cuda.py", "runtime/backends/tensorrt.py"])
def test_no_removed_tensorrt_api(path):
    source = (SRC / path).read_text()
    code = re.sub(r'"""[\s\S]*?"""', "", source)  # prose may name what is avoided
    code = "\n".join(line.split("#", 1)[0] for line in code.splitlines())
    for name in REMOVED_IN_TRT11:
        if name == "build_engine(" and path in ("tensorrt/engine.py", "tensorrt/__init__.py"):
            continue  # our own function of that name, not builder.build_engine
        assert name not in code, f"{path} uses {name}"
    assert "builder.build_engine" not in code
    if path.startswith("runtime/"):
        assert "import torch" not in code


# --------------------------------------------------------------------------- CUDA helpers without a GPU

def test_contiguity_rule():
    assert tcuda._c_contiguous((2, 3), None)
    assert tcuda._c_contiguous((2, 3), (3, 1))
    assert not tcuda._c_contiguous((2, 3), (1, 2))
    assert tcuda._c_contiguous((1, 3), (99, 1))  # size-1 dims may have any stride


def test_device_tensor_detection_and_host_conversion():
    assert not tcuda.is_device_tensor(np.zeros(3))

    class FakeCuda:
        __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False), "version": 3}

    assert tcuda.is_device_tensor(FakeCuda())
    assert tcuda.to_host([1, 2]).tolist() == [1, 2]


def test_dlpack_capsule_parsing_on_cpu_tensor():
    torch = pytest.importorskip("torch")
    from torch.utils.dlpack import to_dlpack

    t = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    dt = tcuda._from_capsule(to_dlpack(t), b"dltensor")
    assert dt.shape == (2, 3) and dt.dtype == np.int64 and dt.contiguous and dt.ptr == t.data_ptr()
    tt = t.t()
    dt = tcuda._from_capsule(to_dlpack(tt), b"dltensor")
    assert dt.shape == (3, 2) and not dt.contiguous
    h = torch.ones(4, dtype=torch.float16)
    assert tcuda._from_capsule(to_dlpack(h), b"dltensor").dtype == np.float16
    assert tcuda.to_host(t).tolist() == [[0, 1, 2], [3, 4, 5]]  # CPU DLPack -> numpy


# --------------------------------------------------------------------------- GPU: engine vs ONNX Runtime

def _gpu_ready():
    ok, reason = tensorrt_status()
    return ok, reason


gpu = pytest.mark.gpu


@pytest.fixture(scope="module")
def trt_artifact(tmp_path_factory):
    ok, reason = _gpu_ready()
    if not ok:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {reason}")
    out = tmp_path_factory.mktemp("trt") / "tiny"
    proc = subprocess.run([sys.executable, "-m", "vlexport", "build", "--model", "tiny-visualbert-vqa", "--fp16",
                           "--require-engine", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from vlexport.artifact import Artifact

    art = Artifact(out)
    assert "fp16" in art.engine_precisions("model"), art.manifest["graphs"]["model"].get("engines")
    return art


def _feeds(art, batch, text, visual, rng):
    sizes = {"batch": batch, "text": text, "visual": visual}
    for k, r in art.axes.items():
        sizes.setdefault(k, r.opt)
    sizes["text_plus_visual"] = sizes["text"] + sizes["visual"]
    feeds = {}
    for spec in art.inputs("model"):
        shape = tuple(d if isinstance(d, int) else sizes[d] for d in spec.dims)
        if spec.dtype.startswith("float"):
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
        elif "mask" in spec.name:
            feeds[spec.name] = np.ones(shape, np.int64)
        else:
            hi = spec.high if isinstance(spec.high, int) else sum(sizes[a] for a in str(spec.high).split("+"))
            lo = max(spec.low or 0, 0)
            feeds[spec.name] = rng.integers(lo, max(hi, lo + 1), size=shape, dtype=np.int64)
    return feeds


def _ort_fp16(art):
    import onnxruntime as ort

    return ort.InferenceSession(str(art.onnx_file("model", "fp16")), providers=["CPUExecutionProvider"])


def _cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


@gpu
def test_engine_matches_onnxruntime_fp16(trt_artifact):
    from vlexport.runtime.backends.tensorrt import TensorRTBackend

    be, sess = TensorRTBackend(trt_artifact), _ort_fp16(trt_artifact)
    rng = np.random.default_rng(0)
    for batch, text, visual in [(1, 8, 5), (3, 12, 7), (2, 2, 1)]:
        feeds = _feeds(trt_artifact, batch, text, visual, rng)
        got = be.run(feeds)
        want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        for name, ref in want.items():
            out = got[name]
            assert out.shape == ref.shape and out.dtype == np.float32
            assert _cosine(out, ref) >= 0.999, name
            if ref.ndim == 2 and ref.shape[-1] > 1:
                top2 = np.sort(ref, axis=-1)[:, -2:]
                clear = (top2[:, 1] - top2[:, 0]) > 1e-2
                assert (out.argmax(-1) == ref.argmax(-1))[clear].all()


@gpu
def test_engine_threads_and_profiles(trt_artifact):
    from vlexport.runtime.backends.tensorrt import TensorRTBackend

    be = TensorRTBackend(trt_artifact)
    rng = np.random.default_rng(1)
    cases = [_feeds(trt_artifact, b, 6 + b, 3 + b, rng) for b in (1, 4, 1, 2)]
    expected = [be.run(f) for f in cases]
    assert be.last_device_ms is not None and be.last_device_ms > 0  # CUDA-event time of the last call
    errors = []

    def work(k):
        try:
            for _ in range(5):
                for f, e in zip(cases[k:] + cases[:k], expected[k:] + expected[:k]):
                    for name, v in be.run(f).items():
                        np.testing.assert_allclose(v, e[name], rtol=1e-3, atol=1e-3)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@gpu
def test_engine_shape_outside_profiles(trt_artifact):
    from vlexport.runtime.backends.tensorrt import TensorRTBackend

    be = TensorRTBackend(trt_artifact)
    text_max = trt_artifact.axes["text"].max
    feeds = _feeds(trt_artifact, 1, text_max + 1, 2, np.random.default_rng(2))
    with pytest.raises(InputError, match=r"text=%d" % (text_max + 1)):
        be.run(feeds)


@gpu
def test_engine_dlpack_inputs_and_cuda_outputs(trt_artifact):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    from vlexport.runtime.backends.tensorrt import TensorRTBackend

    feeds = _feeds(trt_artifact, 2, 9, 4, np.random.default_rng(3))
    ref = TensorRTBackend(trt_artifact).run(feeds)
    dev = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
    got = TensorRTBackend(trt_artifact).run(dev)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-3, atol=1e-3)
    # int32 ids on the device: a different dtype is converted, not rejected
    dev32 = {k: (v.to(torch.int32) if v.dtype == torch.int64 else v) for k, v in dev.items()}
    got = TensorRTBackend(trt_artifact).run(dev32)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-3, atol=1e-3)
    # device outputs, zero-copy into torch
    be = TensorRTBackend(trt_artifact, output_device="cuda")
    outs = be.run(dev)
    for k, v in outs.items():
        assert hasattr(v, "__cuda_array_interface__")
        np.testing.assert_allclose(torch.as_tensor(v, device="cuda").cpu().numpy(), ref[k], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(v.numpy(), ref[k], rtol=1e-3, atol=1e-3)


@gpu
def test_engine_entry_and_compatibility(trt_artifact):
    entry = trt_artifact.engine_entry("model", "fp16")
    for key in ("tensorrt_version", "gpu", "compute_capability", "profiles", "options", "files"):
        assert key in entry
    assert entry["options"]["strongly_typed"] is True
    assert engine_compatibility(entry) == (True, "")
    stale = dict(entry, tensorrt_version="1.0.0.0")
    with pytest.raises(ArtifactError, match="[Rr]ebuild"):
        require_compatible(stale)


@gpu
def test_ort_tensorrt_provider_matches(trt_artifact, tmp_path):
    import onnxruntime as ort

    if PROVIDER not in ort.get_available_providers():
        pytest.skip("onnxruntime has no TensorrtExecutionProvider here (CPU build)")
    from vlexport.tensorrt.ort_provider import ensure_cache_dirs

    name, opts = tensorrt_provider_options(trt_artifact, cache_dir=tmp_path)
    ensure_cache_dirs(opts)
    sess = ort.InferenceSession(str(trt_artifact.graph("fp16")), providers=[(name, opts), "CPUExecutionProvider"])
    feeds = _feeds(trt_artifact, 1, 8, 5, np.random.default_rng(4))
    ref = _ort_fp16(trt_artifact).run(None, feeds)
    for a, b in zip(sess.run(None, feeds), ref):
        assert _cosine(a, b) >= 0.999
