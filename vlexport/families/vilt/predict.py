"""`vlexport predict ARTIFACT --image photo.jpg --text "How many cats are there?"` for ViLT artifacts.

Question answering prints the top answers (sigmoid scores, as ViLT was trained with a binary
cross-entropy per answer); NLVR2 takes two images and prints True/False probabilities; retrieval
scores every caption against one image, in batches; masked LM fills each [MASK] of the text.
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import InputError


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _table(title, cols, rows):
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title))
    for c in cols:
        t.add_column(c, justify="right" if c in ("score", "probability", "logit") else "left")
    for r in rows:
        t.add_row(*(escape(str(x)) for x in r))
    return t


def run(model, args) -> int:
    from rich.console import Console
    from rich.markup import escape

    texts = args.text or []
    images = args.image or []
    if not texts:
        raise InputError("--text is required: a question, statement, caption(s) or a text with [MASK]")
    if any(not t.strip() for t in texts):
        raise InputError("--text must not be empty")
    if not images:
        raise InputError("--image is required: ViLT answers about an image (a path to a JPEG/PNG)")
    arch = model.artifact.architecture
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    proc = model.processor
    k = args.top_k
    if arch == "ViltForImagesAndTextClassification":
        n = model.config.get("num_images", 2)
        if len(images) != n:
            raise InputError(f"--image: this NLVR2 model compares {n} images per statement; got {len(images)}")
        for text in texts:
            enc = proc(images=images, text=[text], images_per_text=n)
            probs = _softmax(model(**enc).logits)[0]
            labels = model.id2label or {0: "False", 1: "True"}
            out.print(_table(text, ["answer", "probability"], [(labels.get(i, str(i)), f"{p:.4f}")
                                                            for i, p in enumerate(probs)]))
    elif arch == "ViltForImageAndTextRetrieval":
        if len(images) != 1:
            raise InputError(f"--image: retrieval scores the captions against one image; got {len(images)}")
        batch = model.artifact.axes["batch"].max
        scores = []
        for i in range(0, len(texts), batch):  # one image against many captions, in batches
            chunk = texts[i:i + batch]
            enc = proc(images=images * len(chunk), text=chunk)
            scores += [float(s) for s in model(**enc).logits[:, 0]]
        order = np.argsort(-np.asarray(scores), kind="stable")[:k]
        out.print(_table(f"captions for {images[0]}", ["caption", "score"], [(texts[j], f"{scores[j]:.4f}")
                                                                           for j in order]))
    elif arch == "ViltForMaskedLM":
        for text in texts:
            enc = proc(images=images[:1], text=[text])
            ids = enc["input_ids"][0]
            where = np.flatnonzero(ids == proc.mask_token_id)
            if not where.size:
                raise InputError(f"--text {text!r} has no [MASK] token to fill")
            logits = model(**enc).logits[0]
            rows = []
            for pos in where:
                best = np.argsort(-logits[pos], kind="stable")[:k]
                rows.append((int(pos), ", ".join(proc.convert_ids_to_tokens([int(b)])[0] for b in best)))
            out.print(_table(text, ["position", f"top-{k} tokens"], rows))
    elif arch == "ViltForQuestionAnswering":
        if len(images) not in (1, len(texts)):
            raise InputError(f"--image: give one image, or one per --text; got {len(images)} for {len(texts)}")
        enc = proc(images=images * len(texts) if len(images) == 1 else images, text=texts)
        logits = model(**enc).logits
        for text, answers in zip(texts, model.top_answers(logits, k)):
            out.print(_table(text, ["answer", "score"], [(label, f"{_sigmoid(s):.4f}") for label, s in answers]))
    else:
        enc = proc(images=images[:1] * len(texts), text=texts)
        for name, value in model(**enc).items():
            print(f"{name}: shape {tuple(value.shape)} {value.dtype}")
    err.print(f"backend: {escape(model.describe())}")
    return 0
