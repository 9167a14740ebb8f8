"""Captions end to end: ingest marks images pending, the worker captions them, words count in search."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from imagematch.captions import LEASES, CaptionsNotRecorded, CaptionWorker
from imagematch.factory import build_caption_worker, build_library
from imagematch.library import Library, SimpleSearch
from imagematch.records import CaptionStatus, ImageRecord, RecordPatch
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.fake_moondream import FakeMoondream, running
from testkit.images import jpeg

CAPTIONS = {"astronaut": "an astronaut in a white suit", "coffee": "a cup of coffee on a saucer"}


@pytest.fixture
def fake() -> Iterator[FakeMoondream]:
    with running() as server:
        yield server


@pytest.fixture
def caption_settings(settings: Settings, fake: FakeMoondream) -> Settings:
    return settings.model_copy(
        update={
            "captioner": "moondream",
            "moondream_endpoint": fake.endpoint,
            "caption_rate": 50.0,
            "caption_backoff": 0.01,
            "caption_backoff_cap": 0.05,
            "caption_retries": 2,
            "caption_timeout": 2.0,
        }
    )


@pytest.fixture
def library(caption_settings: Settings) -> Library:
    return build_library(caption_settings)


def _worker(settings: Settings, library: Library) -> CaptionWorker:
    return build_caption_worker(settings, library)


def _add(library: Library, name: str) -> str:
    record = library.ingest.add(jpeg(name), filename=f"{name}.jpg").record
    assert record is not None
    return record.id


def test_images_are_searchable_at_once_and_captioned_later(
    library: Library, caption_settings: Settings, fake: FakeMoondream
) -> None:
    fake.caption_for = lambda _jpeg: CAPTIONS["astronaut"]
    image_id = _add(library, "astronaut")
    record = library.catalog.get(image_id)
    assert record.caption_status == CaptionStatus.PENDING and record.caption == ""
    assert library.search.simple(SimpleSearch(image=jpeg("astronaut"), k=1)).hits[0].record.id == image_id
    captioned, failed = _worker(caption_settings, library).run_until_empty()
    assert (captioned, failed) == (1, 0)
    record = library.catalog.get(image_id)
    assert record.caption == CAPTIONS["astronaut"] and record.caption_status == CaptionStatus.DONE
    assert library.store.get_vectors([image_id])[image_id][1] is not None


def test_background_worker_resumes_the_queue_after_a_restart(caption_settings: Settings, fake: FakeMoondream) -> None:
    first = build_library(caption_settings)
    ids = [_add(first, name) for name in ("astronaut", "coffee", "rocket")]
    restarted = build_library(caption_settings)  # a new process: the queue is in the store
    worker = _worker(caption_settings, restarted)
    worker.start()
    deadline = time.monotonic() + 20
    while restarted.captions.counts()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    assert all(restarted.catalog.get(i).caption_status == CaptionStatus.DONE for i in ids)
    assert worker.status().state == "stopped"


def test_transient_errors_are_retried_with_backoff(
    library: Library, caption_settings: Settings, fake: FakeMoondream
) -> None:
    fake.script = ["429", "503", "ok"]
    image_id = _add(library, "coffee")
    assert _worker(caption_settings, library).run_until_empty() == (1, 0)
    assert library.catalog.get(image_id).caption_status == CaptionStatus.DONE
    assert len(fake.requests) == 3


def test_last_failure_is_recorded_and_can_be_retried(
    library: Library, caption_settings: Settings, fake: FakeMoondream
) -> None:
    fake.script = ["500", "500", "500"]
    image_id = _add(library, "coffee")
    assert _worker(caption_settings, library).run_until_empty() == (0, 1)
    record = library.catalog.get(image_id)
    assert record.caption_status == CaptionStatus.FAILED
    assert "server error" in record.caption_error and "after 3 tries" in record.caption_error
    assert library.captions.retry() == 1
    assert library.catalog.get(image_id).caption_status == CaptionStatus.PENDING
    assert _worker(caption_settings, library).run_until_empty() == (1, 0)


def test_every_failed_caption_is_queued_again_however_many(
    library: Library, caption_settings: Settings, fake: FakeMoondream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("imagematch.services.caption_queue.RETRY_PAGE", 2)  # five failed images over three pages
    ids = [_add(library, name) for name in ("astronaut", "coffee", "rocket", "coins", "moon")]
    for image_id in ids:
        library.captions.fail(image_id, "Moondream server error (HTTP 500)")
    assert library.captions.retry() == 5
    assert library.captions.counts().get("pending") == 5 and not library.captions.counts().get("failed")


def test_malformed_answers_fail_after_retries_and_slow_ones_time_out(
    library: Library, caption_settings: Settings, fake: FakeMoondream
) -> None:
    fake.slow_seconds = 5
    fake.script = ["malformed", "slow", "empty"]
    image_id = _add(library, "coffee")
    started = time.monotonic()
    assert _worker(caption_settings, library).run_until_empty() == (0, 1)
    assert time.monotonic() - started < 5
    assert "malformed" in library.catalog.get(image_id).caption_error


def test_a_dropped_connection_is_retried_like_any_transient_error(
    library: Library, caption_settings: Settings, fake: FakeMoondream
) -> None:
    fake.script = ["drop", "drop", "ok"]
    image_id = _add(library, "coffee")
    assert _worker(caption_settings, library).run_until_empty() == (1, 0)
    assert library.catalog.get(image_id).caption_status == CaptionStatus.DONE


def test_the_worker_survives_any_error_marks_the_image_and_goes_on(
    library: Library, caption_settings: Settings, fake: FakeMoondream, caplog: pytest.LogCaptureFixture
) -> None:
    """An error nobody foresaw (here the store refusing one caption) costs that image, once, not the worker."""
    first, second = _add(library, "coffee"), _add(library, "rocket")
    apply = library.captions.apply

    def store_refuses_the_first(image_id: str, caption: str) -> ImageRecord | None:
        if image_id == first:
            raise RuntimeError("the store refused the write")
        return apply(image_id, caption)

    library.captions.apply = store_refuses_the_first  # type: ignore[method-assign]
    worker = _worker(caption_settings, library)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while library.captions.counts().get("pending", 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert library.catalog.get(second).caption_status == CaptionStatus.DONE
        failed = library.catalog.get(first)
        assert failed.caption_status == CaptionStatus.FAILED and "the store refused the write" in failed.caption_error
        assert worker._thread is not None and worker._thread.is_alive()
        assert worker.status().state in ("idle", "working")
    finally:
        worker.stop()
    assert sum("the store refused the write" in r.getMessage() for r in caplog.records) == 1


def test_a_library_that_takes_no_writes_stops_the_run_instead_of_asking_again(
    library: Library, caption_settings: Settings, fake: FakeMoondream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk: neither the caption nor the failure can be written. Each new request would be paid for."""
    _add(library, "coffee")

    def refused(*_args: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(library.captions, "apply", refused)
    monkeypatch.setattr(library.captions, "fail", refused)
    with pytest.raises(CaptionsNotRecorded, match="No space left on device"):
        _worker(caption_settings, library).run_until_empty()
    assert len(fake.requests) == 1
    worker = _worker(caption_settings, library)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(fake.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the background worker waits (5 s, doubling) before it asks again
        assert len(fake.requests) == 2 and worker._thread is not None and worker._thread.is_alive()
    finally:
        worker.stop()


def test_a_bad_key_pauses_captions_with_one_clear_status(
    caption_settings: Settings, fake: FakeMoondream, caplog: pytest.LogCaptureFixture
) -> None:
    fake.api_key = "the-right-key"
    settings = caption_settings.model_copy(update={"moondream_api_key": "wrong"})
    library = build_library(settings)
    image_id = _add(library, "coffee")
    worker = _worker(settings, library)
    assert worker.run_until_empty() == (0, 0)
    assert worker.run_until_empty() == (0, 0)
    status = worker.status()
    assert status.state == "error" and "API key" in status.message and status.pending == 1
    assert library.catalog.get(image_id).caption_status == CaptionStatus.PENDING  # kept for when the key is fixed
    assert len(fake.requests) == 1
    assert sum("captions are paused" in r.message for r in caplog.records) == 1


def test_a_users_correction_wins(library: Library, caption_settings: Settings, fake: FakeMoondream) -> None:
    image_id = _add(library, "coffee")
    library.catalog.update(image_id, RecordPatch(caption="my espresso"))
    _worker(caption_settings, library).run_until_empty()
    record = library.catalog.get(image_id)
    assert record.caption == "my espresso" and record.caption_edited


def test_words_vector_makes_a_caption_findable(
    library: Library, caption_settings: Settings, fake: FakeMoondream
) -> None:
    names = ("astronaut", "coffee", "rocket", "camera", "coins", "moon", "clock", "page")
    ids = {name: _add(library, name) for name in names}
    fake.caption_for = lambda _jpeg: "an ordinary photograph"
    _worker(caption_settings, library).run_until_empty()
    library.captions.apply(ids["moon"], "invoice number 4711 from the plumber")
    query = SimpleSearch(text="invoice number 4711 from the plumber", k=len(names))

    def rank(words_weight: float) -> int:
        searcher = build_library(caption_settings.model_copy(update={"words_weight": words_weight}))
        return [h.record.id for h in searcher.search.simple(query).hits].index(ids["moon"])

    ranks = [rank(w) for w in (0.0, 0.3, 0.6, 1.0)]
    assert ranks == sorted(ranks, reverse=True)  # more weight on words, never a worse rank
    assert ranks[-1] == 0


def test_words_weight_zero_reports_plain_cosine(library: Library, caption_settings: Settings) -> None:
    ids = {name: _add(library, name) for name in ("astronaut", "coffee")}
    library.catalog.update(ids["coffee"], RecordPatch(description="coffee"))
    plain = build_library(caption_settings.model_copy(update={"words_weight": 0.0}))
    hits = plain.search.simple(SimpleSearch(text="coffee", k=2)).hits
    vectors = plain.store.get_vectors([h.record.id for h in hits])
    text = plain.embedder.encode_texts(["coffee"])[0]
    for hit in hits:
        assert hit.score == pytest.approx(float(vectors[hit.record.id][0] @ text), abs=1e-5)


def test_query_image_caption_is_appended_after_the_users_words(library: Library, caption_settings: Settings) -> None:
    ids = {name: _add(library, name) for name in ("astronaut", "coffee")}
    library.captions.apply(ids["coffee"], "a cup of coffee")
    seen: list[list[str]] = []
    original = library.embedder.fit_text

    def spy(parts: list[str]) -> object:
        seen.append(list(parts))
        return original(parts)

    library.embedder.fit_text = spy  # type: ignore[method-assign,assignment]
    long_text = " ".join(["user"] * 90)
    result = library.search.simple(SimpleSearch(text=long_text, image_id=ids["coffee"], image_weight=0.5))
    assert [long_text, "a cup of coffee"] in seen
    assert result.truncated  # the user's own words were cut at the context length, and we say so
    short = library.search.simple(SimpleSearch(text="on a table", image_id=ids["coffee"], image_weight=0.5))
    assert ["on a table", "a cup of coffee"] in seen and not short.truncated


def test_api_reports_and_retries_captions(caption_settings: Settings, fake: FakeMoondream) -> None:
    fake.script = ["500"] * 3
    library = build_library(caption_settings)
    with TestClient(create_app(caption_settings, library)) as client:
        image = client.post("/api/v1/images", files={"file": ("c.jpg", jpeg("coffee"), "image/jpeg")}).json()
        deadline = time.monotonic() + 20
        while client.get(image["links"]["self"]).json()["caption_status"] != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        failed = client.get(image["links"]["self"]).json()
        assert failed["caption_status"] == "failed" and failed["caption_error"]
        health = client.get("/api/v1/health").json()
        assert health["captioner"]["failed"] == 1 and health["captioner"]["state"] in ("idle", "working")
        assert client.post(f"/api/v1/images/{image['id']}/caption/retry").json() == {"queued": 1}
        deadline = time.monotonic() + 20
        while client.get(image["links"]["self"]).json()["caption_status"] != "done" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(image["links"]["self"]).json()["caption"] == "a photo of something"
        edited = client.patch(image["links"]["self"], json={"caption": "my own words"}).json()
        assert edited["caption"] == "my own words" and edited["caption_edited"] is True


def test_an_image_another_worker_holds_waits_for_it_and_a_dead_workers_lease_expires(
    library: Library, caption_settings: Settings, fake: FakeMoondream
) -> None:
    held, abandoned = _add(library, "astronaut"), _add(library, "coffee")
    lease = {"owner": "other-server", "until": time.time() + 60}
    library.store.put_document(LEASES, held, json.dumps(lease))
    expired = {"owner": "a-server-that-died", "until": time.time() - 1}
    library.store.put_document(LEASES, abandoned, json.dumps(expired))
    worker = _worker(caption_settings, library)
    worker.start()
    deadline = time.monotonic() + 20
    while library.catalog.get(abandoned).caption_status != CaptionStatus.DONE and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # a second look at the queue: the held image is still not this worker's
    worker.stop()
    assert library.catalog.get(abandoned).caption_status == CaptionStatus.DONE
    assert library.catalog.get(held).caption_status == CaptionStatus.PENDING
    assert len(fake.requests) == 1
    assert library.store.get_document(LEASES, abandoned) is None  # released once done


def test_a_store_error_outside_any_image_is_logged_once_shown_in_the_status_and_outlived(
    library: Library,
    caption_settings: Settings,
    fake: FakeMoondream,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lease documents cannot be written for a while (the store is unreachable): the worker says so once
    and in its status, waits, and captions the image once the store is back."""
    image_id = _add(library, "coffee")
    put = library.store.put_document
    failures = 3

    def unreachable_at_first(kind: str, key: str, value: str) -> None:
        nonlocal failures
        if kind == LEASES and failures:
            failures -= 1
            raise ConnectionError("the store is unreachable")
        put(kind, key, value)

    library.store.put_document = unreachable_at_first  # type: ignore[method-assign]
    worker = _worker(caption_settings, library)
    monkeypatch.setattr("imagematch.captions._STORE_ERROR_PAUSE_S", 0.05)
    try:
        worker.start()
        deadline = time.monotonic() + 20
        seen_in_status = False
        while library.catalog.get(image_id).caption_status != CaptionStatus.DONE and time.monotonic() < deadline:
            seen_in_status = seen_in_status or "the store is unreachable" in worker.status().message
            time.sleep(0.01)
        assert library.catalog.get(image_id).caption_status == CaptionStatus.DONE
        assert seen_in_status
        assert worker._thread is not None and worker._thread.is_alive()
        assert worker.status().message == ""  # over once the store is back
    finally:
        worker.stop()
    assert sum("the store is unreachable" in r.getMessage() for r in caplog.records) == 1
    assert len(fake.requests) == 1
