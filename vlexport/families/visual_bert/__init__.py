"""VisualBERT (Li et al., 2019): text + region features, six heads. One graph, "model".

    config.py      VisualBertConfig (torch-free)
    model.py       the reference PyTorch model: embeddings -> encoder -> pooler -> heads
    describe.py    the export description of each head (inputs, outputs, axes, dummies, tolerance)
    processor.py   VisualBertProcessor: WordPiece text + region packing (regions.py), torch-free
    checkpoints.py public configs (--random-weights) and the tiny built-in model
    predict.py     `vlexport predict` for VisualBERT artifacts
    flops.py       FLOPs per forward pass (benchmark GFLOP/s)
    serve.py       the "pipeline" serving endpoint (text + region features in, processor on the server)
"""

from pathlib import Path

from vlexport.families import Companion, Family, Option, PredictCommand
from vlexport.families.visual_bert import checkpoints, describe
from vlexport.families.visual_bert.config import VisualBertConfig


def _processor(folder, weights: str = "checkpoint", config=None):
    from vlexport.families.visual_bert.processor import VisualBertProcessor

    proc = VisualBertProcessor.tiny() if weights == "tiny" else VisualBertProcessor.from_pretrained(folder)
    if weights == "artifact" and (Path(folder) / "regions" / "manifest.json").is_file():
        proc.regions = Path(folder) / "regions"  # the detector built with --regions: images in, features out
    return proc


def _flops(config, architecture, sizes):
    from vlexport.families.visual_bert.flops import flops

    return flops(config, architecture, sizes)


FAMILY = Family(
    name="visual_bert",
    model_types=("visual_bert",),
    architectures=dict(describe.TASKS),
    config_from_dict=VisualBertConfig.from_dict,
    describe=describe.describe,
    model_module="vlexport.families.visual_bert.model",
    load_processor=_processor,
    checkpoints=checkpoints.CHECKPOINTS,
    tiny=checkpoints.TINY,
    base_prefix="visual_bert.",
    head_prefixes=("cls.",),
    options=(Option("with_alignment", "add the image_text_alignment input (text positions per region)"),),
    predict=PredictCommand(
        arguments=(
            (("--text",), dict(nargs="+", help="one or more questions / captions")),
            (("--visual-embeds",), dict(help="region features: a .npy (regions, dim) array, or a .npz with "
                                            "a 'features' or 'x' array (bottom-up-attention layout)")),
            (("--image",), dict(nargs="+", help="photo(s): regions come from the artifact's detector (built with "
                                                 "--regions) or the detector artifact given with --regions; one photo "
                                                 "for every --text, or one per --text")),
            (("--regions",), dict(metavar="DETECTOR", help="a region detector artifact folder (default: the "
                                                          "artifact's regions/ folder)")),
            (("--random-regions",), dict(type=int, metavar="N", help="no features at hand: use N random regions "
                                         "(the answers are then meaningless; for smoke tests only)")),
        ),
        run="vlexport.families.visual_bert.predict:run",
    ),
    flops=_flops,
    serve="vlexport.families.visual_bert.serve:endpoints",
    # LXMERT's 3129 VQA answers (github.com/airsplay/lxmert data/vqa/trainval_label2ans.json, MIT), the
    # vocabulary of the VisualBERT and LXMERT VQA heads: put it beside the checkpoint, or pass --labels
    label_files=("trainval_label2ans.json",),
    companion=Companion("regions", "region detector to build into the artifact's regions/ folder (e.g. "
                        "unc-nlp/frcnn-vg-finetuned): then predict --image and processor(images=...) work from pixels",
                        check="vlexport.families.visual_bert.from_pixels:check_detector"),
    doc="VisualBERT: text + detector region features (2048-d for VQA)",
)
