"""Limits that keep one client from taking the server down: a request budget per client address, and a cap
on how many images are decoded and embedded at once, so that a flood of uploads queues instead of using up
memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient

from imagematch import media
from imagematch.factory import build_library
from imagematch.library import Library, SimpleSearch
from imagematch.web.app import create_app
from imagematch.web.ratelimit import TokenBuckets
from tests.browser.live import serve
from tests.images import PHOTOS, jpeg
from tests.security.conftest import make_settings

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(6, clock=clock)  # six a minute: one every ten seconds
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 6
    assert buckets.take("a") == pytest.approx(10.0)
    assert buckets.take("b") == 0.0  # every client has its own budget
    clock.now += 10.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0.0
    clock.now += 3600.0
    assert [buckets.take("a") for _ in range(7)].count(0.0) == 6  # never more than the burst


def test_forgotten_clients_come_back_with_a_full_bucket_and_memory_stays_bounded() -> None:
    buckets = TokenBuckets(1, max_clients=100, clock=FakeClock())
    assert buckets.take("first") == 0.0
    for n in range(1000):
        buckets.take(f"client-{n}")
    assert len(buckets._buckets) == 100
    assert buckets.take("first") == 0.0


def test_over_the_limit_the_api_answers_429_and_pages_a_friendly_page(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, rate_limit=5)
    with TestClient(create_app(settings, build_library(settings))) as client:
        assert [client.get("/api/v1/images").status_code for _ in range(5)] == [200] * 5
        refused = client.get("/api/v1/images")
        assert refused.status_code == 429
        assert refused.json()["detail"].startswith("too many requests")
        assert 1 <= int(refused.headers["retry-after"]) <= 12
        page = client.get("/images")
        assert page.status_code == 429 and page.headers["content-type"].startswith("text/html")
        assert "Too many requests" in page.text and "Slow down" in page.text
        assert page.headers["retry-after"]
        assert client.get("/static/style.css").status_code == 200  # a page's own files are not counted
        other = TestClient(client.app, client=("192.0.2.7", 50000))
        assert other.get("/api/v1/images").status_code == 200


def test_behind_a_proxy_each_forwarded_client_has_its_own_budget(tmp_path: Path, tiny_model_dir: Path) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 (FORWARDED_ALLOW_IPS), as a local reverse proxy sends it."""
    settings = make_settings(tmp_path, tiny_model_dir, rate_limit=2)
    with serve(create_app(settings, build_library(settings))) as url:
        first = [httpx.get(f"{url}/api/v1/images", headers={"X-Forwarded-For": "198.51.100.1"}) for _ in range(3)]
        assert [r.status_code for r in first] == [200, 200, 429]
        second = httpx.get(f"{url}/api/v1/images", headers={"X-Forwarded-For": "198.51.100.2"})
        assert second.status_code == 200


def _track_decodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count decodes running at the same time; each takes a little while, as a large photo would."""
    seen = {"now": 0, "most": 0, "done": 0}
    lock = threading.Lock()
    decode = media.decode

    def slow_decode(data: bytes, **options: Any) -> media.DecodedImage:
        with lock:
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
        try:
            time.sleep(0.05)
            return decode(data, **options)
        finally:
            with lock:
                seen["now"] -= 1
                seen["done"] += 1

    monkeypatch.setattr(media, "decode", slow_decode)
    return seen


def _at_once(work: Callable[[str], T], names: Sequence[str]) -> list[T]:
    """Every call in a thread of its own, all started together."""
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(work, names))


def test_a_flood_of_uploads_and_image_searches_queues_for_the_decode_slots(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library: Library = build_library(make_settings(tmp_path, tiny_model_dir, decode_workers=2))
    library.open()
    seen = _track_decodes(monkeypatch)
    photos = PHOTOS[:8]
    uploads = _at_once(lambda name: library.add(jpeg(name), filename=f"{name}.jpg"), photos)
    assert [r.status for r in uploads] == ["added"] * len(photos)
    assert seen["most"] <= 2 and seen["done"] == len(photos)
    searches = _at_once(lambda name: library.simple_search(SimpleSearch(image=jpeg(name))), photos)
    assert all(result.hits for result in searches)
    assert seen["most"] <= 2 and seen["done"] == 2 * len(photos)
    assert library.count() == len(photos)
