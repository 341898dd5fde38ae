"""The dual encoder's processor endpoints for `vlexport serve` / `triton-repo`: one per tower.

"image_features": image file bytes -> image_embeds; "text_features": UTF-8 text -> text_embeds. Both
are the projected, unnormalized features of get_image_features / get_text_features (the graphs'
outputs), so a client can index them and normalize as it likes. Each endpoint needs one graph: the
server loads only it, as the generic Pipeline, so run() calls the graph itself (prepare + run_graph)
rather than the dual-encoder pipeline's methods.
"""

from __future__ import annotations

from vlexport.serving.endpoints import Endpoint, Tensor, check_lengths, decode_images, naming, nonempty_texts


def endpoints(artifact) -> list[Endpoint]:
    dim = {o.name: int(o.dims[-1]) for g in ("vision", "text") for o in artifact.outputs(g)}
    text_inputs = [s.name for s in artifact.inputs("text")]
    text_max, max_batch = artifact.axes["text"].max, artifact.axes["batch"].max

    def image_features(pipeline, batch):
        images = [row[0] for row in decode_images("image", batch["image"])]
        with naming("image"):
            px = pipeline.processor.image_processor(images)["pixel_values"]
        return {"image_embeds": pipeline.run_graph("vision", pipeline.prepare({"pixel_values": px}, "vision"))
                ["image_embeds"]}

    def text_features(pipeline, batch):
        texts = nonempty_texts("text", batch["text"])
        with naming("text"):
            # cut at one past the profile: a text that fits is encoded whole, a longer one is told apart
            enc = pipeline.processor.tokenizer(texts, padding=True, truncation=True, max_length=text_max + 1)
        # refused, not truncated as embed_texts does: the client should know its text did not fit
        check_lengths("text", enc["attention_mask"].sum(axis=1), text_max)
        feeds = {k: enc[k] for k in text_inputs if k in enc}  # a RoBERTa tower takes no token_type_ids
        return {"text_embeds": pipeline.run_graph("text", pipeline.prepare(feeds, "text"))["text_embeds"]}

    return [
        Endpoint("image_features", (Tensor("image", "bytes", (1,), doc="an encoded image file (JPEG, PNG, ...)"),),
                 (Tensor("image_embeds", "float32", (dim["image_embeds"],)),), image_features, max_batch,
                 graphs=("vision",), doc="image -> projected image features (not normalized)"),
        Endpoint("text_features", (Tensor("text", "bytes", (1,), doc="UTF-8 text"),),
                 (Tensor("text_embeds", "float32", (dim["text_embeds"],)),), text_features, max_batch,
                 graphs=("text",), doc="text -> projected text features (not normalized)"),
    ]
