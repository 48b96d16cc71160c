"""A page's deadline, held over every attempt and every wait between them; no database here.

httpx's timeouts bound each read, not a response: a server that sends one byte a second never
trips them. The connection's socket is taken from httpcore's trace events as it is opened, and
shut down when the page's time is up, so the blocked read ends at once whatever stage it is in.
"""

import email.utils
import math
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

DELAY_SECONDS = re.compile(r"\s*\d{1,9}(\.\d{1,6})?\s*")


class SocketDeadline:
    """Remembers the socket of the client's connection (the client keeps at most one)."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's `trace` extension: called with each stage of a request."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                self._socket = sock

    @contextmanager
    def armed(self, deadline: float) -> Iterator[None]:
        """Shut the connection's socket down if the block still runs at the monotonic `deadline`.

        The socket is looked up when the time is up, so a connection opened inside the block is
        the one cut."""
        delay = min(max(deadline - time.monotonic(), 0.0), threading.TIMEOUT_MAX)
        timer = threading.Timer(delay, self._cut)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _cut(self) -> None:
        sock = self._socket
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed: nothing left to cut
            pass


class PageAttempts:
    """One page's attempts: its deadline, its socket, and how long to wait before the next."""

    def __init__(
        self,
        page_deadline: float,
        backoff_initial: float,
        backoff_max: float,
        socket_deadline: SocketDeadline | None = None,
    ) -> None:
        self.page_deadline = page_deadline
        self.deadline = time.monotonic() + page_deadline
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.socket_deadline = socket_deadline or SocketDeadline()
        self.made = 0  # attempts begun
        self.retries = 0
        self.gave_up: str | None = None  # why no further attempt was made, if time was the cause

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def next_wait(self, asked: float | None) -> float | None:
        """Seconds to wait before the next attempt: an exponential backoff with jitter, or what
        the upstream `asked` for, capped by HTTP_BACKOFF_MAX_SECONDS. None, with `gave_up`
        set, when that wait would end past the deadline, or the upstream asked for longer than
        the time left: it is not begun."""
        self.retries += 1
        backoff = self.backoff_initial * 2 ** (self.retries - 1)
        backoff += random.uniform(0, self.backoff_initial)
        wait = min(backoff if asked is None else asked, self.backoff_max)
        left = self.time_left()
        if wait < left and (asked is None or asked < left):
            return wait
        if asked is not None:
            leaves = max(left, 0)
            self.gave_up = (
                f"upstream asked to retry after {asked:g} s; page deadline leaves {leaves:.0f} s"
            )
        else:
            self.gave_up = (
                f"the next retry would wait past HTTP_PAGE_DEADLINE_SECONDS={self.page_deadline:g}"
            )
        return None


def retry_after_seconds(value: str) -> float | None:
    """Seconds from a `Retry-After` of delay-seconds or an HTTP date; None for anything else
    (`nan`, `inf`, negative, garbage), which means the normal backoff."""
    if DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - datetime.now(UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None
