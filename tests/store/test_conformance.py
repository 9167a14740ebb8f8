"""Behaviour every VectorStore backend must have."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from imagematch.filters import parse_filter
from imagematch.fingerprint import phash_from_hex, phash_hex
from imagematch.integrity import check_batches
from imagematch.records import (
    CaptionStatus,
    ImageRecord,
    ImageText,
    Metadata,
    MetadataValue,
    PageCursor,
    StoredImage,
    StoreMismatch,
    TextLine,
)
from imagematch.store import generations, milvus, pinecone
from imagematch.store.base import VectorStore
from imagematch.store.batches import UNFINISHED
from imagematch.store.generations import Generations
from imagematch.store.milvus import MilvusStore
from imagematch.store.pinecone import PineconeStore
from imagematch.store.shared import LIST_TRUNCATION_MARK, TRUNCATION_MARK
from tests.store.conftest import StoreFactory

DIM = 64  # the smallest Pinecone accepts: it keeps the 64-bit pHash as a vector of the index width
MODEL = "test-model"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def item(n: int, *, phash: int | None = None, words: bool = False, **fields: object) -> StoredImage:
    created = fields.pop("created_at", T0 + timedelta(minutes=n))
    record = ImageRecord(
        id=str(fields.pop("id", f"{n:016x}-{n:08x}")),
        phash=phash_hex(phash if phash is not None else n * 0x0101010101010101 % (1 << 64)),
        file_hash=f"{n:064x}",
        filename=f"image-{n}.jpg",
        size=1000 + n,
        width=100 + n,
        height=50 + n,
        format="PNG" if n % 2 else "JPEG",
        created_at=created,  # type: ignore[arg-type]
        updated_at=created,  # type: ignore[arg-type]
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


def _cursor_pass(
    store: VectorStore, limit: int, *, newest_first: bool, flt: object = None, between: object = None
) -> list[str]:
    """Every page after the last record of the one before, calling `between(page_number)` between pages."""
    seen: list[str] = []
    after: PageCursor | None = None
    for number in range(1000):
        page = store.page(limit=limit, newest_first=newest_first, flt=flt, after=after)  # type: ignore[arg-type]
        seen.extend(r.id for r in page)
        if len(page) < limit:
            return seen
        after = PageCursor.of(page[-1])
        if callable(between):
            between(number)
    raise AssertionError("the pages never ended")


def test_cursor_pages_in_order_without_gaps_or_repeats_while_records_come_and_go(store: VectorStore) -> None:
    store.upsert([item(i) for i in range(0, 40, 2)])  # even minutes 0..38
    newest = [item(i).record.id for i in range(38, -1, -2)]

    def meanwhile(number: int) -> None:  # after the first page (38, 36, 34, 32, 30): 30 is the cursor
        if number == 0:
            store.upsert([item(39), item(31)])  # newer than the cursor: belongs to pages already read
            store.upsert([item(29), item(1)])  # older: must come, in its place
            store.delete([item(28).record.id, item(30).record.id])  # gone ahead, and the cursor's own record

    listed = _cursor_pass(store, 5, newest_first=True, between=meanwhile)
    expected = [i for i in newest if i != item(28).record.id]
    expected.insert(expected.index(item(26).record.id), item(29).record.id)
    expected.insert(expected.index(item(0).record.id), item(1).record.id)
    assert listed == expected
    assert len(set(listed)) == len(listed)


def test_cursor_pages_oldest_first_with_a_filter_and_ties(store: VectorStore) -> None:
    # Six records added in the same microsecond, others years apart: pages cut through the tie by id, and a
    # page finds the next records however far in time they are.
    same = T0 + timedelta(days=3)
    tied = [item(100 + n, id=f"tie-{n}", created_at=same) for n in range(6)]
    far = [item(200 + n, created_at=T0 + timedelta(days=900 * n)) for n in range(4)]
    store.upsert([*tied, *far, *(item(i) for i in range(10))])
    every = sorted([*tied, *far, *(item(i) for i in range(10))], key=lambda s: (s.record.created_at, s.record.id))
    assert _cursor_pass(store, 4, newest_first=False) == [s.record.id for s in every]
    newest = sorted(every, key=lambda s: (-s.record.created_at.timestamp(), s.record.id))
    assert _cursor_pass(store, 3, newest_first=True) == [s.record.id for s in newest]
    pngs = parse_filter({"image.format": "PNG"})
    expected = [s.record.id for s in every if s.record.format == "PNG"]
    assert expected and _cursor_pass(store, 2, newest_first=False, flt=pngs) == expected
    added_later = item(300, created_at=T0 + timedelta(days=4000))  # oldest first, a new record comes last

    def meanwhile(number: int) -> None:
        if number == 1:
            store.upsert([added_later])

    assert _cursor_pass(store, 4, newest_first=False, between=meanwhile) == [
        *(s.record.id for s in every),
        added_later.record.id,
    ]


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


def test_nearest_gives_the_ids_and_scores_of_search(store: VectorStore) -> None:
    store.upsert([item(i, words=i % 2 == 0, metadata={"album": "a" if i < 3 else "b"}) for i in range(6)])
    for field, query in (("image", unit(4)), ("words", unit(1002))):
        hits = store.search(query, k=4, field=field)  # type: ignore[arg-type]
        found = store.nearest(query, k=4, field=field)  # type: ignore[arg-type]
        assert [n.id for n in found] == [h.record.id for h in hits]
        assert [n.score for n in found] == pytest.approx([h.score for h in hits], abs=1e-4)
        stored = store.get_vectors([n.id for n in found])
        for n in found:
            if n.vectors is not None:  # where a store returns them, they are the stored ones
                image, words = stored[n.id]
                assert np.allclose(n.vectors[0], image, atol=1e-6)
                assert (n.vectors[1] is None) == (words is None)
    filtered = store.nearest(unit(4), k=6, flt=parse_filter({"album": "a"}))
    assert {n.id for n in filtered} == {item(i).record.id for i in range(3)}


def test_near_duplicate_lookup_by_phash(store: VectorStore) -> None:
    base = 0xF0F0_F0F0_0F0F_0F0F
    store.upsert([item(1, phash=base), item(2, phash=base ^ 0b111), item(3, phash=~base & (2**64 - 1))])
    found = store.near_phash(base ^ 0b1, 4)
    assert [(r.id, d) for r, d in found] == [(item(1).record.id, 1), (item(2).record.id, 2)]
    assert store.near_phash(base, 0)[0][0].id == item(1).record.id
    assert store.find_file_hash(item(3).record.file_hash).id == item(3).record.id  # type: ignore[union-attr]
    assert store.find_file_hash("0" * 63 + "f") is None


def test_every_phash_is_read_once_with_its_id(store: VectorStore) -> None:
    assert store.phashes()[0] == []
    top = 0xFFFF_0000_0000_0001  # the highest bit set: kept signed by some engines, read back unsigned
    store.upsert([item(1, phash=top), item(2, phash=5), item(3, phash=0)])
    store.upsert([item(2, phash=6)])  # written again: still one entry, with the new hash
    ids, hashes = store.phashes()
    assert hashes.dtype == np.uint64
    assert dict(zip(ids, hashes.tolist(), strict=True)) == {
        item(1).record.id: top,
        item(2).record.id: 6,
        item(3).record.id: 0,
    }
    assert len(ids) == 3


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


def test_a_switch_retires_the_old_generation_for_its_readers_and_sweep_drops_it(open_store: StoreFactory) -> None:
    store = open_store()
    store.open(MODEL, DIM)
    store.upsert([item(i) for i in range(3)])
    old = store.generation_name
    reader = open_store()  # a process that has not noticed the switch yet
    staging = store.start_rebuild("new-model", DIM)
    assert store.generations() == Generations(old, staging.generation_name)
    staging.upsert([item(0), item(1)])
    store.finish_rebuild()
    assert open_store().generations() == Generations(staging.generation_name)
    assert reader.generation_name == old and reader.count() == 3  # still readable after the switch
    assert generations.sweep(store) == []  # too recent: a process may still be reading it
    assert generations.sweep(store, older_than=0) == [old]
    assert open_store().count() == 2 and open_store().stored_model() == ("new-model", DIM)
    assert store.list_documents(generations.RETIRED) == {}


def test_a_crash_inside_the_switch_never_takes_the_live_generation_for_staging(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after the live pointer is written and before anything else: the next rebuild, for any model,
    leaves the library the switch made whole."""
    store = open_store()
    store.open(MODEL, DIM)
    store.upsert([item(i) for i in range(3)])
    store.start_rebuild("new-model", DIM).upsert([item(i) for i in range(3)])

    def power_cut(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(type(store), "delete_document", power_cut)
    monkeypatch.setattr(sys.modules[type(store).__module__], "retire", power_cut)
    with contextlib.suppress(KeyboardInterrupt):
        store.finish_rebuild()
    monkeypatch.undo()
    after = open_store()
    assert after.stored_model() == ("new-model", DIM) and after.generations().staging == ""
    again = after.start_rebuild("third-model", DIM)
    assert again.generation_name != after.generations().live and list(again.ids()) == []
    assert open_store().count() == 3 and open_store().stored_model() == ("new-model", DIM)


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


def _ids(records: list[ImageRecord]) -> set[str]:
    return {r.id for r in records}


def _expect(*numbers: int) -> set[str]:
    return {item(n).record.id for n in numbers}


def test_large_batches_page_through_everything(store: VectorStore) -> None:
    store.upsert([item(i) for i in range(2500)])
    assert store.count() == 2500
    seen: list[str] = []
    while page := store.page(offset=len(seen), limit=400, newest_first=False):
        seen.extend(r.id for r in page)
    assert seen == [item(i).record.id for i in range(2500)]
    assert _cursor_pass(store, 400, newest_first=False) == seen
    assert _cursor_pass(store, 700, newest_first=True) == seen[::-1]
    pngs = store.page(offset=100, limit=3, flt=parse_filter({"image.format": "PNG"}))  # odd n, newest first
    assert [r.id for r in pngs] == [item(n).record.id for n in (2299, 2297, 2295)]
    assert store.delete([item(i).record.id for i in range(1500)]) == 1500
    assert store.count() == 1000 and sorted(store.ids()) == sorted(item(i).record.id for i in range(1500, 2500))


def test_filters_on_dates_lists_and_missing_values(store: VectorStore) -> None:
    def custom(n: int) -> dict[str, str | int | float | bool]:
        return {"album": "a" if n < 5 else "b", "flag": n == 3} if n % 2 else {"rating": n, "score": n / 2}

    store.upsert(
        [
            item(
                n,
                metadata=custom(n),
                taken_at=T0 + timedelta(days=n) if n % 3 else None,
                camera="Canon" if n < 4 else "Nikon",
            )
            for n in range(8)
        ]
    )

    def matching(spec: dict[str, object]) -> set[str]:
        flt = parse_filter(spec)
        listed = _ids(store.page(limit=100, flt=flt))
        assert store.count(flt) == len(listed)
        assert {h.record.id for h in store.search(unit(0), k=100, flt=flt)} == listed
        return listed

    day = timedelta(days=1)
    assert matching({"image.taken_at": {"$gte": (T0 + 2 * day).isoformat(), "$lt": (T0 + 6 * day).isoformat()}}) == (
        _expect(2, 4, 5)
    )
    created = {"$gt": (T0 + timedelta(minutes=2)).isoformat(), "$lte": (T0 + timedelta(minutes=5)).isoformat()}
    assert matching({"image.created_at": created}) == _expect(3, 4, 5)
    assert matching({"image.camera": {"$in": ["Canon", "Leica"]}}) == _expect(0, 1, 2, 3)
    assert matching({"album": {"$in": ["b", "z"]}}) == _expect(5, 7)
    assert matching({"album": {"$ne": "a"}}) == _expect(5, 7)  # records without an album do not match
    assert matching({"image.taken_at": {"$ne": (T0 + 2 * day).isoformat()}}) == _expect(1, 4, 5, 7)
    assert matching({"rating": {"$gte": 4}}) == _expect(4, 6)
    assert matching({"score": {"$lt": 1.5}}) == _expect(0, 2)
    assert matching({"flag": True}) == _expect(3)
    assert matching({"album": "nowhere"}) == set()
    assert matching({"image.format": {"$in": ["PNG"]}, "album": "a", "image.width": {"$lte": 103}}) == _expect(1, 3)


def test_filters_beyond_what_a_field_holds_match_nothing_or_everything(store: VectorStore) -> None:
    """Numbers a built-in integer field cannot hold (width is Int32 in LanceDB), numbers between integers and
    dates far from the records' are compared as a user means them, never sent to the store as they came."""
    store.upsert([item(n, taken_at=T0 + timedelta(days=n)) for n in range(4)])  # widths 100 to 103
    every = _expect(0, 1, 2, 3)

    def matching(spec: dict[str, object]) -> set[str]:
        flt = parse_filter(spec)
        listed = _ids(store.page(limit=100, flt=flt))
        assert store.count(flt) == len(listed)
        assert {h.record.id for h in store.search(unit(0), k=100, flt=flt)} == listed
        return listed

    assert matching({"image.width": {"$gt": 3_000_000_000}}) == set()
    assert matching({"image.width": {"$lt": 3_000_000_000}}) == every
    assert matching({"image.width": {"$gte": -(2**63)}}) == every
    assert matching({"image.width": 2**63}) == set()
    assert matching({"image.width": {"$ne": 2**63}}) == every
    assert matching({"image.size": {"$lte": 10**400}}) == every
    assert matching({"image.size": {"$gt": 1e300}}) == set()
    assert matching({"image.width": {"$gt": 101.5}}) == _expect(2, 3)
    assert matching({"image.width": {"$gte": 101.5, "$lte": 102.5}}) == _expect(2)
    assert matching({"image.width": {"$lt": 101.5}}) == _expect(0, 1)
    assert matching({"image.width": 101.0}) == _expect(1)
    assert matching({"image.width": 101.5}) == set()
    assert matching({"image.width": {"$in": [101.5, 102.0, 3_000_000_000]}}) == _expect(2)
    assert matching({"image.width": {"$in": [0.5, 3_000_000_000]}}) == set()
    assert matching({"image.created_at": {"$gte": "0001-01-01"}}) == every
    assert matching({"image.created_at": {"$lt": "0999-12-31"}}) == set()
    assert matching({"image.taken_at": {"$lte": "9999-12-31T23:59:59.999999"}}) == every
    assert matching({"image.taken_at": {"$gte": "2024-01-02T23:00:00-02:00"}}) == _expect(3)


def test_a_filter_on_a_key_whose_values_differ_in_type_matches_only_its_type(store: VectorStore) -> None:
    """`{"album": 0}` where albums are text failed the whole LanceDB query (500); such records do not match."""
    albums: list[str | int | float] = ["moon", 7, "7", "sun", 2.5]
    flags: list[str | bool] = ["yes", "true", "no", True, "false"]
    store.upsert([item(n, metadata={"album": albums[n], "flag": flags[n]}) for n in range(5)])

    def matching(spec: dict[str, object]) -> set[str]:
        flt = parse_filter(spec)
        listed = _ids(store.page(limit=100, flt=flt))
        assert store.count(flt) == len(listed)
        return listed

    assert matching({"album": {"$gt": 0}}) == _expect(1, 4)
    assert matching({"album": {"$in": [7, 2.5]}}) == _expect(1, 4)
    assert matching({"flag": True}) == _expect(3)
    assert matching({"album": "moon"}) == _expect(0)
    # Not equal, none of: a value of another type is different, whatever the store.
    assert matching({"album": {"$ne": 7}}) == _expect(0, 2, 3, 4)
    assert matching({"album": {"$nin": ["moon", "7"]}}) == _expect(1, 3, 4)
    assert matching({"flag": {"$ne": True}}) == _expect(0, 1, 2, 4)


def test_update_replaces_metadata_and_can_drop_the_words_vector(store: VectorStore) -> None:
    store.upsert([item(1, words=True, metadata={"a": 1, "b": "x"}), item(2, words=True)])
    record = item(1).record
    store.update(replace(record, metadata={"a": 2}), None)
    assert store.get(record.id) == replace(record, metadata={"a": 2})
    assert store.count(parse_filter({"b": "x"})) == 0 and store.count(parse_filter({"a": 2})) == 1
    assert store.get_vectors([record.id])[record.id][1] is None
    assert [h.record.id for h in store.search(unit(1001), k=5, field="words")] == [item(2).record.id]
    store.update(replace(record, description="now with words"), unit(55))
    assert store.search(unit(55), k=1, field="words")[0].record.description == "now with words"


def test_metadata_near_the_size_limit_round_trips(store: VectorStore) -> None:
    """About 35 KB of text in one record, counted the strictest way (non-ASCII escaped as JSON does): under
    every store's limits, so it comes back exactly."""
    metadata: dict[str, str | int | float | bool] = {f"key-{i:02d}": "x" * 2000 for i in range(12)}
    metadata["名前"] = "東京タワー 🗼 " * 100
    big = item(4, metadata=metadata, description="ü" * 500 + "u" * 4000, caption="a caption")
    store.upsert([big])
    assert store.get(big.record.id) == big.record
    assert store.count(parse_filter({"名前": "東京タワー 🗼 " * 100})) == 1


def test_oversized_text_is_kept_or_cut_with_a_note_never_refused(store: VectorStore) -> None:
    metadata: dict[str, str | int | float | bool] = {f"k{i:03d}": chr(0x4E00 + i) * 2000 for i in range(100)}
    metadata["number"] = 7
    huge = item(5, metadata=metadata, description="d" * 5000, caption="c" * 100_000)
    store.upsert([huge])
    got = store.get(huge.record.id)
    assert got is not None and got.metadata.keys() == metadata.keys() and got.metadata["number"] == 7
    pairs = [(got.caption, huge.record.caption), (got.description, huge.record.description)]
    pairs += [(str(got.metadata[k]), str(v)) for k, v in metadata.items()]
    for stored, original in pairs:
        kept = stored.removesuffix(TRUNCATION_MARK)
        assert stored == original or (stored.endswith(TRUNCATION_MARK) and original.startswith(kept))


def test_oversized_tag_lists_are_kept_or_cut_with_a_note_never_refused(store: VectorStore) -> None:
    """As many tags as validation lets through (100 lists of 2,000 characters) are beyond Milvus's 64 KB and
    Pinecone's 40 KB: the longest lists keep their first tags and end with a note, never refused."""
    metadata: Metadata = {f"k{i:03d}": [chr(0x4E00 + i) * 20 + f"{n:02d}" for n in range(90)] for i in range(100)}
    metadata["short"] = ["kept"]
    huge = item(6, metadata=metadata)
    store.upsert([huge])
    got = store.get(huge.record.id)
    assert got is not None and got.metadata.keys() == metadata.keys() and got.metadata["short"] == ["kept"]
    for key, tags in metadata.items():
        stored = got.metadata[key]
        assert isinstance(stored, list) and isinstance(tags, list)
        assert stored == tags or (stored[-1] == LIST_TRUNCATION_MARK and stored[:-1] == tags[: len(stored) - 1])


def test_search_edges(store: VectorStore) -> None:
    store.upsert([item(i) for i in range(3)])
    assert len(store.search(unit(0), k=10)) == 3
    assert store.search(unit(0), k=5, flt=parse_filter({"album": "nowhere"})) == []
    assert store.search(unit(0), k=5, field="words") == []
    assert store.get_many([item(1).record.id, item(1).record.id, "missing"]).keys() == {item(1).record.id}


def test_large_documents_and_odd_keys(open_store: StoreFactory) -> None:
    store = open_store()
    store.open(MODEL, DIM)
    big = json.dumps([{"filename": f"фото-{i}.jpg", "status": "added", "note": 'a "quote"\n'} for i in range(15000)])
    store.put_document("job", "ключ/1 ✓", big)
    assert open_store().get_document("job", "ключ/1 ✓") == big
    store.put_document("job", "ключ/1 ✓", "small")
    assert store.get_document("job", "ключ/1 ✓") == "small"
    assert store.list_documents("job") == {"ключ/1 ✓": "small"}


def test_keyword_search_matches_words_in_any_text_field(store: VectorStore) -> None:
    store.upsert(
        [
            item(1, caption="An invoice from ACME for three chairs"),
            item(2, description="Holiday in Biarritz", metadata={"album": "Summer trip", "rating": 5}),
            item(3, id="scan-0001", caption="a receipt"),
            item(4, caption="a dog on the beach", camera="Canon EOS 5D"),
            item(5),
        ]
    )

    def found(text: str) -> list[str]:
        return [h.record.id for h in store.keyword_search(text, k=10)]

    assert found("invoice") == [item(1).record.id]
    assert found("INVOICE, please!") == [item(1).record.id]  # case and punctuation do not matter
    assert found("biarritz") == [item(2).record.id]  # the description
    assert found("summer") == [item(2).record.id]  # a metadata value
    assert found("3") == ["scan-0001"]  # the filename's words: image-3.jpg
    assert found("canon") == [item(4).record.id]  # the camera
    assert found("zeppelin") == []
    assert found("the of and") == []  # nothing but stop words
    both = found("invoice dog")
    assert set(both) == {item(1).record.id, item(4).record.id}
    hits = store.keyword_search("invoice chairs dog", k=10)
    assert hits[0].record.id == item(1).record.id and hits[0].score > hits[1].score > 0  # more words, ranked first
    assert len(store.keyword_search("invoice dog", k=1)) == 1


def test_the_text_read_in_a_picture_round_trips_and_counts_as_keywords(store: VectorStore) -> None:
    lines = (
        TextLine("GRAND OPENING", (0.1, 0.05, 0.9, 0.2), 0.99),
        TextLine("Zanzibar café, 12 Élan street", (0.05, 0.8, 0.95, 0.9), 0.91),
    )
    read = item(1, ocr=ImageText("PP-OCRv4 mobile", lines))
    corrected = item(2, ocr=ImageText("PP-OCRv4 mobile", lines[:1], correction="Quokka bakery"))
    store.upsert([read, corrected, item(3), item(4, ocr=ImageText("PP-OCRv4 mobile"))])
    assert store.get(read.record.id) == read.record
    assert store.get(corrected.record.id) == corrected.record
    got = store.get_many([item(3).record.id, item(4).record.id])
    assert got[item(3).record.id].ocr.pending and not got[item(4).record.id].ocr.pending  # read, nothing found

    def found(text: str) -> list[str]:
        return [h.record.id for h in store.keyword_search(text, k=10)]

    assert found("zanzibar") == [read.record.id] and found("street") == [read.record.id]
    assert found("quokka") == [corrected.record.id]
    assert found("opening") == [read.record.id]  # the correction replaced what was read in the other one
    store.update(replace(corrected.record, ocr=replace(corrected.record.ocr, correction="Wombat bakery")), None)
    assert found("wombat") == [corrected.record.id] and found("quokka") == []


def test_a_long_text_read_in_a_picture_is_kept_as_far_as_the_store_allows(store: VectorStore) -> None:
    lines = tuple(
        TextLine(f"line {n} of a long page of small print", (0.0, n / 2000, 1.0, (n + 1) / 2000), 0.9)
        for n in range(1500)
    )
    stored = item(1, ocr=ImageText("PP-OCRv4 mobile", lines))
    store.upsert([stored])
    got = store.get(stored.record.id)
    assert got is not None and got.ocr.engine == "PP-OCRv4 mobile" and got.ocr.lines
    assert got.ocr.lines == lines[: len(got.ocr.lines)]  # whole lines, the first ones


def test_keyword_search_filters_before_top_k_and_follows_edits(store: VectorStore) -> None:
    store.upsert([item(n, caption=f"invoice number {n}", metadata={"paid": n % 2 == 0}) for n in range(1, 13)])
    unpaid = store.keyword_search("invoice", k=3, flt=parse_filter({"paid": False}))
    assert len(unpaid) == 3 and all(h.record.metadata["paid"] is False for h in unpaid)
    assert [h.record.id for h in store.keyword_search("invoice", k=5, flt=parse_filter({"image.width": 112}))] == [
        item(12).record.id
    ]
    record = item(3).record
    store.update(replace(record, caption="a zeppelin over the bay"), None)
    assert [h.record.id for h in store.keyword_search("zeppelin", k=5)] == [record.id]
    assert record.id not in {h.record.id for h in store.keyword_search("invoice", k=20)}
    store.delete([item(4).record.id])
    assert len(store.keyword_search("invoice", k=20)) == 10


def _matching(store: VectorStore, spec: Mapping[str, object]) -> set[str]:
    """The ids a filter lets through, the same whether listed, counted or searched."""
    flt = parse_filter(spec)
    listed = _ids(store.page(limit=100, flt=flt))
    assert store.count(flt) == len(listed), spec
    assert {h.record.id for h in store.search(unit(0), k=100, flt=flt)} == listed, spec
    return listed


def test_tags_are_lists_whose_members_filters_match(store: VectorStore) -> None:
    """A list of strings was refused as metadata; now a filter on it matches a member, as Pinecone's do."""
    tags: list[MetadataValue | None] = [
        ["beach", "sunset"],
        ["city", "night"],
        ["beach", "Biarritz, France", 'it\'s "quoted"', "東京"],
        "beach",  # text, not a list: equality as before
        None,  # no tags at all
        ["7", "be"],
    ]
    store.upsert([item(n, metadata={"tags": t} if t is not None else {"album": "x"}) for n, t in enumerate(tags)])
    assert store.get(item(2).record.id).metadata["tags"] == tags[2]  # type: ignore[union-attr]
    assert _matching(store, {"tags": "beach"}) == _expect(0, 2, 3)
    assert _matching(store, {"tags": {"$in": ["night", "sunset"]}}) == _expect(0, 1)
    assert _matching(store, {"tags": "Biarritz, France"}) == _expect(2)
    assert _matching(store, {"tags": 'it\'s "quoted"'}) == _expect(2)
    assert _matching(store, {"tags": "東京"}) == _expect(2)
    assert _matching(store, {"tags": "bea"}) == set()  # a member, not a part of one
    assert _matching(store, {"tags": "7"}) == _expect(5) and _matching(store, {"tags": 7}) == set()
    # None of them: records that have tags, none of which is one of these (no tags at all does not match).
    assert _matching(store, {"tags": {"$ne": "beach"}}) == _expect(1, 5)
    assert _matching(store, {"tags": {"$nin": ["beach", "night"]}}) == _expect(5)
    assert _matching(store, {"tags": "beach", "image.format": "JPEG"}) == _expect(0, 2)
    edited = replace(item(1).record, metadata={"tags": ["beach"]})
    store.update(edited, None)
    assert _matching(store, {"tags": "beach"}) == _expect(0, 1, 2, 3)


def test_any_of_all_of_and_none_of_nest(store: VectorStore) -> None:
    """`$or` was taken for a metadata key and matched nothing; `$or`, `$and` and `$nin` now nest as written."""
    albums = ["a", "b", "c", "a", "b", "c", "a", "b"]
    store.upsert(
        [
            item(n, metadata={"album": albums[n], "rating": n}, taken_at=T0 + timedelta(days=n) if n % 2 else None)
            for n in range(8)
        ]
    )
    assert _matching(store, {"$or": [{"album": "c"}, {"rating": {"$gte": 6}}]}) == _expect(2, 5, 6, 7)
    nested = {
        "$or": [
            {"album": "a", "image.format": "PNG"},
            {"$and": [{"album": "b"}, {"$or": [{"rating": 1}, {"rating": {"$gt": 5}}]}]},
        ]
    }
    assert _matching(store, nested) == _expect(1, 3, 7)
    assert _matching(store, {"$and": [{"rating": {"$gte": 2}}, {"rating": {"$lt": 4}}]}) == _expect(2, 3)
    assert _matching(store, {"image.format": "JPEG", "$or": [{"album": "a"}, {"album": "b"}]}) == _expect(0, 4, 6)
    assert _matching(store, {"album": {"$nin": ["a", "b"]}}) == _expect(2, 5)
    assert _matching(store, {"image.format": {"$nin": ["PNG", "GIF"]}}) == _expect(0, 2, 4, 6)
    assert _matching(store, {"image.width": {"$nin": [101, 102, 3_000_000_000]}}) == _expect(0, 3, 4, 5, 6, 7)
    assert _matching(store, {"image.width": {"$nin": [3_000_000_000]}}) == _expect(*range(8))
    day = timedelta(days=1)
    taken = {"image.taken_at": {"$nin": [(T0 + day).isoformat(), (T0 + 5 * day).isoformat()]}}
    assert _matching(store, taken) == _expect(3, 7)  # images without a date do not match
    assert _matching(store, {"$or": [{"album": "zzz"}, {"rating": 99}]}) == set()


def test_camera_and_lens_match_a_part_of_the_name_ignoring_case(store: VectorStore) -> None:
    """ "canon eos r5" found nothing: camera and lens matched only exactly and case-sensitively."""
    cameras = ["Canon EOS R5", "NIKON Z 6_2", "canon eos 5d mark iv", "", "iPhone 15 Pro", "Leica M612"]
    lenses = ["RF24-105mm F4 L IS USM", "NIKKOR Z 24-70mm f/4 S", "EF24-70mm f/2.8L II USM", "", "", ""]
    store.upsert([item(n, camera=cameras[n], lens=lenses[n]) for n in range(len(cameras))])
    assert _matching(store, {"image.camera": "canon"}) == _expect(0, 2)
    assert _matching(store, {"image.camera": "canon eos r5"}) == _expect(0)
    assert _matching(store, {"image.camera": "CANON EOS"}) == _expect(0, 2)
    assert _matching(store, {"image.camera": "r5 canon"}) == _expect(0)  # each word, in any order
    assert _matching(store, {"image.camera": "nik"}) == _expect(1)  # a part of a word
    assert _matching(store, {"image.camera": "6_2"}) == _expect(1)  # `_` is itself, not any character
    assert _matching(store, {"image.camera": "IPHONE"}) == _expect(4)
    assert _matching(store, {"image.camera": {"$in": ["nikon", "iphone"]}}) == _expect(1, 4)
    assert _matching(store, {"image.camera": {"$ne": "canon"}}) == _expect(1, 3, 4, 5)
    assert _matching(store, {"image.camera": {"$nin": ["canon", "nikon"]}}) == _expect(3, 4, 5)
    assert _matching(store, {"image.camera": ""}) == _expect(3)  # no camera recorded
    assert _matching(store, {"image.camera": {"$ne": ""}}) == _expect(0, 1, 2, 4, 5)
    assert _matching(store, {"image.lens": "24-70"}) == _expect(1, 2)
    assert _matching(store, {"image.lens": "usm"}) == _expect(0, 2)
    assert _matching(store, {"image.camera": "canon", "image.lens": "70mm"}) == _expect(2)
    assert _matching(store, {"$or": [{"image.camera": "leica"}, {"image.lens": "nikkor"}]}) == _expect(1, 5)


def _engine_fails_at(store: VectorStore, monkeypatch: pytest.MonkeyPatch, request: int) -> None:
    """The `request`-th request that writes records fails (and only that one), with each request holding at most
    two records: Milvus's rows of the images collection, Pinecone's image vectors (its words and pHash vectors
    go first). LanceDB writes a batch in one atomic merge: its one request fails."""
    calls = 0
    counted: Callable[[tuple[object, ...], dict[str, object]], bool]
    owner: object
    if isinstance(store, MilvusStore):
        monkeypatch.setattr(milvus, "_BATCH_ROWS", 2)
        owner, name = store._client, "upsert"
        counted = lambda args, _kwargs: args[0] == store.images  # noqa: E731
    elif isinstance(store, PineconeStore):
        monkeypatch.setattr(pinecone, "MAX_RECORDS", 2)
        owner, name = store._index, "upsert"
        counted = lambda _args, kwargs: kwargs.get("namespace") == store._space("images")  # noqa: E731
    else:
        owner, name, request = store, "_arrow", 1
        counted = lambda _args, _kwargs: True  # noqa: E731
    real = getattr(owner, name)

    def write(*args: object, **kwargs: object) -> object:
        nonlocal calls
        if counted(args, kwargs):
            calls += 1
            if calls == request:
                raise RuntimeError("the engine failed this request")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, write)


