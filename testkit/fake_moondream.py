"""A local HTTP server that speaks Moondream's documented caption API, for offline tests.

POST {endpoint}/caption with JSON {"image_url": "data:image/jpeg;base64,...", "length": ..., "stream": false}
answers {"caption": "..."}. A script of behaviours makes it slow, rate-limited, broken or malformed.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Behaviours: "ok", "slow", "429", "500", "503", "401", "malformed", "empty".
Behaviour = str


@dataclass
class FakeMoondream:
    caption_for: Callable[[bytes], str] = lambda _jpeg: "a photo of something"
    script: list[Behaviour] = field(default_factory=list)  # consumed one per request; then "ok"
    slow_seconds: float = 3.0
    api_key: str = ""  # when set, other keys get 401
    requests: list[dict[str, object]] = field(default_factory=list)
    endpoint: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_behaviour(self) -> Behaviour:
        with self._lock:
            return self.script.pop(0) if self.script else "ok"


def _handler(fake: FakeMoondream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            payload = json.loads(self.rfile.read(length) or b"{}")
            with fake._lock:
                fake.requests.append(
                    {"path": self.path, "auth": self.headers.get("X-Moondream-Auth"), "at": time.monotonic(), **payload}
                )
            if self.path != "/v1/caption":
                self._reply(404, b'{"error": "not found"}')
                return
            if fake.api_key and self.headers.get("X-Moondream-Auth") != fake.api_key:
                self._reply(401, b'{"error": "invalid api key"}')
                return
            behaviour = fake.next_behaviour()
            if behaviour == "slow":
                time.sleep(fake.slow_seconds)
            if behaviour in ("429", "500", "503", "401"):
                self._reply(int(behaviour), json.dumps({"error": behaviour}).encode())
                return
            if behaviour == "drop":  # the connection closes without an answer, as a reset or a crashed proxy does
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if behaviour == "malformed":
                self._reply(200, b"<html>not json</html>", "text/html")
                return
            if behaviour == "empty":
                self._reply(200, b'{"request_id": "x"}')
                return
            url = str(payload.get("image_url", ""))
            jpeg = base64.b64decode(url.split(",", 1)[1]) if "," in url else b""
            self._reply(200, json.dumps({"caption": fake.caption_for(jpeg), "request_id": "r"}).encode())

    return Handler


@contextmanager
def running(fake: FakeMoondream | None = None) -> Iterator[FakeMoondream]:
    fake = fake or FakeMoondream()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
