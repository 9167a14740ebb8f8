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
from imagematch.settings import SettingsError, load_settings
from imagematch.web.app import create_app
from imagematch.web.proxies import TrustedProxies
from imagematch.web.ratelimit import TokenBuckets
from testkit.images import PHOTOS, jpeg
from testkit.serving import serve
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


def test_rotated_forwarded_for_from_loopback_does_not_escape_the_limit(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The attack: from 127.0.0.1 (or through ssh -L, socat), a new X-Forwarded-For on every request. With no
    trusted proxy configured (the default) the header is ignored, under a real uvicorn as `serve` runs it."""
    settings = make_settings(tmp_path, tiny_model_dir, rate_limit=60)
    with serve(create_app(settings, build_library(settings))) as url, httpx.Client(base_url=url) as client:
        started = time.monotonic()
        statuses = [
            client.get("/api/v1/images", headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code for n in range(80)
        ]
        refilled = time.monotonic() - started  # one token a second
    assert statuses[:60] == [200] * 60 and statuses.count(200) <= 60 + refilled + 1 and statuses[-1] == 429


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(tmp_path: Path, tiny_model_dir: Path) -> None:
    """With IMAGEMATCH_TRUSTED_PROXIES naming the proxy, the right-most address it did not add is the client."""
    settings = make_settings(tmp_path, tiny_model_dir, rate_limit=2, trusted_proxies=("127.0.0.1", "10.0.0.0/8"))
    with serve(create_app(settings, build_library(settings))) as url, httpx.Client(base_url=url) as client:
        first = [client.get("/api/v1/images", headers={"X-Forwarded-For": "198.51.100.1"}) for _ in range(3)]
        assert [r.status_code for r in first] == [200, 200, 429]
        assert client.get("/api/v1/images", headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
        # What the client wrote itself, left of what the proxies appended, does not buy a new budget.
        chained = [
            client.get("/api/v1/images", headers={"X-Forwarded-For": f"203.0.113.{n}, 198.51.100.1, 10.1.2.3"})
            for n in range(3)
        ]
        assert {r.status_code for r in chained} == {429}


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("198.51.100.1", "198.51.100.1"),
        ("203.0.113.9, 198.51.100.1", "198.51.100.1"),  # the client's own entry is ignored
        ("198.51.100.1, 10.0.0.2", "198.51.100.1"),  # a second, trusted proxy
        ("10.0.0.3, 10.0.0.2", "10.0.0.3"),  # only proxies: the first one
        ("  , 198.51.100.1 ,", "198.51.100.1"),
        ("", "127.0.0.1"),
        ("2001:db8::1", "2001:db8::1"),
    ],
)
def test_the_client_is_the_right_most_untrusted_address(forwarded_for: str, client: str) -> None:
    assert TrustedProxies(["127.0.0.1", "10.0.0.0/8"]).client("127.0.0.1", forwarded_for) == client


def test_ipv4_mapped_addresses_of_dual_stack_sockets_are_the_proxies_they_carry() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "::1"])
    assert proxies.trusts("::ffff:10.0.0.5") and proxies.trusts("[::ffff:10.0.0.5]") and proxies.trusts("::1")
    assert not proxies.trusts("::ffff:192.168.1.5") and not proxies.trusts("not an address")
    assert proxies.client("::ffff:10.0.0.5", "203.0.113.9, ::ffff:10.0.0.7") == "203.0.113.9"


def test_forwarded_headers_count_only_from_a_trusted_peer(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, rate_limit=2, trusted_proxies=("192.0.2.1",))
    app = create_app(settings, build_library(settings))
    with TestClient(app, client=("192.0.2.99", 5000)) as untrusted:
        rotated = [untrusted.get("/api/v1/images", headers={"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(3)]
        assert [r.status_code for r in rotated] == [200, 200, 429]
    with TestClient(app, client=("192.0.2.1", 5000)) as proxy:
        rotated = [proxy.get("/api/v1/images", headers={"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(3)]
        assert [r.status_code for r in rotated] == [200, 200, 200]


def test_trusted_proxies_is_read_and_checked_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEMATCH_TRUSTED_PROXIES", "127.0.0.1, ::1,10.0.0.0/8")
    assert load_settings().trusted_proxies == ("127.0.0.1", "::1", "10.0.0.0/8")
    monkeypatch.delenv("IMAGEMATCH_TRUSTED_PROXIES")
    assert load_settings().trusted_proxies == ()  # none by default
    for bad in ("*", "localhost", "10.0.0.0/33"):
        monkeypatch.setenv("IMAGEMATCH_TRUSTED_PROXIES", bad)
        with pytest.raises(SettingsError, match="IMAGEMATCH_TRUSTED_PROXIES"):
            load_settings()


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
    uploads = _at_once(lambda name: library.ingest.add(jpeg(name), filename=f"{name}.jpg"), photos)
    assert [r.status for r in uploads] == ["added"] * len(photos)
    assert seen["most"] <= 2 and seen["done"] == len(photos)
    searches = _at_once(lambda name: library.search.simple(SimpleSearch(image=jpeg(name))), photos)
    assert all(result.hits for result in searches)
    assert seen["most"] <= 2 and seen["done"] == 2 * len(photos)
    assert library.catalog.count() == len(photos)
