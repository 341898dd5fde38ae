"""`vlexport predict ARTIFACT --text ... --visual-embeds regions.npy` for VisualBERT artifacts."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np

from vlexport.errors import InputError

MAX_FEATURE_BYTES = 1 << 30  # a region-feature file larger than this is refused before it is read


def read_regions(path) -> np.ndarray:
    """Region features from a .npy file (one (regions, dim) array) or a .npz archive holding a
    'features' or 'x' array (the bottom-up-attention layout) or exactly one array. Never unpickles;
    the header is checked before the data is read, so a huge or foreign file fails fast."""
    path = Path(path)
    what = f"--visual-embeds '{path}'"
    if not path.is_file():
        raise InputError(f"{what} is not a readable .npy file: no such file")
    if path.stat().st_size > MAX_FEATURE_BYTES:
        raise InputError(f"{what} is {path.stat().st_size / 2**30:.1f} GiB; region features for one image are "
                         f"kilobytes to a few MB (limit {MAX_FEATURE_BYTES >> 20} MiB)")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"PK") and zipfile.is_zipfile(path):
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.keys())
                key = next((k for k in ("features", "x") if k in keys), keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise InputError(f"{what} is a .npz archive with arrays {keys}; expected one named 'features' or "
                                     f"'x' (regions, dim), or a single array")
                arr = npz[key]
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{what} is not a readable .npz archive of numeric arrays ({type(exc).__name__})") from None
    elif magic == b"\x93NUMPY":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            if "pickle" in str(exc):  # numpy's own text names allow_pickle: never hint at unpickling a file
                raise InputError(f"{what} holds Python objects (an object array), not numbers; vlexport never "
                                 f"unpickles input files. Save the features as a float array") from None
            raise InputError(f"{what} is a damaged or non-numeric .npy file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:120]})") from None
    else:
        raise InputError(f"{what} is not a readable .npy file (it does not start with the .npy header); pass a "
                         f"(regions, dim) float array saved with numpy.save, or a .npz with a 'features' array")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what} holds {arr.dtype} values; expected float region features")
    return arr.astype(np.float32, copy=False)


def run(model, args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    texts = args.text or []
    if not texts:
        raise InputError("--text is required: one or more questions or captions")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise InputError(f"--text number {empty[0] + 1} is empty; give a question or caption")
    dim = model.config["visual_embedding_dim"]
    warning = None
    mask = None
    images = getattr(args, "image", None) or []
    given = [name for name, v in (("--image", images), ("--visual-embeds", args.visual_embeds),
                                  ("--random-regions", args.random_regions)) if v]
    if len(given) > 1:
        raise InputError(f"give one of --image, --visual-embeds or --random-regions, not {' and '.join(given)}")
    if getattr(args, "regions", None) and not images:
        raise InputError("--regions (a detector artifact) is used with --image")
    if images:
        if len(images) not in (1, len(texts)):
            raise InputError(f"got {len(images)} --image files for {len(texts)} --text: give one photo, or one per text")
        from vlexport.families.visual_bert.from_pixels import load_detector, regions_from_images

        detector = load_detector(args.regions or Path(model.artifact.path) / "regions")
        visual, mask, found = regions_from_images(detector, images, dim)
        if len(images) == 1 and len(texts) > 1:
            visual, mask = np.repeat(visual, len(texts), axis=0), np.repeat(mask, len(texts), axis=0)
        Console(stderr=True, highlight=False).print(
            f"regions: {', '.join(str(int(n)) for n in found['preds_per_image'])} per image from "
            f"{escape(str(detector.artifact.path))} ({escape(detector.describe())})")
    elif args.visual_embeds:
        visual = read_regions(args.visual_embeds)
    elif args.random_regions:
        if args.random_regions < 1:
            raise InputError(f"--random-regions must be >= 1, got {args.random_regions}")
        visual = np.random.default_rng(0).standard_normal((args.random_regions, dim)).astype(np.float32)
        warning = (f"RANDOM regions ({args.random_regions} x {dim}, --random-regions): these answers say nothing "
                   f"about any image")
    else:
        raise InputError("--visual-embeds is required: VisualBERT answers from detector region features "
                         f"(a (regions, {dim}) .npy array). To smoke-test without features, pass --random-regions 36")
    if visual.ndim == 2 and len(texts) > 1:  # one image's regions, several questions about it
        visual = np.broadcast_to(visual, (len(texts), *visual.shape))
    inputs = model.processor(text=texts, visual_embeds=visual, visual_attention_mask=mask, return_tensors="np")
    outputs = model(**inputs)
    err = Console(stderr=True, highlight=False)
    err.print(f"backend: {escape(model.describe())}")
    if warning:
        err.print(f"[bold red]warning:[/bold red] {escape(warning)}")
    out = Console(highlight=False)
    if "logits" in outputs and outputs.logits.ndim == 2:
        for text, answers in zip(texts, model.top_answers(outputs.logits, args.top_k)):
            table = Table(title=escape(text) + ("  [red](random regions)[/red]" if warning else ""))
            table.add_column("answer")
            table.add_column("logit", justify="right")
            for label, score in answers:
                table.add_row(escape(label), f"{score:.4f}")
            out.print(table)
    else:
        for name, value in outputs.items():
            print(f"{name}: shape {tuple(value.shape)} {value.dtype}")
    if warning:
        print("(random regions: see the warning on stderr)", file=sys.stdout)
    return 0
