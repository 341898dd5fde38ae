"""The errors vlexport raises. Each names the input, what was expected and what came.

They subclass the matching builtin (ValueError, FileNotFoundError, ImportError) so callers that
already catch those keep working; the CLI turns any VlexportError into a message and exit code 2.
"""


class VlexportError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, missing package)."""


class InputError(VlexportError, ValueError):
    """A model input has the wrong shape, dtype or value range."""


class ConfigError(VlexportError, ValueError):
    """A model config, task or axis range that vlexport cannot support."""


class UnknownModelError(VlexportError, KeyError):
    """An unknown model id, architecture or task."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(VlexportError, ValueError):
    """Missing, unexpected or malformed weights."""


class HubError(VlexportError, OSError):
    """The Hugging Face hub could not be reached and nothing usable is cached."""


class ArtifactError(VlexportError, OSError):
    """A built artifact folder is missing a file, is corrupted, or is from another version."""


class ValidationError(VlexportError):
    """A built graph or engine disagrees with the reference beyond tolerance."""


class MissingDependencyError(VlexportError, ImportError):
    """A feature needs an optional package that is not installed."""


class NumericalError(VlexportError, ArithmeticError):
    """A graph produced NaN or inf for an input (e.g. values beyond fp16's range)."""
