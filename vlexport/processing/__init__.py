"""Input processing without torch: the VisualBERT text/visual processor and the vocabularies.

Names are imported lazily, so `from vlexport.processing.vocab import tiny_vocab` stays light.
"""

__all__ = ["VisualBertProcessor", "bert_uncased_vocab_path", "load_vocab", "tiny_vocab"]


def __getattr__(name):
    if name == "VisualBertProcessor":
        from vlexport.processing.visual_bert import VisualBertProcessor

        return VisualBertProcessor
    if name in ("bert_uncased_vocab_path", "load_vocab", "tiny_vocab"):
        from vlexport.processing import vocab

        return getattr(vocab, name)
    raise AttributeError(f"module 'vlexport.processing' has no attribute '{name}'")
