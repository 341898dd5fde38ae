"""`vlexport predict ARTIFACT --image photo.jpg --text "What is inside the red box?" [--draw box:40,40,200,180]`:
the answer, streamed token by token (greedy or sampling; with --num-beams it prints once at the end)."""

from __future__ import annotations

import sys

from vlexport.errors import InputError


def _one(value, flag, what):
    """--image / --text are shared with other families' predict commands, which take several: here one."""
    values = value if isinstance(value, list) else ([value] if value else [])
    if not values:
        raise InputError(f"{flag} is required: {what}")
    if len(values) != 1:
        raise InputError(f"{flag}: one {what.split(' (')[0]} per call, got {len(values)} "
                         f"(quote a question with spaces)")
    return values[0]


def run(model, args) -> int:
    args.image = _one(args.image, "--image", "the photo to ask about (JPEG, PNG, ...)")
    args.text = _one(args.text, "--text", "the question about the image")
    kw = {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens}
    if args.raw_prompt:  # the whole prompt given: no chat template
        if "<image>" not in args.text:
            raise InputError("--raw-prompt needs an <image> placeholder in --text")
    stream = (args.num_beams or 1) == 1
    shown = []

    def show(text):
        sys.stdout.write(text[len(shown[0]) if shown else 0:] if shown and text.startswith(shown[0]) else
                         ("\r" + text if shown else text))
        sys.stdout.flush()
        shown[:] = [text]

    answer = model.chat(args.image, args.text, draw=args.draw or None, color=args.color,
                        template="{}" if args.raw_prompt else None,
                        streamer=show if stream else None, **kw)
    if stream:
        sys.stdout.write("\n")
    else:
        print(answer)
    return 0
