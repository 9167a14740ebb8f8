"""kill -9 of the server while clients upload: on restart the store opens, every record has its original and
thumbnail, nothing is stored twice, no acknowledged upload is lost, and sending everything again completes the
library; and a write stopped before its rename leaves nothing half-written. (kill -9 of the CLI's `index` is in
tests/test_integrity.py.)"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import httpx
import pytest

from imagematch.blobs import LocalBlobStore
from imagematch.factory import build_library
from imagematch.fingerprint import file_hash
from imagematch.integrity import check
from testkit.images import distinct_jpegs
from testkit.server_process import ServerProcess
from tests.security.conftest import make_settings

pytestmark = pytest.mark.slow


def _upload_until_failure(url: str, images: list[bytes], acknowledged: dict[str, str], workers: int = 4) -> None:
    """Clients uploading in parallel until the server goes away; records which uploads it acknowledged."""
    todo: queue.Queue[int] = queue.Queue()
    for n in range(len(images)):
        todo.put(n)
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while True:
                try:
                    n = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    answer = http.post(
                        f"{url}/api/v1/images", files={"file": (f"photo-{n:03d}.jpg", images[n], "image/jpeg")}
                    )
                except httpx.TransportError:
                    return  # the server was killed
                if answer.status_code == 201:
                    with lock:
                        acknowledged[file_hash(images[n])] = answer.json()["id"]

    threads = [threading.Thread(target=client) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def _stored(url: str) -> list[dict[str, object]]:
    page = httpx.get(f"{url}/api/v1/images", params={"limit": 1000}, timeout=30).json()
    items: list[dict[str, object]] = page["items"]
    assert len(items) == page["total"]
    return items


def test_kill_9_during_uploads_loses_nothing_and_sending_again_completes(tmp_path: Path, tiny_model_dir: Path) -> None:
    images = distinct_jpegs(24, seed=5)
    data_dir = tmp_path / "data"
    environment = {
        "IMAGEMATCH_DATA_DIR": str(data_dir),
        "IMAGEMATCH_MODEL": f"local-dir:{tiny_model_dir}",
        "IMAGEMATCH_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "IMAGEMATCH_BACKGROUND_REMOVAL": "off",
        "IMAGEMATCH_CAPTIONER": "none",
        "IMAGEMATCH_RUNTIME": "torch",
        "IMAGEMATCH_RATE_LIMIT": "0",
        "IMAGEMATCH_LOG_LEVEL": "WARNING",
    }
    server = ServerProcess(environment, tmp_path / "server.log")
    acknowledged: dict[str, str] = {}
    try:
        server.start()
        uploading = threading.Thread(target=_upload_until_failure, args=(server.url, images, acknowledged))
        uploading.start()
        originals = data_dir / "originals"
        while uploading.is_alive() and sum(1 for _ in originals.glob("*/*.jpg")) < 6:
            uploading.join(0.02)
        assert uploading.is_alive(), "every upload finished before the kill"
        server.kill()
        uploading.join(60)
        assert 0 < len(acknowledged) < len(images)

        server.start()  # the store opens again
        stored = _stored(server.url)
        hashes = [str(record["file_hash"]) for record in stored]
        assert len(set(hashes)) == len(hashes)  # nothing stored twice
        assert set(acknowledged) <= set(hashes)  # no acknowledged upload lost
        with httpx.Client(timeout=30) as http:
            for record in stored:  # every record is whole
                assert http.get(f"{server.url}/api/v1/images/{record['id']}/file").status_code == 200
                assert http.get(f"{server.url}/api/v1/images/{record['id']}/thumbnail").status_code == 200
            again = [
                http.post(f"{server.url}/api/v1/images", files={"file": (f"again-{n}.jpg", data, "image/jpeg")})
                for n, data in enumerate(images)
            ]
        statuses = [answer.status_code for answer in again]
        assert (statuses.count(409), statuses.count(201)) == (len(stored), len(images) - len(stored))
        assert {str(record["file_hash"]) for record in _stored(server.url)} == {file_hash(d) for d in images}
    finally:
        server.stop()
    library = build_library(make_settings(tmp_path, tiny_model_dir))
    assert library.catalog.count() == len(images)
    report = check(library, repair=True)  # what the kill left behind (an unrecorded original, a *.tmp) is fixed
    assert report.healthy, report.unfixed


def test_an_interrupted_write_leaves_no_partial_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Originals are written to a temporary file and renamed: stopped before the rename, nothing is in place."""
    blobs = LocalBlobStore(tmp_path / "data")
    image_id = "0123456789abcdef-01234567"

    def power_cut(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(KeyboardInterrupt):
        blobs.put_original(image_id, "jpg", b"half of a photo")
    assert not blobs.has_original(image_id)
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == []
