"""VisualBERT's processor endpoint for `vlexport serve` / `triton-repo`: "pipeline".

text (UTF-8) + visual_embeds (the image's detector region features, (regions, visual_embedding_dim))
in; the WordPiece processor runs on the server; the head's outputs (HF names, e.g. `logits`) out.
The raw "model" endpoint (tensors in) is made generically beside it.
"""

from __future__ import annotations

import numpy as np

from vlexport.serving.endpoints import Endpoint, Tensor, check_lengths, graph_endpoint, naming, nonempty_texts

# what VisualBertProcessor(text=..., visual_embeds=...) produces
MADE = {"input_ids", "token_type_ids", "attention_mask", "visual_embeds", "visual_token_type_ids",
        "visual_attention_mask"}


def endpoints(artifact) -> list[Endpoint]:
    (graph,) = artifact.graph_names
    specs = artifact.inputs(graph)
    # Multiple choice (a choices axis per text), --with-alignment (image_text_alignment) and region-to-phrase
    # (region_to_phrase_position) need inputs one text + one region set cannot give: such artifacts are
    # served through their raw graph endpoint only, rather than by an endpoint that fails on every call.
    if "choices" in artifact.axes or any(s.name not in MADE and s.required and s.default is None for s in specs):
        return []
    dim = int(artifact.config["visual_embedding_dim"])
    text_max = artifact.axes["text"].max

    def run(pipeline, batch):
        texts = nonempty_texts("text", batch["text"])
        visual = np.asarray(batch["visual_embeds"], dtype=np.float32)
        with naming("text"):
            # cut at one past the profile: enough to tell a text too long (and no tokenizer warning per request)
            enc = pipeline.processor(text=texts, visual_embeds=visual, truncation=True, max_length=text_max + 1)
        # the graph would refuse a long text too, but naming input_ids; the client sent 'text'
        check_lengths("text", enc["attention_mask"].sum(axis=1), text_max)
        return dict(pipeline(**enc))  # region-count and NaN errors already name 'visual_embeds'

    return [Endpoint(
        "pipeline",
        inputs=(Tensor("text", "bytes", (1,), doc="a question / caption / statement, UTF-8"),
                Tensor("visual_embeds", "float32", (-1, dim), doc=f"the image's region features (regions, {dim})")),
        outputs=graph_endpoint(artifact, graph).outputs,
        run=run, max_batch=artifact.axes["batch"].max, graphs=(graph,),
        doc=f"text + region features -> {artifact.architecture} outputs (processor on the server)")]
