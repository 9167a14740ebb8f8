"""The real app under uvicorn on 127.0.0.1 in this process, as `imagematch serve` runs it: for the browser and
security tests, the screenshots and the upload bench."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from imagematch.cli import UVICORN_OPTIONS


@contextmanager
def serve(app: FastAPI, timeout_s: float = 60.0) -> Iterator[str]:
    """Serve the app on a free port of 127.0.0.1 in a background thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **UVICORN_OPTIONS))  # as `imagematch serve` runs it
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start; see the log above")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
