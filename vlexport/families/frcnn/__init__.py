"""The region detector of the VisualBERT / LXMERT demos (`unc-nlp/frcnn-vg-finetuned`): a Visual
Genome Faster R-CNN, ResNet-101 C4. Two graphs, "backbone" and "roi_heads", driven by the "regions"
pipeline (anchors, NMS, RoI pooling and region selection in numpy between them).

    config.py      FrcnnConfig (torch-free; reads the checkpoint's config.yaml)
    model.py       the reference PyTorch model: ResNet trunk -> RPN head; RoI heads (res5 + predictor)
    boxes.py       the numpy steps: anchors, box deltas, NMS, RoI max pooling, proposal/region selection
    describe.py    the export description of the two graphs
    processor.py   FrcnnImageProcessor: the demo's Preprocess (resize, BGR, mean, pad), torch-free
    pipeline.py    RegionPipeline: the demo's forward on the graphs; extract() over many images
    predict.py     `vlexport predict DETECTOR --image photo.jpg`: the regions as a table
    extract.py     `vlexport regions --images DIR --out features/`: one bottom-up-attention .npz per image
    serve.py       the "regions" serving endpoint (image bytes in, regions out)
    checkpoints.py the public config (--random-weights) and the tiny built-in detector
"""

from pathlib import Path

from vlexport.families import Family, PredictCommand
from vlexport.families.frcnn import checkpoints, describe
from vlexport.families.frcnn.config import FrcnnConfig


def _processor(folder, weights: str = "checkpoint", config=None):
    from vlexport.families.frcnn.processor import FrcnnImageProcessor, read_folder_config

    if config is None:
        config = read_folder_config(Path(folder)) if folder is not None else FrcnnConfig.from_dict(
            checkpoints.tiny_config() if weights == "tiny" else checkpoints.public_config())
    return FrcnnImageProcessor(config)


def _folder_config(folder: Path):
    """A checkpoint folder with the demo's config.yaml (and no config.json) -> our config dict."""
    if (folder / "config.yaml").is_file():
        from vlexport.families.frcnn.processor import read_yaml_config

        return read_yaml_config(folder / "config.yaml")
    return None


FAMILY = Family(
    name="frcnn",
    model_types=("frcnn",),
    architectures=dict(describe.TASKS),
    config_from_dict=FrcnnConfig.from_dict,
    describe=describe.describe,
    model_module="vlexport.families.frcnn.model",
    load_processor=_processor,
    checkpoints=checkpoints.CHECKPOINTS,
    tiny=checkpoints.TINY,
    pipelines={"regions": "vlexport.families.frcnn.pipeline:RegionPipeline"},
    folder_config=_folder_config,
    serve="vlexport.families.frcnn.serve:endpoints",
    commands="vlexport.families.frcnn.extract:add_parsers",
    predict=PredictCommand(arguments=((("--image",), dict(nargs="+", help="photo(s)")),),
                           run="vlexport.families.frcnn.predict:run"),
    doc="Faster R-CNN (Visual Genome, ResNet-101 C4): region features for VisualBERT",
)
