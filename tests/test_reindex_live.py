"""`imagematch reindex` with another model while `imagematch serve` answers a client that keeps searching and
uploading: no answer is a 5xx, no connection is refused, the server moves to the new model by itself, and every
upload it acknowledged is in the new library exactly once, embedded by the new model."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from testkit.images import distinct_jpegs
from testkit.server_process import ServerProcess

pytestmark = pytest.mark.slow


def _client(url: str, images: list[bytes], stop: threading.Event, seen: Counter[str], acked: list[str]) -> None:
    """Searches and uploads in turn until told to stop; counts every answer and every refused connection."""
    uploads = iter(enumerate(images))
    with httpx.Client(base_url=url, timeout=60) as http:
        while not stop.is_set():
            try:
                found = http.post("/api/v1/search/query", json={"terms": [{"text": "a photo"}], "k": 5})
                seen[str(found.status_code // 100 * 100)] += 1
                upload = next(uploads, None)
                if upload is not None:
                    n, data = upload
                    sent = http.post("/api/v1/images", files={"file": (f"photo-{n:03d}.jpg", data, "image/jpeg")})
                    seen[str(sent.status_code // 100 * 100)] += 1
                    if sent.status_code == 201:
                        acked.append(sent.json()["id"])
            except httpx.TransportError as error:
                seen[f"transport: {type(error).__name__}"] += 1


def test_reindex_while_serving_answers_every_request_and_keeps_every_upload(
    tmp_path: Path, tiny_model_dir: Path, other_model_dir: Path
) -> None:
    environment = {
        "IMAGEMATCH_DATA_DIR": str(tmp_path / "data"),
        "IMAGEMATCH_MODEL": f"local-dir:{tiny_model_dir}",
        "IMAGEMATCH_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "IMAGEMATCH_BACKGROUND_REMOVAL": "off",
        "IMAGEMATCH_CAPTIONER": "none",
        "IMAGEMATCH_RUNTIME": "torch",
        "IMAGEMATCH_RATE_LIMIT": "0",
        "IMAGEMATCH_EMBED_BATCH_SIZE": "4",
        "IMAGEMATCH_LOG_LEVEL": "INFO",
    }
    images = distinct_jpegs(60, seed=11)
    server = ServerProcess(environment, tmp_path / "server.log")
    stop = threading.Event()
    seen: Counter[str] = Counter()
    acked: list[str] = []
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for n, data in enumerate(images[:24]):  # the library before the switch
                assert (
                    http.post("/api/v1/images", files={"file": (f"first-{n}.jpg", data, "image/jpeg")}).status_code
                    == 201
                )
            old_model = http.get("/api/v1/health").json()["model"]
        client = threading.Thread(target=_client, args=(server.url, images[24:], stop, seen, acked))
        client.start()
        reindex = subprocess.run(
            [sys.executable, "-m", "imagematch", "reindex"],
            env={**os.environ, **environment, "IMAGEMATCH_MODEL": f"local-dir:{other_model_dir}"},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        (tmp_path / "reindex.log").write_text(reindex.stderr)
        assert reindex.returncode == 0, reindex.stderr
        with httpx.Client(base_url=server.url, timeout=60) as http:
            deadline = time.monotonic() + 120
            while http.get("/api/v1/health").json()["model"] == old_model and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1)  # a few more searches and uploads on the new model
            stop.set()
            client.join(120)
            health = http.get("/api/v1/health").json()
            assert health["model"] != old_model, "the server did not move to the new model"
            assert set(seen) <= {"200", "400"} and seen["200"] > 0, seen  # no 5xx, no refused connection
            deadline = time.monotonic() + 60  # uploads noted after the reindex ended are carried by the server
            while time.monotonic() < deadline:
                page = http.get("/api/v1/images", params={"limit": 1000}).json()
                if page["total"] == 24 + len(acked):
                    break
                time.sleep(0.5)
            items = page["items"]
            ids = Counter(item["id"] for item in items)
            assert len(items) == page["total"] == 24 + len(acked) and set(acked) <= set(ids)
            assert max(ids.values()) == 1  # each exactly once
            assert {item["model_id"] for item in items} == {health["model"]}
            assert acked, "no upload was made during the switch"
    finally:
        stop.set()
        server.stop()
