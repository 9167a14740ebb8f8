"""Many clients at once against one real server (uvicorn on 127.0.0.1, real sockets): the same image sent by
eight clients is stored once, mixed uploads and searches lose nothing and never fail, searches keep answering
while the samples folder is indexed, and hostile requests leave it serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagematch.factory import build_library
from imagematch.library import Library
from imagematch.web.app import create_app
from testkit.images import distinct_jpegs, jpeg
from testkit.serving import serve
from tests.security.conftest import make_settings
from tests.security.payloads import REFUSED_FILES

pytestmark = pytest.mark.slow


@dataclass(frozen=True, slots=True)
class Live:
    url: str
    library: Library
    samples_dir: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Live]:
    settings = make_settings(tmp_path_factory.mktemp("live"), tiny_model_dir, decode_workers=2, max_upload_bytes=2**20)
    library = build_library(settings)
    with serve(create_app(settings, library)) as url:
        yield Live(url, library, settings.samples_dir)


def _upload(client: httpx.Client, url: str, data: bytes, name: str) -> httpx.Response:
    return client.post(f"{url}/api/v1/images", files={"file": (name, data, "image/jpeg")})


def test_eight_clients_sending_the_same_image_store_it_once(live: Live) -> None:
    before = live.library.catalog.count()
    start = threading.Barrier(8)
    data = jpeg("chelsea")

    def send(n: int) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            start.wait()
            return _upload(client, live.url, data, f"cat-{n}.jpg")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert sorted(a.status_code for a in answers) == [201] + [409] * 7
    stored = next(a.json()["id"] for a in answers if a.status_code == 201)
    assert {a.json()["existing_id"] for a in answers if a.status_code == 409} == {stored}
    assert live.library.catalog.count() == before + 1


def test_two_hundred_mixed_uploads_and_searches_lose_nothing(live: Live) -> None:
    before = live.library.catalog.count()
    images = distinct_jpegs(80, seed=21)
    words = ["a red bicycle", "a cat on a sofa", "mountains at dusk", "a bowl of soup"]

    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=8)) as client:

        def work(n: int) -> tuple[str, httpx.Response]:
            """Two uploads in every five requests, spread through the run."""
            if n % 5 in (1, 3):
                return "upload", _upload(client, live.url, images[n // 5 * 2 + (n % 5 == 3)], f"noise-{n:03d}.jpg")
            return "search", client.post(f"{live.url}/api/v1/search", data={"text": words[n % 4], "k": "5"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(work, range(200)))
        assert [r.status_code for _, r in answers if r.status_code >= 500] == []
        uploaded = [r.json()["id"] for kind, r in answers if kind == "upload" and r.status_code == 201]
        assert len(uploaded) == len(images)
        assert all(r.status_code == 200 for kind, r in answers if kind == "search")
        assert live.library.catalog.count() == before + len(images)
    blobs = live.library.blobs
    for image_id in uploaded:  # every acknowledged upload is whole: record, original, thumbnail
        assert live.library.catalog.get(image_id) and blobs.has_original(image_id) and blobs.has_thumbnail(image_id)


def test_searches_keep_answering_while_the_samples_folder_is_indexed(live: Live) -> None:
    live.samples_dir.mkdir(parents=True, exist_ok=True)
    for n, data in enumerate(distinct_jpegs(24, seed=33)):
        (live.samples_dir / f"batch-{n:03d}.jpg").write_bytes(data)
    before = live.library.catalog.count()
    with httpx.Client(timeout=60) as client:
        job: dict[str, Any] = client.post(f"{live.url}/api/v1/jobs/samples").json()
        answered_while_running = 0
        deadline = time.monotonic() + 120
        while job["state"] == "running" and time.monotonic() < deadline:
            search = client.post(f"{live.url}/api/v1/search", data={"text": "a colourful pattern", "k": "3"})
            assert search.status_code == 200 and len(search.json()["hits"]) == 3
            job = client.get(f"{live.url}{job['links']['self']}").json()
            answered_while_running += job["state"] == "running"
    assert job["state"] == "done" and job["added"] == 24
    assert answered_while_running >= 1
    assert live.library.catalog.count() == before + 24


def test_hostile_requests_leave_the_real_server_serving(live: Live) -> None:
    before = live.library.catalog.count()
    with httpx.Client(timeout=60) as client:
        for case in REFUSED_FILES:
            response = _upload(client, live.url, case.make(), case.filename)
            assert response.status_code == case.status, case.case
        too_large = client.post(
            f"{live.url}/api/v1/images", files={"file": ("big.jpg", b"\xff" * (2 * 2**20), "image/jpeg")}
        )
        assert too_large.status_code == 413
        lying = client.post(
            f"{live.url}/api/v1/images", content=b"x" * 100, headers={"content-type": "multipart/form-data; boundary=z"}
        )
        assert 400 <= lying.status_code < 500
        assert client.get(f"{live.url}/api/v1/health").json()["images"] == before
