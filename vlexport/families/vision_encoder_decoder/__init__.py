"""VisionEncoderDecoder: a vision encoder + a text decoder with cross-attention, generating text
(captions, OCR). Two graphs, "encoder" and "decoder" (KV-cached), driven by the "generate" pipeline
(vlexport.runtime.generation: greedy, beam search, sampling, streaming; numpy, no torch).

    config.py       EncoderDecoderConfig: encoder / decoder tower configs + generation ids
    model.py        the reference PyTorch model on vlexport.towers (ViT/DeiT encoder, GPT-2 decoder)
    describe.py     the export description of the two graphs
    processor.py    image processor + tokenizer (decoding), torch-free
    pipeline.py     the runtime: generate() on the two graphs
    checkpoints.py  nlpconnect/vit-gpt2-image-captioning's config, the tiny built-in captioner
    predict.py      `vlexport predict PATH --image photo.jpg` prints the caption
    serve.py        the "caption" serving endpoint (image bytes in, generated text out)
"""

from vlexport.families import Family, PredictCommand
from vlexport.families.vision_encoder_decoder import checkpoints, describe
from vlexport.families.vision_encoder_decoder.config import EncoderDecoderConfig


def _processor(folder, weights: str = "checkpoint", config=None):
    from vlexport.families.vision_encoder_decoder.processor import EncoderDecoderProcessor

    if weights == "tiny":
        return EncoderDecoderProcessor.tiny(image_size=checkpoints.tiny_config()["encoder"]["image_size"])
    return EncoderDecoderProcessor.from_pretrained(folder, config)


FAMILY = Family(
    name="vision_encoder_decoder",
    model_types=("vision-encoder-decoder",),
    architectures=dict(describe.TASKS),
    config_from_dict=EncoderDecoderConfig.from_dict,
    describe=describe.describe,
    model_module="vlexport.families.vision_encoder_decoder.model",
    load_processor=_processor,
    checkpoints=checkpoints.CHECKPOINTS,
    tiny=checkpoints.TINY,
    pipelines={"generate": "vlexport.families.vision_encoder_decoder.pipeline:EncoderDecoderPipeline"},
    predict=PredictCommand(
        arguments=(
            (("--image",), dict(nargs="+", help="image file(s)")),
            (("--num-beams",), dict(type=int, default=None, help="beam search with this many beams (default: greedy)")),
            (("--max-new-tokens",), dict(type=int, default=None, help="tokens to generate at most")),
            (("--stream",), dict(action="store_true", help="print tokens as they come (one image, greedy)")),
        ),
        run="vlexport.families.vision_encoder_decoder.predict:run",
    ),
    serve="vlexport.families.vision_encoder_decoder.serve:endpoints",
    doc="VisionEncoderDecoder: captions and OCR (encoder + KV-cached decoder)",
)
