"""VipLlava (llava-hf/vip-llava-7b-hf): a CLIP vision tower whose hidden states from several layers
are projected into a Llama decoder; answers questions about images with drawn visual prompts (a red
box, an arrow, a scribble). Three graphs, "vision", "embed" and "decoder" (KV-cached, written
layer by layer), driven by the "chat" pipeline (vlexport.runtime.generation: greedy, beam search,
sampling, streaming; numpy, no torch).

    config.py       VipLlavaConfig: CLIP vision + Llama text configs, feature layers, image token
    model.py        the reference PyTorch model (vlexport.towers.vit + vlexport.towers.llama)
    describe.py     the export description of the three graphs
    processor.py    CLIP images at 336 px + the Llama tokenizer, <image> expansion, the prompt format
    draw.py         VipLlava-style visual prompts drawn with Pillow (box, ellipse, arrow, scribble)
    pipeline.py     the runtime: generate() / chat() on the three graphs
    checkpoints.py  llava-hf/vip-llava-7b-hf's config, the tiny built-in VipLlava
    predict.py      `vlexport predict PATH --image photo.jpg --text "..." --draw box:...` streams the answer
    serve.py        the "chat" serving endpoint (image bytes + question in, the answer out)
"""

from vlexport.families import Family, PredictCommand
from vlexport.families.vip_llava import checkpoints, describe
from vlexport.families.vip_llava.config import VipLlavaConfig


def _processor(folder, weights: str = "checkpoint", config=None):
    from pathlib import Path

    from vlexport.families.vip_llava.processor import VipLlavaImageProcessorOnly, VipLlavaProcessor

    if weights == "tiny":
        v = VipLlavaConfig.from_dict(checkpoints.tiny_config()).vision_config
        return VipLlavaProcessor.tiny(image_size=v.image_size, patch_size=v.patch_size)
    if folder is None or not (Path(folder) / "tokenizer.json").is_file():  # e.g. a --random-weights build
        return VipLlavaImageProcessorOnly.from_pretrained(folder)
    return VipLlavaProcessor.from_pretrained(folder, config)


FAMILY = Family(
    name="vip_llava",
    model_types=("vipllava",),
    architectures=dict(describe.TASKS),
    config_from_dict=VipLlavaConfig.from_dict,
    describe=describe.describe,
    model_module="vlexport.families.vip_llava.model",
    load_processor=_processor,
    checkpoints=checkpoints.CHECKPOINTS,
    tiny=checkpoints.TINY,
    pipelines={"chat": "vlexport.families.vip_llava.pipeline:VipLlavaPipeline"},
    predict=PredictCommand(
        arguments=(
            (("--image",), dict(help="the image file")),
            (("--text",), dict(help="the question (put into the checkpoint's chat prompt)")),
            (("--draw",), dict(nargs="*", default=[], help="visual prompts drawn on the image first: "
                               "box:x0,y0,x1,y1 ellipse:x0,y0,x1,y1 arrow:x0,y0,x1,y1 scribble:x0,y0,x1,y1,...")),
            (("--color",), dict(default="red", help="colour of the drawn prompts (a name or #rrggbb)")),
            (("--num-beams",), dict(type=int, default=None, help="beam search with this many beams (default: greedy)")),
            (("--max-new-tokens",), dict(type=int, default=None, help="tokens to generate at most")),
            (("--raw-prompt",), dict(action="store_true", help="use --text as the whole prompt (with its <image>)")),
        ),
        run="vlexport.families.vip_llava.predict:run",
    ),
    serve="vlexport.families.vip_llava.serve:endpoints",
    doc="VipLlava: chat about images with visual prompts (vision graph + Llama decoder with KV cache)",
)
