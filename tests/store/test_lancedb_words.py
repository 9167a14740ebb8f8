"""The embedded store skips the words list of a library in which no image has words (no caption, description
or text read): the list could find nothing, and LanceDB would scan every row for it. What is written anywhere,
by this process or another, is still found at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imagematch.records import StoredImage
from imagematch.store.lancedb import STATE, LanceStore
from tests.store.test_lancedb_index import DIM, clustered, items


def without_words(vectors: np.ndarray, start: int = 0) -> list[StoredImage]:
    return [StoredImage(item.record, item.vector, None) for item in items(vectors, start)]


def words_found(store: LanceStore, vector: np.ndarray) -> list[str]:
    return [n.id for n in store.nearest(vector, k=5, field="words")] + [
        hit.record.id for hit in store.search(vector, k=5, field="words")
    ]


def store_without_words(tmp_path: Path, seed: int, count: int = 20) -> tuple[LanceStore, np.ndarray]:
    """A library of `count` images none of which has words: its words list finds nothing."""
    vectors = clustered(count, seed=seed)
    store = LanceStore(tmp_path / "db")
    store.open("m", DIM)
    store.upsert(without_words(vectors))
    assert words_found(store, vectors[0]) == []
    return store, vectors


def test_words_written_by_another_process_are_found_at_once(tmp_path: Path) -> None:
    vectors = clustered(40, seed=5)
    server = LanceStore(tmp_path / "db")
    server.open("m", DIM)
    server.upsert(without_words(vectors[:30]))
    assert words_found(server, vectors[0]) == []
    cli = LanceStore(tmp_path / "db")  # the CLI beside the server: its own store on the same folder
    cli.open("m", DIM)
    described = items(vectors[30:31], start=30)
    cli.upsert(described)
    assert words_found(server, vectors[30]) == [described[0].record.id] * 2
    assert server.nearest(vectors[0], k=3)  # the image list is unaffected throughout


def test_a_caption_added_later_is_found(tmp_path: Path) -> None:
    store, vectors = store_without_words(tmp_path, seed=6)
    stored = without_words(vectors)
    other = LanceStore(tmp_path / "db")
    other.open("m", DIM)
    other.update(stored[3].record, vectors[3])  # a caption arrives: its words vector
    assert words_found(store, vectors[3]) == [stored[3].record.id] * 2


def test_a_library_made_before_the_flag_keeps_its_words(tmp_path: Path) -> None:
    vectors = clustered(20, seed=7)
    store = LanceStore(tmp_path / "db")
    store.open("m", DIM)
    store.upsert(items(vectors))
    store._state.delete("starts_with(key, 'words_vectors:')")  # what an earlier version left: no flag
    reopened = LanceStore(tmp_path / "db")
    assert words_found(reopened, vectors[2])[0] == items(vectors)[2].record.id  # read before open: searched
    reopened.open("m", DIM)
    assert words_found(reopened, vectors[2])[0] == items(vectors)[2].record.id
    flags = reopened._db.open_table(STATE).search().where("key = 'words_vectors:images'").to_list()
    assert [row["value"] for row in flags] == ["yes"]


def test_words_of_a_rebuilt_generation_are_found_after_the_switch(tmp_path: Path) -> None:
    store, vectors = store_without_words(tmp_path, seed=8)
    staging = store.start_rebuild("m2", DIM)
    assert words_found(staging, vectors[4]) == []
    staging.upsert(items(vectors))  # the new model's words for every image
    store.finish_rebuild()
    assert words_found(store, vectors[4])[0] == items(vectors)[4].record.id


def test_maintain_finds_words_written_without_the_flag(tmp_path: Path) -> None:
    """A process of an earlier version beside this one writes words without saying so: maintain notices."""
    store, vectors = store_without_words(tmp_path, seed=9)
    store._table.update(where=f"id = '{items(vectors)[5].record.id}'", values={"words_vector": vectors[5].tolist()})
    store.maintain()
    reader = LanceStore(tmp_path / "db")
    assert words_found(reader, vectors[5]) == [items(vectors)[5].record.id] * 2
