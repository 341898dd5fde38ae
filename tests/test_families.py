"""The family registry: a toy family registered from inside this test is built, validated and run by
the generic code (build, validate, runtime, models, CLI) without touching it - one with one graph,
and one with two graphs whose pipeline (also registered here) hands the first graph's outputs to
the second as OrtValues, without a numpy round trip."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import vlexport
from vlexport import families
from vlexport.errors import ConfigError, InputError, UnknownModelError
from vlexport.families import Family
from vlexport.outputs import ModelOutput
from vlexport.specs import AxisRange, GraphSpec, InputSpec, ModelSpec, OutputSpec


# ----------------------------------------------------------------------------- the toy family (what a
# family folder holds: config, model, description, processor, registration)

@dataclass
class ToyConfig:
    vocab_size: int = 50
    hidden_size: int = 8
    num_labels: int = 3
    model_type: str = "toy"
    architectures: tuple = ("ToyForSequenceClassification",)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: (tuple(v) if k == "architectures" else v) for k, v in d.items() if k in cls.__annotations__})

    def to_dict(self):
        return {**asdict(self), "architectures": list(self.architectures)}


class ToyEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.mix = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, input_ids, attention_mask):
        h = torch.tanh(self.mix(self.embed(input_ids)))  # (B, T, H)
        return ModelOutput(hidden=h * attention_mask[..., None].to(h.dtype))


class ToyHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cls = nn.Linear(c.hidden_size, c.num_labels)

    def forward(self, hidden, attention_mask):
        n = attention_mask.sum(1, keepdim=True).clamp(min=1).to(hidden.dtype)
        return ModelOutput(logits=self.cls(hidden.sum(1) / n))  # (B, labels)


class ToyForSequenceClassification(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.encoder, self.head = ToyEncoder(config), ToyHead(config)

    def forward(self, input_ids, attention_mask):
        return self.head(self.encoder(input_ids, attention_mask).hidden, attention_mask)


class ToyTwoGraph(ToyForSequenceClassification):
    def graph_modules(self):  # the artifact holds these two graphs
        return {"encoder": self.encoder, "head": self.head}


def _ids(c):
    return InputSpec("input_ids", ("batch", "text"), "int64", low=0, high=c.vocab_size)


def _mask():
    return InputSpec("attention_mask", ("batch", "text"), "int64", low=0, high=2, default=1)


def _make(c):
    def make_inputs(sizes, rng, pad=True):
        B, T = sizes["batch"], sizes["text"]
        mask = (np.arange(T) < rng.integers(1, T + 1, size=(B, 1))).astype(np.int64) if pad else np.ones((B, T), np.int64)
        return {"input_ids": rng.integers(0, c.vocab_size, size=(B, T)), "attention_mask": mask}
    return make_inputs


def toy_describe(architecture, config, axes=None):
    ranges = {"batch": AxisRange(1, 2, 4), "text": AxisRange(2, 4, 16)}
    ranges.update(axes or {})
    logits = OutputSpec("logits", ("batch", config.num_labels), classes=True)
    if architecture == "ToyForSequenceClassification":
        graphs = [GraphSpec("model", [_ids(config), _mask()], [logits], make_inputs=_make(config))]
        pipeline = "classify"
    else:
        def head_inputs(sizes, rng, pad=True):
            feeds = _make(config)(sizes, rng, pad)
            hidden = rng.standard_normal((sizes["batch"], sizes["text"], config.hidden_size)).astype(np.float32)
            return {"hidden": hidden, "attention_mask": feeds["attention_mask"]}

        graphs = [GraphSpec("encoder", [_ids(config), _mask()],
                            [OutputSpec("hidden", ("batch", "text", config.hidden_size))], make_inputs=_make(config)),
                  GraphSpec("head", [InputSpec("hidden", ("batch", "text", config.hidden_size), "float32"), _mask()],
                            [logits], make_inputs=head_inputs)]
        pipeline = "toy_chain"
    return ModelSpec(family="toy", architecture=architecture, task="text-classification", graphs=graphs,
                     axes=ranges, pipeline=pipeline)


class ToyProcessor:
    """Whitespace tokens -> ids by a stable hash; writes its one file into the artifact."""

    vocab_size = 50

    def __call__(self, text):
        ids = [[sum(map(ord, w)) % self.vocab_size for w in t.split()] or [0] for t in text]
        T = max(len(i) for i in ids)
        return {"input_ids": np.array([i + [0] * (T - len(i)) for i in ids], np.int64),
                "attention_mask": np.array([[1] * len(i) + [0] * (T - len(i)) for i in ids], np.int64)}

    def save_pretrained(self, folder):
        (Path(folder) / "toy_processor.json").write_text(json.dumps({"vocab_size": self.vocab_size}))


TOY = Family(
    name="toy", model_types=("toy",),
    architectures={"ToyForSequenceClassification": "text-classification", "ToyTwoGraph": "two-graph-classification"},
    config_from_dict=ToyConfig.from_dict, describe=toy_describe, model_module=__name__,
    load_processor=lambda folder, weights, config=None: ToyProcessor(),
    tiny={"tiny-toy": lambda: ToyConfig().to_dict(),
          "tiny-toy-two-graph": lambda: {**ToyConfig().to_dict(), "architectures": ["ToyTwoGraph"]}},
)


def _chain_pipeline():
    from vlexport.runtime.pipelines import ModelOutput as MO, Pipeline

    class ToyChain(Pipeline):
        """encoder -> head, the hidden states staying in ONNX Runtime's memory (OrtValues)."""

        handed_over = []

        def __call__(self, **inputs):
            feeds = self.prepare(inputs, "encoder")
            hidden = self.run_graph("encoder", feeds, keep_on_device=True)["hidden"]
            ToyChain.handed_over.append(type(hidden).__name__)
            out = self.run_graph("head", {"hidden": hidden, "attention_mask": feeds["attention_mask"]})
            return MO(logits=out["logits"])

    return ToyChain


