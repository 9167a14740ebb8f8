"""Peak memory of the server, and the latency of health and of a normal upload, under a flood of small files that
decode into huge images: 16-bit 10000×10000 PNGs of 220 KB sent as uploads, as /search/query terms (four per
request) and as the search page's query image, several at once.

Starts `python -m imagematch serve` on 127.0.0.1 with the tiny random-weight model of the tests (decoding, not
the model, is measured), samples its resident memory from /proc, and prints the figures. Run it against another
checkout's code by pointing PYTHONPATH at that checkout's src (the "before" of a change):

    PYTHONPATH=src .venv/bin/python -m bench.decode_flood [--rounds 2] [--uploaders 2]
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from testkit.bombs import sixteen_bit_bomb
from testkit.images import distinct_jpegs
from testkit.server_process import free_port
from testkit.tinymodel import build_tiny_model


def bomb_variant(n: int) -> bytes:
    """The 16-bit PNG with a text chunk of its own, so that no copy is recognised by its file hash undecoded."""
    data = sixteen_bit_bomb()
    body = b"Comment\x00" + str(n).encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return data[:-12] + chunk + data[-12:]


def memory_kb(pid: int, field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(found.group(1)) if found else 0


def timed(call: Callable[[], httpx.Response]) -> tuple[float, int]:
    started = time.perf_counter()
    status = call().status_code
    return time.perf_counter() - started, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="bombs each flooding client sends")
    parser.add_argument("--uploaders", type=int, default=2, help="clients uploading bombs at once")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="decode-flood-"))
    model = build_tiny_model(root / "tiny-clip")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "IMAGEMATCH_DATA_DIR": str(root / "data"),
        "IMAGEMATCH_MODEL": f"local-dir:{model}",
        "IMAGEMATCH_MODEL_CACHE_DIR": str(root / "cache"),
        "IMAGEMATCH_BACKGROUND_REMOVAL": "off",
        "IMAGEMATCH_RUNTIME": "torch",
        "IMAGEMATCH_RATE_LIMIT": "0",
        "IMAGEMATCH_LOG_LEVEL": "WARNING",
        "IMAGEMATCH_HOST": "127.0.0.1",
        "IMAGEMATCH_PORT": str(port),
    }
    server = subprocess.Popen([sys.executable, "-m", "imagematch", "serve"], env=environment)
    try:
        client = httpx.Client(base_url=url, timeout=600)
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get("/api/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        normal = iter(distinct_jpegs(40))

        def upload_normal() -> httpx.Response:
            return client.post("/api/v1/images", files={"file": ("photo.jpg", next(normal), "image/jpeg")})

        upload_normal()
        client.post("/api/v1/search", data={"text": "warm up"})
        idle_upload = statistics.median(timed(upload_normal)[0] for _ in range(3))
        idle_health = statistics.median(timed(lambda: client.get("/api/v1/health"))[0] for _ in range(5))
        baseline = memory_kb(server.pid, "VmRSS")
        peak_rss = baseline
        flooding = threading.Event()
        flooding.set()

        def sample() -> None:
            nonlocal peak_rss
            while flooding.is_set():
                peak_rss = max(peak_rss, memory_kb(server.pid, "VmRSS"))
                time.sleep(0.05)

        numbers = iter(range(1_000_000))
        lock = threading.Lock()

        def next_bomb() -> bytes:
            with lock:
                return bomb_variant(next(numbers))

        def flood_uploads() -> list[int]:
            with httpx.Client(base_url=url, timeout=600) as own:
                return [
                    own.post("/api/v1/images", files={"file": ("deep.png", next_bomb(), "image/png")}).status_code
                    for _ in range(args.rounds)
                ]

        def flood_queries() -> list[int]:
            with httpx.Client(base_url=url, timeout=600) as own:
                statuses = []
                for _ in range(args.rounds):
                    terms = [{"image": base64.b64encode(next_bomb()).decode(), "weight": 1.0} for _ in range(4)]
                    statuses.append(own.post("/api/v1/search/query", json={"terms": terms, "k": 5}).status_code)
                return statuses

        def flood_page() -> list[int]:
            with httpx.Client(base_url=url, timeout=600) as own:
                token = re.search(r'name="csrf_token" value="([^"]+)"', own.get("/").text)
                assert token is not None
                return [
                    own.post(
                        "/search",
                        data={"csrf_token": token.group(1), "text": ""},
                        files={"image": ("deep.png", next_bomb(), "image/png")},
                    ).status_code
                    for _ in range(args.rounds)
                ]

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.uploaders + 2) as pool:
            floods = [pool.submit(flood_uploads) for _ in range(args.uploaders)]
            floods += [pool.submit(flood_queries), pool.submit(flood_page)]
            health: list[float] = []
            uploads: list[float] = []
            while not all(f.done() for f in floods):
                health.append(timed(lambda: client.get("/api/v1/health"))[0])
                if len(health) % 10 == 1:
                    uploads.append(timed(upload_normal)[0])
                time.sleep(0.1)
            statuses = [s for f in floods for s in f.result()]
        took = time.perf_counter() - started
        flooding.clear()
        sampler.join()
        peak_hwm = memory_kb(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(30)

    print(
        f"flood: {args.uploaders} uploaders, 1 /search/query client (4 terms), 1 search page client, "
        f"{args.rounds} rounds each: {len(statuses)} requests in {took:.1f} s, statuses {sorted(set(statuses))}"
    )
    print(
        f"server RSS: idle {baseline / 1024:.0f} MB, peak {max(peak_rss, peak_hwm) / 1024:.0f} MB "
        f"(+{(max(peak_rss, peak_hwm) - baseline) / 1024:.0f} MB)"
    )
    print(
        f"health: idle {idle_health * 1000:.0f} ms; under flood median {statistics.median(health) * 1000:.0f} ms, "
        f"max {max(health) * 1000:.0f} ms ({len(health)} probes)"
    )
    print(
        f"normal upload: idle {idle_upload:.2f} s; under flood median {statistics.median(uploads):.2f} s, "
        f"max {max(uploads):.2f} s ({len(uploads)} uploads)"
    )


if __name__ == "__main__":
    main()
