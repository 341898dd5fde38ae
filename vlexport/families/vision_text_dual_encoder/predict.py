"""`vlexport predict ARTIFACT --image cat.jpg --labels "a cat,a dog,a car"`: zero-shot classification.

Prints, per image, the labels ranked by probability (softmax over exp(logit_scale) * cosine between
the image and each "--template"-filled label, as CLIP-style zero-shot classification does).
Batched embedding of many files is `vlexport embed` (vlexport/embed.py).
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import InputError


def parse_labels(text) -> list[str]:
    labels = [x.strip() for x in (text or "").split(",")]
    if not text or any(not x for x in labels):
        raise InputError(f"--labels must be comma-separated, non-empty labels, e.g. 'a cat,a dog'; got {text!r}")
    return labels


def run(model, args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    images = args.image or []
    if not images:
        raise InputError("--image is required: the image(s) to classify (JPEG, PNG, ...)")
    labels = parse_labels(args.labels)
    template = args.template or "{}"
    probs = model.zero_shot(images, labels, template=template)
    out = Console(highlight=False)
    k = min(args.top_k, len(labels))
    for path, row in zip(images, probs):
        table = Table(title=escape(f"{path}: zero-shot over {len(labels)} labels"))
        table.add_column("label")
        table.add_column("probability", justify="right")
        for i in np.argsort(-row, kind="stable")[:k]:
            table.add_row(escape(labels[i]), f"{row[i]:.4f}")
        out.print(table)
    return 0
