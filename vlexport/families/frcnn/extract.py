"""`vlexport regions --images DIR... --out features/`: region features for many images, one .npz each.

The detector is an artifact folder: `--detector PATH` (default engines/frcnn-vg-finetuned, where
`vlexport build --model unc-nlp/frcnn-vg-finetuned` writes it), or a VisualBERT artifact built with
--regions (its regions/ subfolder is used). Images are found as `vlexport embed` finds them
(directories searched recursively, globs, files) and run in batches (--batch-size, at most the
artifact's batch range; default 1, see RegionPipeline.extract), with a progress bar.

Output: for each image, OUT/<name>.npz (its file name without the extension; two images with the
same name is an error), written atomically (a hidden temporary file, renamed), in the layout of the
bottom-up-attention feature tools (MILVLG's bottom-up-attention.pytorch `extract_features.py`), so
`vlexport predict --visual-embeds` and those tools' readers take it:

    x            (N, 2048) float32  region features (N = num_bbox real regions, no padding)
    bbox         (N, 4) float32     boxes x1, y1, x2, y2 in pixels of the original image
    num_bbox     ()  int64          N
    image_h, image_w  () int64      the original image size
    objects_id, objects_conf  (N,)  the best Visual Genome class (0..1599) and its probability
    attrs_id, attrs_conf      (N,)  the best attribute (0..399) and its probability

(the tools keep the last four in one pickled `info` dict; vlexport never writes or reads pickles, so
they are plain arrays here). OUT/index.json lists {image, file, num_bbox} per image and the detector.
An existing .npz is kept and its image skipped (a resumed run), unless --overwrite; nothing else in
OUT is touched. An image that cannot be read is reported and skipped; the run fails only if none worked.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from vlexport.errors import ConfigError, InputError, NumericalError

DEFAULT_DETECTOR = Path("engines") / "frcnn-vg-finetuned"


def add_parsers(sub):
    p = sub.add_parser("regions", help="region features (boxes, classes, 2048-d features) for many images, one .npz "
                                       "each, in the bottom-up-attention layout")
    p.add_argument("--images", nargs="+", required=True, help="image files, folders (searched recursively) or globs")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--detector", type=Path, default=None,
                   help=f"a region detector artifact, or a VisualBERT artifact built with --regions "
                        f"(default {DEFAULT_DETECTOR})")
    p.add_argument("--batch-size", type=int, default=1,
                   help="images per call (default 1: batched images are padded to one size, which changes the "
                        "features near a smaller image's borders)")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt", "torch"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--overwrite", action="store_true", help="replace existing .npz files instead of skipping them")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def _detector_folder(path: Path | None) -> Path:
    path = Path(path or DEFAULT_DETECTOR)
    if (path / "regions" / "manifest.json").is_file():
        return path / "regions"
    if not (path / "manifest.json").is_file():
        raise ConfigError(f"no region detector artifact at '{path}': build one with `vlexport build --model "
                          f"unc-nlp/frcnn-vg-finetuned` (add --random-weights offline), or pass --detector PATH")
    return path


def _write_npz(path: Path, arrays: dict) -> None:
    import io

    from vlexport.fsutil import write_atomic

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_atomic(path, buf.getbuffer())


def extract_regions(images, out, detector=None, batch_size=1, backend="auto", precision="fp32",
                    overwrite=False, progress=True) -> dict:
    """The Python API of `vlexport regions`; returns the index (also written to OUT/index.json)."""
    import vlexport
    from vlexport.embed import _Progress, collect_images
    from vlexport.fsutil import write_json_atomic

    folder = _detector_folder(detector)
    det = vlexport.load(folder, backend=backend, precision=precision)
    if det.artifact.manifest.get("pipeline") != "regions":
        raise ConfigError(f"'{folder}' is a {det.artifact.manifest.get('pipeline')} artifact, not a region detector")
    if batch_size is None or batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    files = collect_images(images)
    if not files:
        raise InputError("--images matched no image files")
    names = {}
    for f in files:
        stem = Path(f).stem
        if stem in names:
            raise InputError(f"two images would write {stem}.npz: '{names[stem]}' and '{f}'; rename one")
        names[stem] = f
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    todo = [f for f in files if overwrite or not (out / f"{Path(f).stem}.npz").exists()]
    size = min(batch_size, det._axes["batch"].max)
    index, skipped = [], []
    t0 = time.perf_counter()
    with _Progress(len(todo), f"regions ({folder.name})", progress) as bar:
        for s in range(0, len(todo), size):
            batch = todo[s:s + size]
            try:
                results = [(batch, det.extract(batch, batch_size=size))]
            except (InputError, NumericalError):  # find the bad image(s): one at a time
                results = []
                for f in batch:
                    try:
                        results.append(([f], det.extract([f])))
                    except (InputError, NumericalError) as exc:
                        skipped.append({"image": f, "error": str(exc)})
                        bar.message(f"skipped {f}: {exc}")
            for group, r in results:
                for i, f in enumerate(group):
                    n = int(r["preds_per_image"][i])
                    h, w = (int(v) for v in r["original_sizes"][i])
                    target = out / f"{Path(f).stem}.npz"
                    _write_npz(target, {"x": r["roi_features"][i, :n], "bbox": r["boxes"][i, :n],
                                        "num_bbox": np.int64(n), "image_h": np.int64(h), "image_w": np.int64(w),
                                        "objects_id": r["obj_ids"][i, :n], "objects_conf": r["obj_probs"][i, :n],
                                        "attrs_id": r["attr_ids"][i, :n], "attrs_conf": r["attr_probs"][i, :n]})
                    index.append({"image": f, "file": target.name, "num_bbox": n})
            bar.advance(len(batch))
    seconds = time.perf_counter() - t0
    if todo and not index:
        raise InputError(f"none of the {len(todo)} images could be read; first error: {skipped[0]['error']}")
    kept = [{"image": f, "file": f"{Path(f).stem}.npz", "num_bbox": None} for f in files if f not in todo]
    summary = {"format": "vlexport-regions/1", "detector": str(folder.resolve()), "backend": det.describe(),
               "precision": precision, "images": index + kept, "skipped": skipped, "seconds": round(seconds, 2),
               "extracted": len(index), "kept_existing": len(kept)}
    write_json_atomic(out / "index.json", summary)
    return summary


def run(args) -> int:
    summary = extract_regions(args.images, args.out, args.detector, args.batch_size, args.backend, args.precision,
                              args.overwrite, progress=not args.quiet)
    if not args.quiet:
        print(f"{summary['extracted']} images -> {args.out} in {summary['seconds']} s"
              + (f" ({summary['kept_existing']} already there, kept)" if summary["kept_existing"] else "")
              + (f"; {len(summary['skipped'])} skipped" if summary["skipped"] else ""))
    return 0
