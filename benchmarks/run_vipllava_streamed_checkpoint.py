#!/usr/bin/env python
"""Peak memory of a VipLlava build from a checkpoint folder whose decoder is streamed (read one tensor at a
time from the files while its int4 graph is written), at Llama-2-7B's width with fewer layers.

    python benchmarks/run_vipllava_streamed_checkpoint.py [--layers 4] [--work /tmp/vip-stream]

Writes a checkpoint folder (a tiny CLIP tower, a Llama decoder 4096 wide with an 11008 MLP and 32 heads,
--layers layers, fp16 safetensors shards of 1 GB; projections rounded onto the int4 grid so the
checkpoint gate passes on random weights, as tests/test_vip_llava_streamed_checkpoint.py does), then
builds it in a fresh process with the streaming threshold at 0 and reports the build's stages and the
process's peak RSS (the build's own per-stage figures and /usr/bin/time's maximum resident set).
A 7B decoder streams the same way, one 4096-wide layer at a time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

MAKE = r"""
import sys, torch, transformers as t
from vlexport.families.vip_llava.model import _decoder_name
from vlexport.families.vip_llava.processor import VipLlavaProcessor
from vlexport.towers.llama_numpy import dequantize_nbits, is_projection, quantize_nbits
folder, layers = sys.argv[1], int(sys.argv[2])
vision = t.CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                            image_size=28, patch_size=14)
text = t.LlamaConfig(vocab_size=1002, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                     num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                     rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=1001)
cfg = t.VipLlavaConfig(vision_config=vision, text_config=text, image_token_index=1000, image_seq_length=4,
                       vision_feature_layers=[-2, 1], pad_token_id=1001)
torch.manual_seed(0)
m = t.VipLlavaForConditionalGeneration(cfg).eval()
with torch.no_grad():
    for key, p in m.named_parameters():
        name = _decoder_name(key)
        if name and is_projection(name):
            w = p.detach().numpy()
            p.copy_(torch.from_numpy(dequantize_nbits(*quantize_nbits(w, 4, 32, False), w.shape[1], 4)))
m.half().save_pretrained(folder, max_shard_size="1GB")
VipLlavaProcessor.tiny(image_size=28, patch_size=14).save_pretrained(folder)
print("parameters", sum(p.numel() for p in m.parameters()))
"""

BUILD = r"""
import sys
from vlexport.families.vip_llava import model as vip_model
from vlexport.export.build import build
vip_model.STREAM_ABOVE = 0  # stream this decoder, as a 7B one is
build(sys.argv[1], sys.argv[2], progress=True)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path("/tmp/vip-stream"))
    a = ap.parse_args(argv)
    folder, out = a.work / "checkpoint", a.work / "artifact"
    if not folder.is_dir():
        subprocess.run([sys.executable, "-c", MAKE, str(folder), str(a.layers)], check=True)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    print(f"checkpoint: {folder} ({size / 1e9:.2f} GB of safetensors)")
    run = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", BUILD, str(folder), str(out)],
                         capture_output=True, text=True)
    for line in (run.stdout + run.stderr).splitlines():
        if line.lstrip().startswith(("✓", "Built")) or "Maximum resident" in line or "Error" in line:
            print(line.strip())
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
