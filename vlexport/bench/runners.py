"""The benchmark's backends behind one interface (load() once, then call(feeds) -> outputs), each
raising Skip with the reason when it cannot run here: transformers eager with our weights (per
graph through the family's `Family.hf_graphs` hook), our PyTorch reference, and the runtime
(`vlexport.load`) on ONNX Runtime fp32/fp16/int8 or TensorRT. Used by vlexport.bench.harness."""

from __future__ import annotations

class Skip(Exception):
    """A backend that cannot run here; the message says why."""


class Runner:
    """One backend: load() once, then call(feeds) -> {output name: numpy array}."""

    name = "?"

    def __init__(self, ctx):  # a vlexport.bench.harness.Context
        self.ctx = ctx
        self.device_ms: list[float] = []  # per call, when the backend reports GPU device time

    def load(self):
        raise NotImplementedError

    def call(self, feeds: dict) -> dict:
        raise NotImplementedError


class TorchRunner(Runner):
    """Our PyTorch reference model, called directly (torch tensors from the numpy feeds)."""

    name = "torch"

    def load(self):
        import torch

        self.torch = torch
        self.model = self.ctx.torch_module()

    def call(self, feeds):
        t = self.torch
        with t.inference_mode():
            out = self.model(**{k: t.from_numpy(v) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in out.items() if v is not None}


class TransformersRunner(TorchRunner):
    """HF transformers eager with our weights (keys match HF's; missing keys must be none). A family
    with `hf_graphs` gives its own per-graph runners (several graphs, or graphs that are not one
    transformers class's forward); otherwise the transformers class named like the architecture."""

    name = "transformers"
    graph_fn = None

    def load(self):
        from vlexport._deps import available

        if not available("transformers"):
            raise Skip("transformers is not installed (pip install transformers)")
        import torch
        import transformers

        self.torch = torch
        if self.ctx.family.hf_graphs:
            return self._load_family_hook()
        if self.ctx.multi_graph:
            raise Skip(f"family '{self.ctx.family.name}' gives no transformers runner per graph (Family.hf_graphs)")
        arch = self.ctx.architecture
        cls = getattr(transformers, arch, None)
        if cls is None:
            raise Skip(f"transformers {transformers.__version__} has no {arch}")
        cfg = {k: v for k, v in self.ctx.config_dict.items() if k not in ("architectures", "extra", "model_type")}
        hf_cfg = transformers.AutoConfig.for_model(self.ctx.config_dict["model_type"], **cfg)
        ours = self.ctx.reference_module()
        self.model = cls(hf_cfg).eval()
        res = self.model.load_state_dict(ours.state_dict(), strict=False)
        missing = [k for k in res.missing_keys if not k.endswith("position_ids")]
        if missing:
            raise Skip(f"our state dict lacks HF keys {missing[:5]} (mismatched architecture)")
        self.keys_unexpected = list(res.unexpected_keys)

    def _load_family_hook(self):
        import importlib

        module, fn = self.ctx.family.hf_graphs.split(":")
        try:
            fns = getattr(importlib.import_module(module), fn)(self.ctx.reference_module(), self.ctx.config_dict)
        except (ImportError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise Skip(f"transformers runner of {self.ctx.family.name} ({self.ctx.family.hf_graphs}): "
                       f"{type(exc).__name__}: {exc}") from None
        if self.ctx.graph not in fns:
            raise Skip(f"the family's transformers runners cover the graphs {sorted(fns)}, not '{self.ctx.graph}'")
        self.graph_fn = fns[self.ctx.graph]

    def call(self, feeds):
        t = self.torch
        if self.graph_fn is not None:
            with t.inference_mode():
                out = self.graph_fn(**{k: t.from_numpy(v) for k, v in feeds.items()})
            return {k: out[k].numpy() for k in self.ctx.output_names if out.get(k) is not None}
        with t.inference_mode():
            out = self.model(**{k: t.from_numpy(v) for k, v in feeds.items()}, return_dict=True)
        names = [o for o in self.ctx.output_names if getattr(out, o, None) is not None]
        return {k: getattr(out, k).numpy() for k in names}


class RuntimeRunner(Runner):
    """vlexport.load(artifact, backend, precision): the user-facing runtime, wrapper included."""

    def __init__(self, ctx, name, backend, precision, plain: bool = False):
        super().__init__(ctx)
        self.name, self.backend, self.precision = name, backend, precision
        self.plain = plain  # the plain fp32 graph even where the build kept an ORT-fused one

    def load(self):
        from vlexport.errors import VlexportError

        art = self.ctx.artifact
        have = (art.engine_precisions(self.ctx.graph) if self.backend == "tensorrt"
                else art.precisions(self.ctx.graph))
        if self.precision not in have:
            what = "TensorRT engine" if self.backend == "tensorrt" else "graph"
            hint = {"fp16": " (build with --fp16)", "int8": " (build with --int8)"}.get(self.precision, "")
            if self.backend == "tensorrt":
                hint = f" ({art.manifest.get('engine_skipped') or 'build with --fp16 on a machine with TensorRT and a GPU'})"
            raise Skip(f"the artifact has no {self.precision} {what}{hint}")
        if self.plain and not art.has_variant(self.ctx.graph, self.precision, "ort_fused"):
            raise Skip("the artifact has no fused fp32 graph: ort-fp32 is the plain graph")
        if self.backend == "tensorrt":
            from vlexport.runtime.backends import backend_class

            ok, why = backend_class("tensorrt").availability()
            if not ok:
                raise Skip(f"TensorRT backend unavailable: {why}")
        import vlexport

        try:
            opts = ({"intra_op_num_threads": self.ctx.threads, "allow_spinning": False}
                    if self.backend == "onnxruntime" else {})
            if self.plain:
                opts["fused"] = False
            self.model = vlexport.load(art.path, backend=self.backend, precision=self.precision, **opts)
        except (VlexportError, ImportError) as exc:
            raise Skip(f"{type(exc).__name__}: {exc}") from None

    @property
    def graph_backend(self):
        """The backend session of the timed graph (pipelines of several graphs hold one per graph)."""
        return self.model.backends[self.ctx.graph] if self.ctx.multi_graph else self.model.backend

    def call(self, feeds):
        if self.ctx.multi_graph:  # one graph of several: what the pipeline's get_*_features methods do
            g = self.ctx.graph
            out = dict(self.model.run_graph(g, self.model.prepare(feeds, g)))
        else:
            out = dict(self.model(**feeds))
        device_ms = getattr(self.graph_backend, "last_device_ms", None)  # TensorRT: CUDA-event time
        if device_ms is not None:
            self.device_ms.append(device_ms)
        return out


def make_runners(ctx, names) -> list[Runner]:
    table = {"transformers": lambda: TransformersRunner(ctx), "torch": lambda: TorchRunner(ctx),
             "ort-fp32": lambda: RuntimeRunner(ctx, "ort-fp32", "onnxruntime", "fp32"),  # fused where built
             "ort-fp32-plain": lambda: RuntimeRunner(ctx, "ort-fp32-plain", "onnxruntime", "fp32", plain=True),
             "ort-fp16": lambda: RuntimeRunner(ctx, "ort-fp16", "onnxruntime", "fp16"),
             "ort-int8": lambda: RuntimeRunner(ctx, "ort-int8", "onnxruntime", "int8"),
             "tensorrt-fp16": lambda: RuntimeRunner(ctx, "tensorrt-fp16", "tensorrt", "fp16")}
    unknown = [n for n in names if n not in table]
    if unknown:
        from vlexport.errors import ConfigError

        raise ConfigError(f"unknown benchmark backend(s) {unknown}; choose from {list(table)}")
    return [table[n]() for n in names]


# ----------------------------------------------------------------------------------------- context