def _shows_exactly(reader: VectorStore, stored: list[StoredImage], absent: list[StoredImage]) -> None:
    """Every reader sees the `stored` records and none of the `absent` ones."""
    expected = {s.record.id for s in stored}
    gone = [s.record.id for s in absent]
    assert reader.count() == len(expected)
    assert reader.count(parse_filter({"image.format": {"$in": ["PNG", "JPEG"]}})) == len(expected)
    assert all(reader.get(i) is None for i in gone) and reader.get_many(gone) == {}
    assert reader.get_vectors(gone) == {}
    assert set(reader.get_many(list(expected))) == expected
    assert _ids(reader.page(limit=100)) == expected
    assert _cursor_pass(reader, 2, newest_first=False) == [
        s.record.id for s in sorted(stored, key=lambda s: s.record.created_at)
    ]
    assert set(reader.ids()) == expected
    assert set(reader.phashes()[0]) == expected
    for one in absent:
        assert {h.record.id for h in reader.search(one.vector, k=20)} == expected
        assert {n.id for n in reader.nearest(one.vector, k=20)} == expected
        assert one.words_vector is not None
        assert {h.record.id for h in reader.search(one.words_vector, k=20, field="words")} == expected
        assert reader.near_phash(phash_from_hex(one.record.phash), 0) == []
        assert phash_from_hex(one.record.phash) not in reader.phashes()[1].tolist()
        assert reader.find_file_hash(one.record.file_hash) is None
        assert reader.keyword_search(one.record.filename.removeprefix("image-").removesuffix(".jpg"), k=20) == []


