"""`vlexport predict DETECTOR --image photo.jpg`: the regions found, as a table (class and attribute
ids with their probabilities, boxes in the photo's pixels). Names are ids: the Visual Genome
1600/400 vocabularies are not embedded (the demo downloads them from bottom-up-attention's repo)."""

from __future__ import annotations

from vlexport.errors import InputError


def run(model, args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    images = args.image or []
    if not images:
        raise InputError("--image is required: one or more photos")
    out = model.extract(images)
    Console(stderr=True, highlight=False).print(f"backend: {escape(model.describe())}")
    console = Console(highlight=False)
    for i, path in enumerate(images):
        n = int(out["preds_per_image"][i])
        table = Table(title=f"{escape(str(path))}: {n} regions (top {min(n, args.top_k)} by class probability)")
        for col in ("class id", "p", "attribute id", "p", "box x1, y1, x2, y2"):
            table.add_column(col, justify="right")
        order = out["obj_probs"][i, :n].argsort()[::-1][:args.top_k]
        for r in order:
            box = ", ".join(f"{v:.0f}" for v in out["boxes"][i, r])
            table.add_row(str(int(out["obj_ids"][i, r])), f"{out['obj_probs'][i, r]:.3f}",
                          str(int(out["attr_ids"][i, r])), f"{out['attr_probs'][i, r]:.3f}", box)
        console.print(table)
    return 0
