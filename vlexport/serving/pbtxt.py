"""Triton's `config.pbtxt`: protobuf text format written from plain dicts and lists.

Written by hand (a few lines) so that writing a model repository needs no tritonclient/protobuf;
tests parse every file we write with Triton's own `ModelConfig` definition (tritonclient ships it).
Conventions: a dict is a message, a list of dicts a repeated message field, a list of scalars a
repeated scalar field, a `Enum("KIND_CPU")` an enum value, a str a quoted string.
"""

from __future__ import annotations

class Enum(str):
    """An enum value (written bare: `kind: KIND_CPU`)."""


def _scalar(v) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return quote(v)
    raise TypeError(f"cannot write {type(v).__name__} {v!r} to pbtxt")


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(text: str) -> str:
    """A protobuf text-format string: UTF-8 as is, quotes/backslashes/control characters escaped
    (octal escapes, which every protobuf text parser reads; JSON's \\u escapes are not one of them)."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def dumps(message: dict, indent: int = 0) -> str:
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{")
            lines.append(dumps(value, indent + 1))
            lines.append(f"{pad}}}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key} [")
            for i, v in enumerate(value):
                lines.append(f"{pad}  {{")
                lines.append(dumps(v, indent + 2))
                lines.append(f"{pad}  }}{',' if i < len(value) - 1 else ''}")
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(x for x in lines if x)


def map_entries(values: dict) -> list[dict]:
    """A protobuf map<string, ModelParameter> (Triton's `parameters`) as its repeated entries."""
    return [{"key": k, "value": {"string_value": str(v)}} for k, v in values.items()]
