"""One upstream response body, read within fixed bounds; no database here.

The body is read raw and decoded here, in slices of at most `SLICE_BYTES`, so a compressed body
counts against the size cap by what it decodes to, before more than a slice of it exists. The
whole read must also finish before the page's deadline, however slowly the bytes arrive.
"""

import time
import zlib
from collections.abc import Iterator

import httpx

SLICE_BYTES = 64 * 1024
# Content codings we decode, with the zlib window bits that select each container.
WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ACCEPT_ENCODING = "gzip, deflate"


class ResponseTooLarge(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


class UnsupportedEncoding(Exception):
    pass


def read_bounded(response: httpx.Response, max_bytes: int, deadline: float) -> bytearray:
    """The decoded body; raises once it passes `max_bytes` or the monotonic `deadline` passes.

    The deadline is checked after every read, so it is overrun by at most one read timeout.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"Content-Length {declared} exceeds {max_bytes}")
    wbits = content_coding(response.headers.get("content-encoding", ""))
    body = bytearray()
    for piece in decoded(response.iter_raw(), wbits):
        body += piece
        if len(body) > max_bytes:
            raise ResponseTooLarge(f"body passed {max_bytes} bytes")
        check_deadline(deadline)
    check_deadline(deadline)
    return body


def check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise DeadlineExceeded("deadline passed")


def content_coding(header: str) -> int | None:
    """zlib window bits for the body's one content coding, None for none (identity)."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in WBITS:
        raise UnsupportedEncoding(
            f"unsupported Content-Encoding {header[:100]!r}: one of gzip or deflate, or none"
        )
    return WBITS[codings[0]]


def decoded(raw: Iterator[bytes], wbits: int | None) -> Iterator[bytes]:
    """Decode raw chunks, never producing more than SLICE_BYTES from one decompress call."""
    if wbits is None:
        yield from raw
        return
    decoder = zlib.decompressobj(wbits)
    try:
        for chunk in raw:
            pending = chunk
            while pending and not decoder.eof:
                yield decoder.decompress(pending, SLICE_BYTES)
                pending = decoder.unconsumed_tail
        while not decoder.eof:  # output zlib still holds from input already given
            piece = decoder.decompress(b"", SLICE_BYTES)
            if not piece:
                raise zlib.error("compressed body ends early")
            yield piece
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode the body ({exc})") from None
