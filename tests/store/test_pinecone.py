"""What our Pinecone code does about the service's limits, failures and consistency, against the local fake.

The conformance suite proves behaviour; these tests look at the requests themselves.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imagematch.factory import build_store
from imagematch.filters import parse_filter
from imagematch.records import ImageMatchError, NotSupported, StoreMismatch
from imagematch.settings import Settings, SettingsError
from imagematch.store.pinecone import (
    MAX_METADATA_BYTES,
    STORE_KIND,
    PineconeStore,
    PineconeUnavailable,
    Retry,
    name_parts,
    pinecone_filter,
)
from imagematch.store.shared import TRUNCATION_MARK, to_micros
from testkit.fake_pinecone import MAX_REQUEST_BYTES, REJECTED_KEY, FakePinecone
from tests.store.test_conformance import DIM, MODEL, item, unit

PINECONE_40_KB = 40 * 1024


@pytest.fixture
def fake() -> Iterator[FakePinecone]:
    server = FakePinecone().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _sdk_retries_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's own retry pauses (0.25 s and up); its source names this the seam for tests."""
    monkeypatch.setattr("pinecone._internal.http_client._retry_sleep", lambda _seconds: None)


def make(fake: FakePinecone, name: str = "lib", **options: object) -> PineconeStore:
    return PineconeStore("fake-key", index_name=name, host=fake.url, **options)  # type: ignore[arg-type]


def test_index_is_created_on_first_use_with_the_model_dimension_and_cosine(fake: FakePinecone) -> None:
    store = make(fake, "fresh", cloud="gcp", region="europe-west4")
    assert "fresh" not in fake.indexes and store.stored_model() is None
    store.open(MODEL, DIM)
    index = fake.indexes["fresh"]
    assert (index.dim, index.metric) == (DIM, "cosine")
    assert index.deployment == {"deployment_type": "managed", "cloud": "gcp", "region": "europe-west4"}
    assert make(fake, "fresh").stored_model() == (MODEL, DIM)


def test_an_index_of_another_dimension_is_refused_with_what_to_do(fake: FakePinecone) -> None:
    fake.create_index("seed", 768)  # made by hand for the seed's 768-dimension model
    with pytest.raises(StoreMismatch) as refused:
        make(fake, "seed").open(MODEL, DIM)
    message = str(refused.value)
    assert "768" in message and str(DIM) in message and "INDEX_NAME" in message
    fake.create_index("dots", DIM, "dotproduct")
    with pytest.raises(StoreMismatch, match="cosine"):
        make(fake, "dots").open(MODEL, DIM)
    with pytest.raises(ImageMatchError, match="at least 64 dimensions"):
        make(fake, "tiny").open(MODEL, 32)


def test_upserts_stay_within_1000_records_and_2_mb(fake: FakePinecone) -> None:
    store = make(fake)
    store.open(MODEL, DIM)
    store.upsert([item(i) for i in range(2500)])
    counts = [r.vectors for r in fake.upserts()]
    assert max(counts) == 1000
    fake.requests.clear()
    store.upsert([item(i, description="d" * 4000, metadata={"notes": "n" * 2000}) for i in range(3000, 4000)])
    sizes = [r.bytes for r in fake.upserts()]
    assert max(sizes) <= MAX_REQUEST_BYTES and max(sizes) > MAX_REQUEST_BYTES * 0.8  # full, never over
    assert all(r.vectors <= 1000 for r in fake.upserts())
    assert store.count() == 3500


def test_long_text_is_cut_to_fit_40_kb_with_a_note(fake: FakePinecone, caplog: pytest.LogCaptureFixture) -> None:
    store = make(fake)
    store.open(MODEL, DIM)
    metadata: dict[str, str | int | float | bool] = {f"k{i:02d}": "é" * 2000 for i in range(30)}
    big = item(1, description="字" * 5000, caption="c" * 50_000, metadata=metadata)
    with caplog.at_level(logging.WARNING, logger="imagematch.store.pinecone"):
        store.upsert([big])
    assert all(r.largest_metadata <= PINECONE_40_KB for r in fake.upserts())
    assert max(r.largest_metadata for r in fake.upserts()) > MAX_METADATA_BYTES * 0.9
    got = store.get(big.record.id)
    assert got is not None and got.caption.endswith(TRUNCATION_MARK) and got.metadata.keys() == metadata.keys()
    assert "cut to fit" in caplog.text and big.record.id in caplog.text


def test_absent_values_are_left_out_never_null(fake: FakePinecone) -> None:
    store = make(fake)
    store.open(MODEL, DIM)
    plain = item(1)  # no taken_at, no GPS
    placed = item(2, taken_at=datetime(2020, 5, 17, 8, 30, tzinfo=UTC), gps_lat=43.48, gps_lon=-1.56)
    store.upsert([plain, placed])
    assert fake.upserts() and not any(r.null_metadata for r in fake.upserts())
    assert store.get(plain.record.id) == plain.record and store.get(placed.record.id) == placed.record


def test_our_retries_absorb_a_burst_longer_than_the_sdks(fake: FakePinecone) -> None:
    waits: list[float] = []
    store = make(fake, sleep=waits.append)
    store.open(MODEL, DIM)
    fake.fail_next(6, 429)  # more than the SDK's own four attempts
    store.upsert([item(1)])
    assert store.get(item(1).record.id) is not None
    assert waits and waits[0] == 0.5 and waits == sorted(waits)
    assert sum(r.status == 429 for r in fake.requests) == 6


