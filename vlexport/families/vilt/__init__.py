"""ViLT (Kim et al., 2021): one transformer over text tokens and raw image patches (no detector, no
CNN backbone), six heads (base model, masked LM, VQA, NLVR2, retrieval, token classification).
One graph, "model", with dynamic batch, text, image height and width (multiples of the patch).

    config.py           ViltConfig (torch-free)
    model.py            the reference PyTorch model: text + patch embeddings -> pre-LN encoder -> heads
    describe.py         the export description of each head (inputs, outputs, axes, dummies, tolerance)
    image_processor.py  ViltImageProcessor (resize, rescale, normalize, pad, pixel_mask), torch-free
    processor.py        ViltProcessor: BERT WordPiece text (vlexport.processing.bert_text) + images
    checkpoints.py      public dandelin/vilt-b32-* configs (--random-weights) and the tiny built-in model
    predict.py          `vlexport predict --image ... --text ...` for ViLT artifacts
    serve.py            the "pipeline" serving endpoint (text + image bytes in, processor on the server)
"""

from vlexport.families import Family, PredictCommand
from vlexport.families.vilt import checkpoints, describe
from vlexport.families.vilt.config import ViltConfig


def _processor(folder, weights: str = "checkpoint", config=None):
    from vlexport.families.vilt.processor import ViltProcessor

    if weights == "tiny":
        return ViltProcessor.tiny(image_size=checkpoints.tiny_config()["image_size"])
    return ViltProcessor.from_pretrained(folder)


FAMILY = Family(
    name="vilt",
    model_types=("vilt",),
    architectures=dict(describe.TASKS),
    config_from_dict=ViltConfig.from_dict,
    describe=describe.describe,
    model_module="vlexport.families.vilt.model",
    load_processor=_processor,
    checkpoints=checkpoints.CHECKPOINTS,
    tiny=checkpoints.TINY,
    base_prefix="vilt.",
    head_prefixes=("mlm_score.", "classifier.", "rank_output."),
    predict=PredictCommand(
        arguments=(
            (("--text",), dict(nargs="+", help="one or more questions / captions / statements")),
            (("--image",), dict(nargs="+", help="image file(s) (JPEG, PNG, ...); NLVR2 takes two")),
        ),
        run="vlexport.families.vilt.predict:run",
    ),
    serve="vlexport.families.vilt.serve:endpoints",
    doc="ViLT: text + raw image patches",
)