@pytest.fixture(scope="module")
def toy():
    from vlexport.runtime import pipelines

    families.register(TOY)
    chain = _chain_pipeline()
    pipelines.register_pipeline("toy_chain", chain)
    yield chain
    families.unregister("toy")
    pipelines.PIPELINES.pop("toy_chain", None)


def _reference(model_id):
    from vlexport.reference import from_pretrained

    return from_pretrained(model_id).model


# ----------------------------------------------------------------------------- the tests

def test_registry_finds_the_toy_family_everywhere(toy):
    assert families.for_model_type("toy") is TOY and families.for_architecture("two-graph-classification") is TOY
    assert "tiny-toy" in families.known_ids()
    import vlexport.models as vm

    assert vm.ToyForSequenceClassification is ToyForSequenceClassification and vm.ToyConfig is ToyConfig
    with pytest.raises(ValueError, match="already registered"):
        families.register(TOY)
    with pytest.raises(UnknownModelError, match="model_type 'nope'"):
        families.for_model_type("nope")


def test_one_graph_toy_builds_validates_and_runs(toy, tmp_path):
    from vlexport.export.build import build
    from vlexport.export.validate_artifact import validate_artifact

    out = build("tiny-toy", tmp_path / "toy", fp16=True, int8=True, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["family"] == "toy" and m["pipeline"] == "classify" and list(m["graphs"]) == ["model"]
    assert set(m["graphs"]["model"]["onnx"]) == {"fp32", "fp16", "int8"} and "toy_processor.json" in m["files"]
    model = vlexport.load(out)
    ref = _reference("tiny-toy")
    rng = np.random.default_rng(0)
    for B, T in ((1, 16), (3, 2), (4, 9)):
        feeds = _make(ToyConfig())({"batch": B, "text": T}, rng)
        with torch.no_grad():
            want = ref(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        np.testing.assert_allclose(model(**feeds).logits, want, atol=1e-5)
    enc = model.processor(["a b c", "hello"])  # the family's processor through the pipeline
    assert model(**enc).logits.shape == (2, 3)
    assert validate_artifact(out, progress=False, table=False)["passed"]
    with pytest.raises(InputError, match="text=17, outside"):
        model(input_ids=np.zeros((1, 17), np.int64))


def test_two_graph_toy_hands_ortvalues_between_graphs(toy, tmp_path):
    from vlexport.export.build import build

    out = build("tiny-toy-two-graph", tmp_path / "toy2", fp16=True, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert list(m["graphs"]) == ["encoder", "head"] and m["pipeline"] == "toy_chain"
    assert {"encoder.onnx", "head.onnx", "encoder.fp16.onnx", "head.fp16.onnx"} <= set(m["files"])
    for g in ("encoder", "head"):
        assert m["graphs"][g]["validation"]["fp32"]["passed"] and m["graphs"][g]["validation"]["fp16"]["passed"]
    model = vlexport.load(out)
    assert isinstance(model, toy) and set(model.backends) == {"encoder", "head"}
    ref = _reference("tiny-toy-two-graph")
    feeds = _make(ToyConfig())({"batch": 3, "text": 11}, np.random.default_rng(1))
    with torch.no_grad():
        want = ref(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    toy.handed_over.clear()
    np.testing.assert_allclose(model(**feeds).logits, want, atol=1e-5)
    assert toy.handed_over == ["OrtValue"]  # the hidden states never became a numpy array in between
    np.testing.assert_allclose(vlexport.load(out, precision="fp16")(**feeds).logits, want, atol=5e-3)


def test_cli_builds_the_toy_and_names_what_it_lacks(toy, tmp_path, capsys):
    from vlexport.cli import main

    out = tmp_path / "cli-toy"
    assert main(["build", "--model", "tiny-toy", "--out", str(out), "--quiet", "--max-text-len", "12"]) == 0
    assert json.loads((out / "manifest.json").read_text())["axes"]["text"] == [2, 4, 12]
    capsys.readouterr()
    assert main(["predict", str(out), "--text", "hi"]) == 2
    assert "has no command for toy artifacts" in capsys.readouterr().err
    assert main(["build", "--model", "tiny-toy", "--out", str(tmp_path / "x"), "--quiet", "--max-visual-len", "9"]) == 2
    assert "--max-visual-len does not apply: this model has no 'visual' axis" in capsys.readouterr().err
    assert main(["build", "--model", "tiny-toy", "--out", str(tmp_path / "x"), "--quiet", "--with-alignment"]) == 2
    assert "--with-alignment does not apply to toy models" in capsys.readouterr().err


def test_unregistered_family_artifact_is_refused(toy, tmp_path):
    from vlexport.export.build import build

    out = build("tiny-toy", tmp_path / "toy", progress=False, onnx_only=True)
    families.unregister("toy")
    try:
        with pytest.raises(UnknownModelError, match="unknown model family 'toy'"):
            vlexport.load(out)
    finally:
        families.register(TOY)


def _code_without_docs(source: str) -> str:
    """The module's code with docstrings and comments dropped (ast round trip)."""
    import ast

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def test_generic_code_names_no_family():
    """Outside vlexport/families/, no code names a family or an architecture (docs aside); the
    registry's table of built-in families is the one place that does."""
    root = Path(vlexport.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] == "families":
            continue
        code = _code_without_docs(path.read_text()).lower()
        for word in ("visualbert", "visual_bert", "visual-bert"):
            if word in code:
                offenders.append(f"{rel}: {word}")
    assert not offenders, offenders
    table = _code_without_docs((root / "families" / "__init__.py").read_text()).lower()
    assert table.count("visual_bert") == 2  # BUILTIN = {"visual_bert": "vlexport.families.visual_bert"}


def test_configs_reject_bad_values():
    fam = families.get("visual_bert")
    with pytest.raises(ConfigError, match="hidden_size"):
        fam.config_from_dict({"hidden_size": -1})