def test_backoff_doubles_to_its_cap_then_gives_up_clearly(fake: FakePinecone) -> None:
    waits: list[float] = []
    fake.fail_next(4, 503)  # control-plane calls are retried by us alone
    store = make(fake, sleep=waits.append, retry=Retry(attempts=5, first_delay=0.5, max_delay=2.0))
    assert waits == [0.5, 1.0, 2.0, 2.0]
    store.open(MODEL, DIM)
    waits.clear()
    fake.fail_next(100, 503)
    with pytest.raises(PineconeUnavailable, match=r"failed 5 times in a row.*try again"):
        store.count()
    assert waits == [0.5, 1.0, 2.0, 2.0]
    fake.clear_failures()
    assert store.count() == 0


def test_reads_wait_until_the_index_has_caught_up_with_our_writes() -> None:
    lagging = FakePinecone(lag_reads=3).start()
    try:
        store = make(lagging, sleep=lambda _seconds: None)  # each read moves the fake on; no need to wait
        store.open(MODEL, DIM)
        store.upsert([item(1), item(2)])  # its batch marker's removal reads: the fake has caught up after it
        edited = replace(item(1).record, description="edited")
        store.update(edited, unit(5))  # writes only
        index = lagging.indexes["lib"]
        assert index.applied < index.lsn  # the service has not caught up yet
        assert store.get(item(1).record.id) == edited
        assert store.count() == 2 and len(store.page()) == 2
        assert store.delete([item(1).record.id]) == 1
        assert store.get(item(1).record.id) is None and store.count() == 1
        store.put_document("job", "a", "one")
        assert store.get_document("job", "a") == "one"
    finally:
        lagging.stop()


def test_a_second_reader_waits_too_while_the_first_is_still_waiting() -> None:
    """The write marker stays until the reads have caught up: a reader arriving meanwhile must not read stale."""
    lagging = FakePinecone(lag_reads=3).start()
    first_waiting, second_done = threading.Event(), threading.Event()

    def sleep(_seconds: float) -> None:
        if threading.current_thread() is not threading.main_thread() and not first_waiting.is_set():
            first_waiting.set()
            second_done.wait(10)

    try:
        store = make(lagging, sleep=sleep)
        store.open(MODEL, DIM)
        store.upsert([item(1)])
        edited = replace(item(1).record, description="edited")
        store.update(edited, unit(5))  # writes only (the upsert's marker removal read until caught up)
        found: list[object] = []
        first = threading.Thread(target=lambda: found.append(store.get(item(1).record.id)))
        first.start()
        assert first_waiting.wait(10)
        assert store.get(item(1).record.id) == edited  # the second reader, while the first still waits
        second_done.set()
        first.join(10)
        assert found == [edited]
    finally:
        second_done.set()
        lagging.stop()


def test_filters_become_pinecone_operators_with_dates_as_microseconds() -> None:
    flt = parse_filter({"album": {"$ne": "x"}, "image.taken_at": {"$gte": "2024-01-01"}, "tag": {"$in": ["a"]}})
    assert pinecone_filter(flt) == {
        "$and": [
            {"$and": [{"m:album": {"$exists": True}}, {"m:album": {"$ne": "x"}}]},
            {"taken_at": {"$gte": to_micros(datetime(2024, 1, 1, tzinfo=UTC))}},
            {"m:tag": {"$in": ["a"]}},
        ]
    }


def test_a_wrong_api_key_is_one_clear_error(fake: FakePinecone) -> None:
    with pytest.raises(ImageMatchError, match=r"refused the API key.*PINECONE_API_KEY"):
        PineconeStore(REJECTED_KEY, index_name="lib", host=fake.url)


def test_settings_choose_the_index_region_and_namespace_prefix(
    fake: FakePinecone, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", fake.url)  # the SDK's own way to reach a local service
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        store="pinecone",
        data_dir=tmp_path,
        pinecone_api_key="fake-key",
        index_name="from-settings",
        pinecone_region="eu-west-1",
        pinecone_namespace="team-a-",
    )
    store = build_store(settings)
    store.open(MODEL, DIM)
    store.upsert([item(1)])
    index = fake.indexes["from-settings"]
    assert index.deployment["region"] == "eu-west-1"
    assert set(index.namespaces) == {"team-a-images", "team-a-phash", "team-a-state"}
    with pytest.raises(SettingsError, match="PINECONE_API_KEY"):
        build_store(settings.model_copy(update={"pinecone_api_key": ""}))


def test_a_library_written_before_name_parts_asks_for_a_reindex(fake: FakePinecone) -> None:
    """Records written before `_camera_parts` (schema 1) would silently miss camera and lens filters."""
    store = make(fake)
    store.open(MODEL, DIM)
    store.put_document(
        STORE_KIND, "library", json.dumps({"model_id": MODEL, "dim": DIM, "generation": "", "schema": 1})
    )
    store.upsert([item(1, camera="Canon EOS R5")])
    old = make(fake)
    assert old.count(parse_filter({"image.format": "PNG"})) == 1
    with pytest.raises(NotSupported, match="run `imagematch reindex`"):
        old.count(parse_filter({"image.lens": {"$nin": ["usm"]}}))
    rebuilt = old.start_rebuild(MODEL, DIM)
    rebuilt.upsert([item(1, camera="Canon EOS R5")])
    old.finish_rebuild()
    assert old.count(parse_filter({"image.camera": "canon eos"})) == 1
    assert make(fake).count(parse_filter({"image.camera": "eos"})) == 1


def test_name_parts_are_every_piece_of_every_word_within_a_bound() -> None:
    assert name_parts("EOS R5") == ["e", "eo", "eos", "o", "os", "s", "r", "r5", "5"]
    assert name_parts("--") == []
    long = name_parts("x" * 500 + " " + "".join(chr(0x4E00 + i) for i in range(24)))
    assert len(json.dumps(long)) <= 3000 and all(len(part) <= 24 for part in long)
