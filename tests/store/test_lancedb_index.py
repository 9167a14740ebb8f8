"""The embedded store past its ANN threshold: an IVF-PQ index, re-ranked, finds what exact search finds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from imagematch.fingerprint import phash_hex
from imagematch.records import ImageRecord, StoredImage
from imagematch.store.lancedb import LanceStore, ann_partitions

DIM = 64


def clustered(count: int, seed: int) -> np.ndarray:
    """CLIP-like vectors: tight clusters around random centres (on uniform noise every index looks bad)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(8, count // 40), DIM))
    vectors = centres[rng.integers(0, len(centres), count)] + 0.35 * rng.normal(size=(count, DIM))
    unit: np.ndarray = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return unit


def items(vectors: np.ndarray, start: int = 0) -> list[StoredImage]:
    now = datetime.now(UTC)
    out = []
    for offset, vector in enumerate(vectors):
        n = start + offset
        record = ImageRecord(f"{n:016x}-{n:08x}", phash_hex(n), f"{n:064x}", f"{n}.jpg", 1, 1, 1, "JPEG", now, now, "m")
        out.append(StoredImage(record, vector, vector))
    return out


def test_index_is_built_past_the_threshold_and_keeps_recall(tmp_path: Path) -> None:
    everything = clustered(3040, seed=1)
    vectors, queries = everything[:3000], everything[3000:]  # queries from the same clusters, not stored
    store = LanceStore(tmp_path / "db", ann_threshold=2000)
    store.open("m", DIM)
    store.upsert(items(vectors[:1500]))
    store.maintain()
    assert not store.indexed  # below the threshold: exact search
    store.upsert(items(vectors[1500:], start=1500))
    store.maintain()
    assert store.indexed
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    found = [[int(hit.record.filename.removesuffix(".jpg")) for hit in store.search(q, k=10)] for q in queries]
    recall = np.mean([len(set(f) & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)])
    assert recall >= 0.95


def test_rows_added_after_the_index_are_found(tmp_path: Path) -> None:
    vectors = clustered(2100, seed=3)
    store = LanceStore(tmp_path / "db", ann_threshold=2000)
    store.open("m", DIM)
    store.upsert(items(vectors[:2000]))
    store.maintain()
    assert store.indexed
    late = items(vectors[2000:], start=2000)
    store.upsert(late)
    for item in late[:5]:
        assert store.search(item.vector, k=1)[0].record.id == item.record.id
        assert store.get(item.record.id) == item.record


def indexed_store(path: Path, vectors: np.ndarray, threshold: int = 300) -> LanceStore:
    store = LanceStore(path, ann_threshold=threshold)
    store.open("m", DIM)
    store.upsert(items(vectors))
    store.maintain()
    return store


def partitions(store: LanceStore, column: str = "vector") -> int | None:
    """The partitions the store recorded for its index of `column`."""
    made_for = store._get_state(store._partitions_key(column))
    return None if made_for is None else int(made_for)


def test_the_index_is_made_again_when_the_library_has_grown_fourfold(tmp_path: Path) -> None:
    """An index trained on the first rows would keep their few partitions forever, each holding ever more rows."""
    vectors = clustered(1400, seed=5)
    store = indexed_store(tmp_path / "db", vectors[:300])
    assert partitions(store) == ann_partitions(300) == 17
    store.upsert(items(vectors[300:1000], start=300))
    store.maintain()  # grown past 3×: the index folds the new rows in and is kept
    assert partitions(store) == 17
    store.upsert(items(vectors[1000:], start=1000))
    store.maintain()  # partitions for 1400 rows are twice those for 300: made again
    assert partitions(store) == partitions(store, "words_vector") == ann_partitions(1400) == 37
    assert all(store.search(item.vector, k=1)[0].record.id == item.record.id for item in items(vectors)[::97])


def test_a_reset_library_gets_an_index_trained_on_its_new_images(tmp_path: Path) -> None:
    store = indexed_store(tmp_path / "db", clustered(1400, seed=6))
    assert partitions(store) == 37
    store.reset()
    assert partitions(store) is None
    fresh = items(clustered(400, seed=7), start=5000)
    store.upsert(fresh)
    store.maintain()
    assert partitions(store) == ann_partitions(400)
    assert all(store.search(item.vector, k=1)[0].record.id == item.record.id for item in fresh[::37])
