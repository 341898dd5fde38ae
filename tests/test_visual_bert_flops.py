"""VisualBERT's FLOP count (the benchmark's GFLOP/s figures) against the work a forward pass does."""

import numpy as np
import pytest

from vlexport.families.visual_bert import flops


def test_flops_match_counted_linear_and_matmul_work():
    torch = pytest.importorskip("torch")
    from vlexport.families.visual_bert.checkpoints import TINY_ID
    from vlexport.families.visual_bert.describe import describe
    from vlexport.reference import from_pretrained

    loaded = from_pretrained(TINY_ID)
    sizes = {"batch": 3, "text": 7, "visual": 5}
    feeds = describe(loaded.architecture, loaded.config).graphs[0].make_inputs(sizes, np.random.default_rng(0))
    macs = [0]

    def linear_hook(mod, inp, out):
        macs[0] += inp[0].numel() // inp[0].shape[-1] * mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(linear_hook) for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    real_matmul = torch.matmul

    def counting_matmul(a, b):
        macs[0] += a.numel() * b.shape[-1]
        return real_matmul(a, b)

    torch.matmul = counting_matmul
    try:
        with torch.no_grad():
            loaded.model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    finally:
        torch.matmul = real_matmul
        for h in hooks:
            h.remove()
    counted = macs[0]
    formula = flops.macs(loaded.config, loaded.architecture, sizes)
    # the model may use @ or F.scaled_dot_product_attention instead of torch.matmul: then only Linears counted
    H, L, S = loaded.config.hidden_size, loaded.config.num_hidden_layers, 12
    attn = 3 * L * 2 * S * S * H
    assert counted in (formula, formula - attn)
    # full size, B=1, T=20, V=36: the figure the benchmark reports (about 9.7 GFLOP)
    from vlexport.families.visual_bert.checkpoints import public_config
    from vlexport.families.visual_bert.config import VisualBertConfig

    cfg = VisualBertConfig.from_dict(public_config("uclanlp/visualbert-vqa"))
    f = flops.flops(cfg, "VisualBertForQuestionAnswering", {"batch": 1, "text": 20, "visual": 36})
    assert 9.5e9 < f < 10e9
