"""VipLlava's processor endpoint for `vlexport serve` / `triton-repo`: "chat".

image file bytes + a question (UTF-8) (+ optional max_new_tokens / num_beams per row) in; the prompt
format, processor, generate() and decoding run on the server; the answer out, as
`pipeline.chat(image, question, ...)` gives it. Visual prompts (a red box, ...) are drawn by the client.
"""

from __future__ import annotations

from vlexport.errors import InputError
from vlexport.serving.endpoints import (Endpoint, Tensor, decode_images, decode_ints, naming, nonempty_texts,
                                        row_groups, text_tensor)

# new tokens when a request names none and the generation config neither: chat()'s own default is HF's
# max_length=20, which counts the prompt, so it leaves nothing to generate after a vip-llava prompt
DEFAULT_NEW_TOKENS = 32


def endpoints(artifact) -> list[Endpoint]:
    if artifact.optional_file("tokenizer.json") is None:
        return []  # no tokenizer (a --random-weights build): no prompts to make, only the raw graphs
    axes = artifact.axes
    past, text_max = axes["past"].max, axes["text"].max
    rows = min(axes["batch"].max, axes["images"].max)  # decoder rows (prompts x beams), one image each

    def run(pipeline, batch):
        images = [row[0] for row in decode_images("image", batch["image"])]
        questions = nonempty_texts("text", batch["text"])
        n, proc = len(images), pipeline.processor
        for i, q in enumerate(questions):
            if proc.image_token in q:  # the prompt would then hold two placeholders for one image
                raise InputError(f"input 'text'[{i}] holds {proc.image_token}; the server puts the image in the prompt")
        try:
            enc = proc(text=proc.prompt(questions), images=images)  # left-padded, as generate() wants
        except InputError as exc:  # a prompt's or an image's fault: the images alone tell (only on this path)
            with naming("image"):
                proc.image_processor(images)
            raise InputError(f"input 'text': {exc}") from None
        ids, mask, px = enc["input_ids"], enc["attention_mask"], enc["pixel_values"]
        lengths = [int(v) for v in mask.sum(axis=1)]  # each row's prompt, image tokens included
        for i, p in enumerate(lengths):
            if p > text_max or p >= past:
                raise InputError(f"input 'text'[{i}]: the prompt is {p} tokens with the image's, more than this "
                                 f"artifact takes ({min(text_max, past - 1)}; rebuild with larger --max-text-len "
                                 f"and --max-past-len)")
        if "max_new_tokens" in batch:
            new = decode_ints("max_new_tokens", batch["max_new_tokens"], 1, None)
            for i, (p, m) in enumerate(zip(lengths, new)):
                if p + m > past:
                    raise InputError(f"input 'max_new_tokens'[{i}] is {m}; with its {p}-token prompt at most "
                                     f"{past - p} fit the KV cache of {past} positions (rebuild with --max-past-len)")
        else:  # as many as the cache leaves room for, up to the default: the same for a row alone or batched
            want = int(pipeline.generation_defaults().get("max_new_tokens") or DEFAULT_NEW_TOKENS)
            new = [min(want, past - p) for p in lengths]
        default_beams = int(pipeline.generation_defaults().get("num_beams") or 1)  # as chat(): greedy unless set
        beams = (decode_ints("num_beams", batch["num_beams"], 1, rows, f"the decoder runs at most {rows} rows: "
                             f"prompts x beams") if "num_beams" in batch else [default_beams] * n)
        answers = [None] * n
        # Batched: rows of equal settings share one generate() call, left-padded to their longest prompt
        # (positions count real tokens, padded cache slots stay masked): the same answers as one row at
        # a time (tested), beam search included. Rows with other settings run in their own calls.
        for (m, b), part in row_groups(list(zip(new, beams)), lambda key: rows // key[1]):
            width = max(lengths[i] for i in part)  # drop the padding only the other groups' rows needed
            out = pipeline.generate(input_ids=ids[part, -width:], attention_mask=mask[part, -width:],
                                    pixel_values=px[part], max_new_tokens=m, num_beams=b)
            for i, a in zip(part, proc.batch_decode(out[:, width:], skip_special_tokens=True)):
                answers[i] = a.strip()
        return {"generated_text": text_tensor(answers)}

    return [Endpoint(
        "chat",
        inputs=(Tensor("image", "bytes", (1,), doc="an encoded image file (JPEG, PNG, ...), prompts drawn on it"),
                Tensor("text", "bytes", (1,), doc="the question, UTF-8 (the server adds the chat prompt)"),
                Tensor("max_new_tokens", "int32", (1,), optional=True,
                       doc=f"tokens to generate at most (default {DEFAULT_NEW_TOKENS}, or what the cache leaves)"),
                Tensor("num_beams", "int32", (1,), optional=True, doc="beam search width (default: greedy)")),
        outputs=(Tensor("generated_text", "bytes", (1,), doc="the answer, UTF-8"),),
        run=run, max_batch=axes["batch"].max, graphs=tuple(artifact.graph_names),
        doc="image + question -> the answer (prompt, processor, generate and decoding on the server)")]
