"""ViLT's processor endpoint for `vlexport serve` / `triton-repo`: "pipeline".

text (UTF-8) + image(s) (encoded file bytes: one per text, or config.num_images for NLVR2) in; the
ViltProcessor runs on the server (resize, pad, pixel_mask; WordPiece); the head's outputs out.
"""

from __future__ import annotations

from vlexport.errors import InputError
from vlexport.serving.endpoints import (Endpoint, Tensor, check_lengths, decode_images, graph_endpoint, naming,
                                        nonempty_texts)


def endpoints(artifact) -> list[Endpoint]:
    (graph,) = artifact.graph_names
    pixels = next(s for s in artifact.inputs(graph) if s.name == "pixel_values")
    # (batch, images, 3, H, W) for NLVR2 (config.num_images per statement), (batch, 3, H, W) otherwise
    n_images = int(pixels.dims[1]) if len(pixels.dims) == 5 else 1
    axes = artifact.axes

    def run(pipeline, batch):
        texts = nonempty_texts("text", batch["text"])
        images = [img for row in decode_images("image", batch["image"]) for img in row]
        proc = pipeline.processor
        # serving refuses what predict would truncate: a client should know its text was cut
        limit = min(axes["text"].max, proc.max_length)
        # tokenized here and again by proc below (cheap next to the images), cut at one past the limit:
        # enough to tell a text too long
        with naming("text"):
            lengths = proc.tokenizer(texts, truncation=True, max_length=limit + 1)["attention_mask"].sum(axis=1)
        check_lengths("text", lengths, limit)
        with naming("image"):  # the texts are checked, so what fails in here is an image
            # the same call predict makes (images_per_text for NLVR2), on the decoded images
            enc = proc(images=images, text=texts, truncation=False, max_length=limit, images_per_text=n_images)
        h, w = enc["pixel_values"].shape[-2:]
        for side, n in (("height", h), ("width", w)):
            if not axes[side].contains(n):  # the graph would name 'pixel_values'
                raise InputError(f"input 'image': the images resize to {side} {n}, outside the {axes[side].describe()} "
                                 f"this artifact was built for (rebuild with --max-{side} {n})")
        return dict(pipeline(**enc))

    return [Endpoint(
        "pipeline",
        inputs=(Tensor("text", "bytes", (1,), doc="a question / statement / caption, UTF-8"),
                Tensor("image", "bytes", (n_images,), doc=f"{n_images} encoded image file(s) (JPEG, PNG, ...)")),
        outputs=graph_endpoint(artifact, graph).outputs,
        run=run, max_batch=axes["batch"].max, graphs=(graph,),
        doc=f"text + image(s) -> {artifact.architecture} outputs (processor on the server)")]
