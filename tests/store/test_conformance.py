"""Behaviour every VectorStore backend must have."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from imagematch.filters import parse_filter
from imagematch.fingerprint import phash_hex
from imagematch.records import CaptionStatus, ImageRecord, StoredImage, StoreMismatch
from imagematch.store.base import VectorStore
from tests.store.conftest import StoreFactory

DIM = 16
MODEL = "test-model"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def item(n: int, *, phash: int | None = None, words: bool = False, **fields: object) -> StoredImage:
    record = ImageRecord(
        id=str(fields.pop("id", f"{n:016x}-{n:08x}")),
        phash=phash_hex(phash if phash is not None else n * 0x0101010101010101 % (1 << 64)),
        file_hash=f"{n:064x}",
        filename=f"image-{n}.jpg",
        size=1000 + n,
        width=100 + n,
        height=50 + n,
        format="PNG" if n % 2 else "JPEG",
        created_at=T0 + timedelta(minutes=n),
        updated_at=T0 + timedelta(minutes=n),
        model_id=MODEL,
        **fields,  # type: ignore[arg-type]
    )
    return StoredImage(record, unit(n), unit(1000 + n) if words else None)


@pytest.fixture
def store(open_store: StoreFactory) -> Iterator[VectorStore]:
    opened = open_store()
    opened.open(MODEL, DIM)
    yield opened
    opened.close()


def test_upsert_get_count(store: VectorStore) -> None:
    store.upsert([item(i) for i in range(5)])
    assert store.count() == 5
    got = store.get(item(3).record.id)
    assert got == item(3).record
    assert store.get("missing") is None
    assert set(store.get_many([item(1).record.id, "missing"])) == {item(1).record.id}
    store.upsert([item(3)])  # same id again replaces, never duplicates
    assert store.count() == 5


def test_update_keeps_the_image_vector(store: VectorStore) -> None:
    store.upsert([item(1)])
    record = item(1).record
    store.update(replace(record, metadata={"k": "v", "n": 2}), unit(77))
    assert store.get(record.id) == replace(record, metadata={"k": "v", "n": 2})
    vector, words = store.get_vectors([record.id])[record.id]
    assert np.allclose(vector, unit(1), atol=1e-6) and words is not None and np.allclose(words, unit(77), atol=1e-6)


def test_delete_and_reset(store: VectorStore) -> None:
    store.upsert([item(i) for i in range(4)])
    assert store.delete([item(0).record.id, "missing"]) == 1
    assert store.count() == 3 and store.get(item(0).record.id) is None
    store.reset()
    assert store.count() == 0
    assert store.stored_model() == (MODEL, DIM)


def test_listing_is_paginated_by_time(store: VectorStore) -> None:
    store.upsert([item(i) for i in (3, 1, 4, 0, 2)])
    newest = [r.id for r in store.page(offset=0, limit=2)] + [r.id for r in store.page(offset=2, limit=3)]
    assert newest == [item(i).record.id for i in (4, 3, 2, 1, 0)]
    assert [r.id for r in store.page(limit=2, newest_first=False)] == [item(0).record.id, item(1).record.id]
    assert store.page(offset=10, limit=5) == []
    assert sorted(store.ids()) == sorted(item(i).record.id for i in range(5))


def test_search_with_and_without_filter(store: VectorStore) -> None:
    store.upsert([item(i, metadata={"album": "a" if i < 5 else "b", "rank": i}) for i in range(10)])
    hits = store.search(unit(7), k=3)
    assert hits[0].record.id == item(7).record.id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    filtered = store.search(unit(7), k=3, flt=parse_filter({"album": "a"}))
    assert len(filtered) == 3 and all(h.record.metadata["album"] == "a" for h in filtered)
    ranged = store.search(unit(0), k=10, flt=parse_filter({"rank": {"$gte": 3, "$lt": 6}}))
    assert sorted(h.record.metadata["rank"] for h in ranged) == [3, 4, 5]
    builtin = store.search(unit(0), k=10, flt=parse_filter({"image.format": "PNG", "image.width": {"$gt": 104}}))
    assert sorted(h.record.id for h in builtin) == sorted(item(i).record.id for i in (5, 7, 9))
    dated = store.count(parse_filter({"image.created_at": {"$gte": (T0 + timedelta(minutes=8)).isoformat()}}))
    assert dated == 2
    assert store.count(parse_filter({"album": {"$in": ["b", "zzz"]}})) == 5


def test_two_vectors(store: VectorStore) -> None:
    store.upsert([item(i, words=i % 2 == 0) for i in range(6)])
    words_hits = store.search(unit(1004), k=6, field="words")
    assert words_hits[0].record.id == item(4).record.id
    assert {h.record.id for h in words_hits} == {item(i).record.id for i in (0, 2, 4)}


def test_near_duplicate_lookup_by_phash(store: VectorStore) -> None:
    base = 0xF0F0_F0F0_0F0F_0F0F
    store.upsert([item(1, phash=base), item(2, phash=base ^ 0b111), item(3, phash=~base & (2**64 - 1))])
    found = store.near_phash(base ^ 0b1, 4)
    assert [(r.id, d) for r, d in found] == [(item(1).record.id, 1), (item(2).record.id, 2)]
    assert store.near_phash(base, 0)[0][0].id == item(1).record.id
    assert store.find_file_hash(item(3).record.file_hash).id == item(3).record.id  # type: ignore[union-attr]
    assert store.find_file_hash("0" * 63 + "f") is None


def test_model_and_dimension_guard(open_store: StoreFactory) -> None:
    store = open_store()
    store.open(MODEL, DIM)
    store.upsert([item(1)])
    again = open_store()
    with pytest.raises(StoreMismatch, match="reindex"):
        again.open("another-model", DIM)
    with pytest.raises(StoreMismatch):
        again.open(MODEL, DIM * 2)
    again.open(MODEL, DIM)


def test_unicode_large_metadata_and_odd_ids(store: VectorStore) -> None:
    metadata = {
        "名前": "東京タワー 🗼",
        "quote": 'it\'s "quoted"',
        "long": "x" * 2000,
        "flag": True,
        "pi": 3.14159,
    }
    odd = item(9, id="it's/an odd id ✓", metadata=metadata, description="ünïcödé ✓")
    store.upsert([odd])
    got = store.get("it's/an odd id ✓")
    assert got is not None and got.metadata == metadata and got.description == "ünïcödé ✓"
    assert store.count(parse_filter({"名前": "東京タワー 🗼"})) == 1
    assert store.count(parse_filter({"quote": 'it\'s "quoted"'})) == 1
    assert store.delete(["it's/an odd id ✓"]) == 1


def test_data_survives_reopen(open_store: StoreFactory) -> None:
    store = open_store()
    store.open(MODEL, DIM)
    store.upsert([item(i, words=True, caption="a caption", caption_status=CaptionStatus.DONE) for i in range(3)])
    store.close()
    reopened = open_store()
    assert reopened.stored_model() == (MODEL, DIM)
    reopened.open(MODEL, DIM)
    assert reopened.count() == 3
    assert reopened.get(item(2).record.id) == item(2, caption="a caption", caption_status=CaptionStatus.DONE).record
    assert reopened.search(unit(1001), k=1, field="words")[0].record.id == item(1).record.id


def test_rebuild_switches_atomically(open_store: StoreFactory) -> None:
    store = open_store()
    store.open(MODEL, DIM)
    store.upsert([item(i) for i in range(3)])
    staging = store.start_rebuild("new-model", DIM)
    staging.upsert([item(0)])
    assert store.count() == 3 and store.stored_model() == (MODEL, DIM)  # untouched until finished
    resumed = open_store().start_rebuild("new-model", DIM)
    assert list(resumed.ids()) == [item(0).record.id]  # an interrupted rebuild resumes
    resumed.upsert([item(1), item(2)])
    store.finish_rebuild()
    assert store.stored_model() == ("new-model", DIM)
    assert store.count() == 3
    assert open_store().stored_model() == ("new-model", DIM)


def test_documents_are_shared_state(open_store: StoreFactory) -> None:
    store = open_store()
    store.open(MODEL, DIM)
    store.put_document("job", "a", '{"state": "running"}')
    store.put_document("job", "b", "two")
    store.put_document("other", "a", "elsewhere")
    store.put_document("job", "a", '{"state": "done"}')
    assert open_store().list_documents("job") == {"a": '{"state": "done"}', "b": "two"}
    store.delete_document("job", "b")
    assert store.get_document("job", "b") is None and store.get_document("other", "a") == "elsewhere"
