"""A webhook receiver on 127.0.0.1 for the tests: it verifies every request with the
`standardwebhooks` package, as a real receiver would, and answers as the test scripts it
(a status, a hang, a wait for the test's signal); `default` (200) once the script runs out."""

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.fake_upstream import free_port


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class Received:
    msg_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int | None  # None: the receiver hung up without answering in time
    arrived_at: float = field(default_factory=time.time)

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Step:
    status: int = 200
    hang_seconds: float = 0.0  # before answering
    wait_for: threading.Event | None = None  # answer once the test sets it
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.script: list[Step] = []
        self.default = Step()  # once the script runs out
        self.received: list[Received] = []
        self.arrived = threading.Event()
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/crew-etl?token=s3cret"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler())
        self.server.daemon_threads = True

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.answer(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def answer(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {key.lower(): value for key, value in request.headers.items()}
        with self.lock:
            step = self.script.pop(0) if self.script else self.default
            entry = Received(
                headers.get("webhook-id", ""), headers, body, self.verify(headers, body), None
            )
            self.received.append(entry)
        self.arrived.set()
        if step.wait_for is not None:
            step.wait_for.wait(30)
        if step.hang_seconds:
            threading.Event().wait(step.hang_seconds)
        try:
            request.send_response(step.status)
            for name, value in step.headers.items():
                request.send_header(name, value)
            request.send_header("content-length", "2")
            request.end_headers()
            request.wfile.write(b"ok")
            entry.answered = step.status
        except OSError:  # the sender gave up waiting and closed the connection
            pass

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        if self.secret is None:
            return False
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    def ids(self) -> list[str]:
        with self.lock:
            return [entry.msg_id for entry in self.received]

    def start(self) -> "Receiver":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running_receiver(secret: str | None) -> Iterator[Receiver]:
    receiver = Receiver(secret).start()
    try:
        yield receiver
    finally:
        receiver.stop()
