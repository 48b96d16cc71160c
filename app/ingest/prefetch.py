"""Run an iterator one item ahead in a thread, so fetching and checking page n+1 overlaps
loading page n."""

import contextvars
import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class Prefetcher(Generic[T]):
    """At most one finished item waits in the queue; exceptions reach the consumer in order."""

    def __init__(self, items: Iterator[T]) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        context = contextvars.copy_context()  # keeps log context such as run_id
        self._thread = threading.Thread(
            target=context.run, args=(self._produce, items), daemon=True, name="prefetch"
        )
        self._thread.start()

    def _produce(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except Exception as exc:
            self._put(exc)
        else:
            self._put(_DONE)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self, timeout: float) -> T | None:
        """The next item, None when exhausted; raises queue.Empty after `timeout` seconds."""
        item = self._queue.get(timeout=timeout)
        if item is _DONE:
            return None
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
