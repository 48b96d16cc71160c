"""A TCP server on 127.0.0.1 whose every connection a test answers byte by byte, for what an
HTTP framework will not do (headers trickled, a kept-alive connection that stalls)."""

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

Handler = Callable[[socket.socket, threading.Event], None]


@contextlib.contextmanager
def raw_server(handle: Handler) -> Iterator[tuple[str, list[int]]]:
    """Yields the server's URL and a one-item list counting the connections accepted. `handle`
    gets each connection (closed after it returns) and an event set when the test is over."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    accepted = [0]

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            handle(conn, stop)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed: the test is over
                return
            accepted[0] += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        listener.close()
