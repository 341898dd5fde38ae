"""VisionTextDualEncoder (CLIP-style): any vision tower + any text tower, projected into one space.
Two graphs, "vision" (pixel_values -> image_embeds) and "text" (tokens -> text_embeds), driven by the
"dual_encoder" pipeline (get_image_features, get_text_features, HF's forward, zero-shot labels).

    config.py       DualEncoderConfig: two tower configs (vlexport.towers.config) + projection_dim
    model.py        the reference PyTorch model on vlexport.towers (ViT/DeiT/CLIP-vision, BERT/RoBERTa)
    describe.py     the export description of the two graphs
    compose.py      `vlexport build --vision-model A --text-model B`: a dual encoder from two towers
    processor.py    DualEncoderProcessor: the folder's image processor + tokenizer, torch-free
    pipeline.py     the runtime: HF's API on the two graphs, zero-shot classification, batched embedding
    checkpoints.py  public tower configs, composed ids for --random-weights, the tiny built-in model
    predict.py      `vlexport predict PATH --image cat.jpg --labels "a cat,a dog"`
    serve.py        the "image_features" / "text_features" serving endpoints (one tower each)
"""

from vlexport.families import Compose, Family, PredictCommand
from vlexport.families.vision_text_dual_encoder import checkpoints, describe
from vlexport.families.vision_text_dual_encoder.config import DualEncoderConfig


def _processor(folder, weights: str = "checkpoint", config=None):
    from vlexport.families.vision_text_dual_encoder.processor import DualEncoderProcessor

    if weights == "tiny":
        return DualEncoderProcessor.tiny(image_size=checkpoints.tiny_config()["vision_config"]["image_size"])
    return DualEncoderProcessor.from_pretrained(folder, config)


FAMILY = Family(
    name="vision_text_dual_encoder",
    model_types=("vision-text-dual-encoder",),
    architectures=dict(describe.TASKS),
    config_from_dict=DualEncoderConfig.from_dict,
    describe=describe.describe,
    model_module="vlexport.families.vision_text_dual_encoder.model",
    load_processor=_processor,
    checkpoints=checkpoints.CHECKPOINTS,
    tiny=checkpoints.TINY,
    pipelines={"dual_encoder": "vlexport.families.vision_text_dual_encoder.pipeline:DualEncoderPipeline"},
    hf_graphs="vlexport.families.vision_text_dual_encoder.hf_reference:graphs",
    compose=Compose(
        arguments=(
            (("--vision-model",), dict(help="vision tower: folder or hub id (ViT, DeiT, CLIP), composed with "
                                            "--text-model into a dual encoder whose projections are random")),
            (("--text-model",), dict(help="text tower: folder or hub id (BERT, RoBERTa)")),
            (("--projection-dim",), dict(type=int, default=None, help="width of the shared space (default 512)")),
        ),
        run="vlexport.families.vision_text_dual_encoder.compose:compose",
    ),
    predict=PredictCommand(
        arguments=(
            (("--image",), dict(nargs="+", help="image file(s)")),
            (("--labels",), dict(help="zero-shot: comma-separated candidate labels, e.g. 'a cat,a dog,a car'")),
            (("--template",), dict(default="{}", help="zero-shot prompt template, e.g. 'a photo of {}.' (default: the label itself)")),
        ),
        run="vlexport.families.vision_text_dual_encoder.predict:run",
    ),
    serve="vlexport.families.vision_text_dual_encoder.serve:endpoints",
    doc="VisionTextDualEncoder: vision + text towers, two graphs",
)
