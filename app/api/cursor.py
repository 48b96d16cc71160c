"""Keyset cursors: opaque, URL-safe tokens naming where a page ended (the last row's sort key and
id) and which query they belong to (a digest of its filters and sort). No database here.

A cursor is not a secret or a signature: it only has to be well-formed and come from the same
query. A forged one can do no more than a well-formed one can: pick a starting position.
"""

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from app.ingest.storable import UNSTORABLE

HEX24 = re.compile(r"[0-9a-f]{24}")
MAX_KEY_LENGTH = 2048


class InvalidCursor(ValueError):
    pass


def fingerprint(query: dict[str, Any]) -> str:
    """A short digest of everything that selects and orders the rows (not the page size)."""
    canonical = json.dumps(query, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


def encode(query_fingerprint: str, position: list[Any]) -> str:
    """The cursor after `position`, a [sort key, id] pair."""
    raw = json.dumps([query_fingerprint, *position], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode(cursor: str, query_fingerprint: str) -> tuple[str, str]:
    """The (sort key, id) a cursor points after, if it was made for this query."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (UnicodeError, binascii.Error, ValueError, RecursionError) as error:  # deep nesting
        raise InvalidCursor("not a cursor this service issued") from error
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)):
        raise InvalidCursor("not a cursor this service issued")
    issued_for, key, row_id = value
    if issued_for != query_fingerprint:
        raise InvalidCursor("the cursor belongs to another combination of filters and sort")
    # PostgreSQL text holds neither U+0000 nor a lone surrogate (which JSON allows)
    if not HEX24.fullmatch(row_id) or len(key) > MAX_KEY_LENGTH or UNSTORABLE.search(key):
        raise InvalidCursor("not a cursor this service issued")
    return key, row_id
