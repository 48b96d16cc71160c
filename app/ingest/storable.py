"""Any JSON value the upstream can send, rendered as JSON text PostgreSQL's jsonb accepts; no I/O.

jsonb refuses NaN and Infinity, U+0000 and lone surrogates, and deep nesting costs its parser
stack; an upstream record can also be huge. So, in the text written:
- U+0000 and lone surrogates become U+FFFD;
- NaN, Infinity and -Infinity become the strings "NaN", "Infinity" and "-Infinity";
- a container nested deeper than MAX_DEPTH levels becomes the string TOO_DEEP;
- a value whose text would pass `max_chars` is stored as one JSON string instead: the first
  `max_chars` characters of that text, followed by "…".
"""

import json
import math
import re
from typing import Any

MAX_DEPTH = 32
TOO_DEEP = f"…(nested deeper than {MAX_DEPTH} levels)"
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class _Full(Exception):
    pass


def storable_json(value: Any, max_chars: int) -> str:
    writer = _Writer(max_chars)
    try:
        writer.value(value, 0)
    except _Full:
        return json.dumps("".join(writer.parts)[:max_chars] + "…")
    return "".join(writer.parts)


def storable_text(text: str, max_chars: int) -> str:
    """A string for a text column: cut to `max_chars`, without U+0000 or lone surrogates."""
    return UNSTORABLE.sub("\ufffd", text[:max_chars])


class _Writer:
    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.parts: list[str] = []
        self.size = 0

    def emit(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > self.max_chars:
            raise _Full

    def string(self, text: str) -> None:
        self.emit(json.dumps(storable_text(text, self.max_chars + 1)))

    def value(self, value: Any, depth: int) -> None:
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            self.string(TOO_DEEP)
        elif isinstance(value, dict):
            self.emit("{")
            for index, (key, item) in enumerate(value.items()):
                self.emit("," if index else "")
                self.string(str(key))
                self.emit(":")
                self.value(item, depth + 1)
            self.emit("}")
        elif isinstance(value, list):
            self.emit("[")
            for index, item in enumerate(value):
                self.emit("," if index else "")
                self.value(item, depth + 1)
            self.emit("]")
        elif isinstance(value, str):
            self.string(value)
        elif isinstance(value, float) and not math.isfinite(value):
            self.string(json.dumps(value))  # "NaN", "Infinity", "-Infinity"
        elif value is None or isinstance(value, bool | float):
            self.emit(json.dumps(value))
        elif isinstance(value, int):
            self.emit(str(value) if value.bit_length() < 10_000 else '"…(integer too long)"')
        else:
            self.string(repr(value))
