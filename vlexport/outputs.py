"""HF-style model outputs without torch: a dict whose keys are also attributes.

`outputs.logits`, `outputs["logits"]` and `outputs[0]` all work, as with transformers' ModelOutput.
"""


class ModelOutput(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this output has no field '{name}'; it has {list(self.keys())}") from None

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)

    def to_tuple(self):
        return tuple(self.values())
