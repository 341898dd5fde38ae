"""Reference PyTorch models. Attributes are imported on first use, so `import vlexport.models`
needs no torch; `vlexport.models.VisualBertForQuestionAnswering` imports it then."""

from __future__ import annotations

import importlib

_LAZY = {name: "vlexport.models.visual_bert" for name in (
    "VisualBertConfig", "VisualBertModel", "VisualBertForPreTraining", "VisualBertForQuestionAnswering",
    "VisualBertForMultipleChoice", "VisualBertForVisualReasoning", "VisualBertForRegionToPhraseAlignment")}
_LAZY["from_pretrained"] = "vlexport.models.factory"
_LAZY["build_random"] = "vlexport.models.factory"


def __getattr__(name):
    if name in _LAZY:
        from vlexport._deps import require

        require("torch", f"vlexport.models.{name}")
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlexport.models' has no attribute '{name}'")


__all__ = sorted(_LAZY)
