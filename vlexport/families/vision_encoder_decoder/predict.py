"""`vlexport predict ARTIFACT --image photo.jpg [--num-beams 4] [--max-new-tokens 30] [--stream]`:
the generated caption (or OCR text) of each image."""

from __future__ import annotations

import sys

from vlexport.errors import InputError


def run(model, args) -> int:
    images = args.image or []
    if not images:
        raise InputError("--image is required: the image(s) to caption (JPEG, PNG, ...)")
    kw = {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens}
    if args.stream:
        if len(images) != 1 or (args.num_beams or 1) > 1:
            raise InputError("--stream prints one image's tokens as they come: pass one --image and no --num-beams")
        proc = model.processor
        px = proc(images=images)["pixel_values"]
        seen = []

        def show(tokens):
            seen.append(int(tokens[0]))
            text = proc.decode(seen, skip_special_tokens=True)
            sys.stdout.write("\r" + text)
            sys.stdout.flush()

        model.generate(pixel_values=px, streamer=show, **kw)
        sys.stdout.write("\n")
        return 0
    for path, text in zip(images, model.caption(images, **kw)):
        print(f"{path}: {text}")
    return 0