def test_a_batch_cut_short_by_the_engine_is_invisible_until_repair_removes_it(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine fails after the first request of a batch of several (Milvus and Pinecone have no transactions):
    readers, here and in another process, show none of it; check --repair removes what was written, and the same
    batch written again is whole. A record the broken batch replaced stays readable."""
    store = open_store()
    store.open(MODEL, DIM)
    kept = [item(n, words=True) for n in range(2)]
    store.upsert(kept)
    broken = [item(n, words=True) for n in range(10, 15)]
    _engine_fails_at(store, monkeypatch, request=2)
    with pytest.raises(RuntimeError, match="engine failed"):
        store.upsert([*broken, replace(kept[0], record=replace(kept[0].record, description="edited"))])
    for reader in (store, open_store()):
        _shows_exactly(reader, kept, broken)
    assert check_batches(store, repair=False) == []  # so recent, its writer may still be at work

    store.upsert([broken[0]])  # written whole since: the broken batch no longer hides it or removes it
    assert store.get(broken[0].record.id) == broken[0].record and open_store().count() == 3
    found = check_batches(store, repair=False, settle=0)
    marked = isinstance(store, MilvusStore | PineconeStore)  # LanceDB's one write failed whole: nothing to mark
    assert [p.kind for p in found] == (["unfinished_batch"] if marked else [])
    assert all(p.fixed for p in check_batches(store, repair=True, settle=0))
    assert store.list_documents(UNFINISHED) == {} and check_batches(store, repair=False, settle=0) == []
    for reader in (store, open_store()):
        _shows_exactly(reader, [*kept, broken[0]], broken[1:])  # the rows written of it are gone too

    store.upsert(broken)  # several requests again, none failing
    for reader in (store, open_store()):
        assert reader.count() == 7 and set(reader.ids()) == {s.record.id for s in [*kept, *broken]}
        assert reader.near_phash(phash_from_hex(broken[3].record.phash), 0)[0][0] == broken[3].record
        assert reader.search(broken[4].vector, k=1)[0].record == broken[4].record
    assert store.list_documents(UNFINISHED) == {}


def test_a_batch_marker_alone_is_harmless(open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut right after a batch was announced: nothing of it shows, repair removes the marker, and the
    batch written again is whole."""
    store = open_store()
    store.open(MODEL, DIM)
    kept = [item(1, words=True)]
    store.upsert(kept)
    batch = [item(n, words=True) for n in range(20, 25)]
    monkeypatch.setattr(milvus, "_BATCH_ROWS", 2)
    put_document = store.put_document

    def power_cut_after_the_marker(kind: str, key: str, value: str) -> None:
        put_document(kind, key, value)
        if kind == UNFINISHED:
            raise KeyboardInterrupt

    monkeypatch.setattr(store, "put_document", power_cut_after_the_marker)
    try:
        store.upsert(batch)
    except KeyboardInterrupt:
        assert isinstance(store, MilvusStore | PineconeStore)  # LanceDB marks nothing: its write is atomic
        for reader in (store, open_store()):
            _shows_exactly(reader, kept, batch)
    monkeypatch.undo()
    repaired = check_batches(store, repair=True, settle=0)
    assert all(p.fixed and p.kind == "unfinished_batch" for p in repaired)
    store.upsert(batch)
    assert store.list_documents(UNFINISHED) == {}
    for reader in (store, open_store()):
        assert reader.count() == 6 and set(reader.get_many([s.record.id for s in batch])) == {
            s.record.id for s in batch
        }
