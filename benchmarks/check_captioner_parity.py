#!/usr/bin/env python
"""Full-size captioner parity, one-off: a built VisionEncoderDecoder artifact against transformers'
generate() with the same weights, greedy and 2/4-beam search.

    vlexport build --model nlpconnect/vit-gpt2-image-captioning --random-weights --out /tmp/vitgpt2
    python benchmarks/check_captioner_parity.py /tmp/vitgpt2 [--images 3] [--new-tokens 16]
    vlexport build --model microsoft/swin-base-patch4-window7-224-in22k+google-bert/bert-base-uncased \
        --random-weights --out /tmp/swinbert            # the seed's Swin-B + BERT-base pairing

The weights are rebuilt from the manifest (random/tiny artifacts) and loaded into
transformers.VisionEncoderDecoderModel key for key (nothing may be missing or unexpected).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=16)
    args = ap.parse_args(argv)

    import torch
    import transformers

    import vlexport
    from vlexport.artifact import Artifact
    from vlexport.runtime.backends.torch import reference_model

    art = Artifact(args.artifact)
    ours = reference_model(art).eval()
    cfg = art.config
    enc, dec = (transformers.AutoConfig.for_model(**{k: v for k, v in cfg[part].items() if v is not None})
                for part in ("encoder", "decoder"))
    hcfg = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    hf, info = transformers.VisionEncoderDecoderModel.from_pretrained(None, config=hcfg, state_dict=ours.state_dict(),
                                                                      output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf.eval()
    for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
        setattr(hf.generation_config, k, cfg.get(k))
    model = vlexport.load(args.artifact)
    size = cfg["encoder"]["image_size"]
    px = np.random.default_rng(0).uniform(-1, 1, size=(args.images, 3, size, size)).astype(np.float32)
    ok = True
    for nb in (1, 2, 4):
        t = time.perf_counter()
        a = model.generate(pixel_values=px, max_new_tokens=args.new_tokens, num_beams=nb)
        ta = time.perf_counter() - t
        t = time.perf_counter()
        with torch.no_grad():
            b = hf.generate(pixel_values=torch.from_numpy(px), max_new_tokens=args.new_tokens, num_beams=nb,
                            do_sample=False).numpy()
        tb = time.perf_counter() - t
        same = a.shape == b.shape and np.array_equal(a, b)
        ok &= same
        print(f"num_beams={nb}: identical ids {same}, shape {a.shape}; vlexport {ta:.1f}s, transformers {tb:.1f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
