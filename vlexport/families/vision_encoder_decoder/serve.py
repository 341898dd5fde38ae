"""The captioner's processor endpoint for `vlexport serve` / `triton-repo`: "caption".

image file bytes (+ optional max_new_tokens / num_beams per row) in; the image processor, generate()
and decoding run on the server; the generated text out, as `pipeline.caption([image], ...)` gives it.
"""

from __future__ import annotations

from vlexport.serving.endpoints import (Endpoint, Tensor, decode_images, decode_ints, naming, row_groups,
                                        text_tensor)


def endpoints(artifact) -> list[Endpoint]:
    if artifact.optional_file("tokenizer.json") is None:
        return []  # generated ids cannot become text here: only the raw graph endpoints are offered
    axes = artifact.axes
    room = axes["past"].max - 1  # the decoder start token takes the first cache slot
    rows = axes["batch"].max  # decoder rows: images x beams

    def run(pipeline, batch):
        images = [row[0] for row in decode_images("image", batch["image"])]
        n = len(images)
        new = (decode_ints("max_new_tokens", batch["max_new_tokens"], 1, room,
                           f"the KV cache holds {room + 1} positions, the start token included")
               if "max_new_tokens" in batch else [None] * n)  # None: the artifact's generation config
        default_beams = int(pipeline.generation_defaults().get("num_beams") or 1)
        beams = (decode_ints("num_beams", batch["num_beams"], 1, rows, f"the decoder runs at most {rows} rows: "
                             f"images x beams") if "num_beams" in batch else [default_beams] * n)
        with naming("image"):  # each image is resized on its own: processing them together changes nothing
            px = pipeline.processor(images=images)["pixel_values"]
        texts = [None] * n
        # one generate() takes one setting for all its rows, so rows asking for different ones run apart;
        # rows of one setting are batched (their decoding is independent, as in HF: the same tokens)
        for (m, b), part in row_groups(list(zip(new, beams)), lambda key: rows // key[1]):
            ids = pipeline.generate(pixel_values=px[part], max_new_tokens=m, num_beams=b)
            for i, t in zip(part, pipeline.processor.batch_decode(ids, skip_special_tokens=True)):
                texts[i] = t
        return {"generated_text": text_tensor(texts)}

    return [Endpoint(
        "caption",
        inputs=(Tensor("image", "bytes", (1,), doc="an encoded image file (JPEG, PNG, ...)"),
                Tensor("max_new_tokens", "int32", (1,), optional=True,
                       doc=f"tokens to generate at most, 1..{room} (default: the generation config's)"),
                Tensor("num_beams", "int32", (1,), optional=True, doc="beam search width (default: greedy)")),
        outputs=(Tensor("generated_text", "bytes", (1,), doc="the caption, UTF-8"),),
        run=run, max_batch=rows, graphs=tuple(artifact.graph_names),
        doc="image -> generated caption (processor, generate and decoding on the server)")]
