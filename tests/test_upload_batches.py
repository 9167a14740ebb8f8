"""Concurrent uploads share the model's calls and the store's writes, and each still gets the result (or the error)
it gets alone: the duplicate check sees the uploads it is written with, a failure stays with its own upload."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from imagematch.ai.batching import SharedCallsEmbedder
from imagematch.ai.embedder import Matrix, Prepared
from imagematch.factory import build_library
from imagematch.library import Library
from imagematch.records import ImageMatchError, IngestResult, StoredImage
from imagematch.settings import Settings
from testkit.images import distinct_jpegs, jpeg

Outcome = IngestResult | ImageMatchError


def _wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


@dataclass
class Held:
    """The first model call waits until `model_waiting` uploads queue behind it, and the first write until
    `write_waiting` uploads wait for the next write: so the test, not the scheduler, decides what is concurrent."""

    library: Library
    model_waiting: int
    write_waiting: int
    model_entered: threading.Event
    writes: list[int]

    @property
    def embedder(self) -> SharedCallsEmbedder:
        embedder = self.library.embedder
        assert isinstance(embedder, SharedCallsEmbedder)
        return embedder


def hold(monkeypatch: pytest.MonkeyPatch, library: Library, model_waiting: int, write_waiting: int) -> Held:
    library.open(ingest=True)
    held = Held(library, model_waiting, write_waiting, threading.Event(), [])
    inner, store = held.embedder.inner, library.pairing.store
    encode, upsert = inner.encode_prepared, store.upsert

    def held_encode(batch: Sequence[Prepared]) -> Matrix:
        if not held.model_entered.is_set():
            held.model_entered.set()
            _wait_until(lambda: held.embedder.images.waiting >= model_waiting)
        return encode(batch)

    def held_upsert(items: Sequence[StoredImage]) -> None:
        if not held.writes:
            _wait_until(lambda: library.ingest._group_writes.waiting >= write_waiting)
        held.writes.append(len(items))
        upsert(items)

    monkeypatch.setattr(inner, "encode_prepared", held_encode)
    monkeypatch.setattr(store, "upsert", held_upsert)
    return held


def upload_all(library: Library, uploads: Sequence[tuple[bytes, str]]) -> list[Outcome]:
    def upload(item: tuple[bytes, str]) -> Outcome:
        try:
            return library.ingest.add(item[0], filename=item[1])
        except ImageMatchError as error:
            return error

    with ThreadPoolExecutor(len(uploads)) as clients:
        return list(clients.map(upload, uploads))


def test_eight_concurrent_uploads_share_model_calls_and_writes_and_store_what_they_store_alone(
    monkeypatch: pytest.MonkeyPatch, library: Library, settings: Settings
) -> None:
    images = [(data, f"noise-{n}.jpg") for n, data in enumerate(distinct_jpegs(8, seed=31))]
    alone = build_library(settings.model_copy(update={"data_dir": settings.data_dir / "alone"}))
    ids_alone = {name: alone.ingest.add(data, filename=name).image_id for data, name in images}
    held = hold(monkeypatch, library, model_waiting=7, write_waiting=7)
    calls, inputs = held.embedder.images.calls, held.embedder.images.inputs

    results = upload_all(library, images)

    assert [r.status for r in results if isinstance(r, IngestResult)] == ["added"] * 8
    assert library.settings.embed_batch_size == 4  # the most one model call or one write takes
    assert (held.embedder.images.calls - calls, held.embedder.images.inputs - inputs) == (3, 8)
    assert held.writes == [1, 4, 3]
    assert library.catalog.count() == 8
    for (data, name), result in zip(images, results, strict=True):
        assert isinstance(result, IngestResult) and result.record is not None
        assert result.filename == name and result.record.filename == name
        assert result.record.id == ids_alone[name]
        stored = library.pairing.store.get_vectors([result.record.id])[result.record.id][0]
        by_itself = alone.pairing.store.get_vectors([result.record.id])[result.record.id][0]
        np.testing.assert_allclose(stored, by_itself, atol=1e-4)
        assert library.blobs.read_original(result.record.id) == data


@pytest.mark.parametrize("copy", ["the same file", "the same picture saved again"])
def test_two_uploads_of_one_picture_written_together_store_it_once(
    monkeypatch: pytest.MonkeyPatch, library: Library, copy: str
) -> None:
    """A third upload holds the model and the write, so the two copies share one model call and one write."""
    first = jpeg("chelsea")
    second = first if copy == "the same file" else jpeg("chelsea", quality=80)
    held = hold(monkeypatch, library, model_waiting=2, write_waiting=2)
    with ThreadPoolExecutor(1) as plug:
        plugged = plug.submit(library.ingest.add, jpeg("astronaut"), filename="astronaut.jpg")
        held.model_entered.wait(30)
        copies = upload_all(library, [(first, "cat-1.jpg"), (second, "cat-2.jpg")])
    assert plugged.result().status == "added"
    assert held.writes == [1, 1]  # the second write held both copies, and stored one
    statuses = sorted(r.status for r in copies if isinstance(r, IngestResult))
    assert statuses == ["added", "duplicate"]
    added = next(r for r in copies if isinstance(r, IngestResult) and r.status == "added")
    duplicate = next(r for r in copies if isinstance(r, IngestResult) and r.status == "duplicate")
    assert added.record is not None and duplicate.existing is not None
    assert duplicate.existing.id == added.record.id
    if copy == "the same file":
        assert duplicate.distance == 0 and "the same file" in duplicate.reason
    assert library.catalog.count() == 2


def test_an_upload_that_cannot_be_decoded_fails_alone_among_concurrent_ones(library: Library) -> None:
    images = [(data, f"noise-{n}.jpg") for n, data in enumerate(distinct_jpegs(7, seed=41))]
    broken = jpeg("coffee")[:2000]  # a JPEG cut short
    results = upload_all(library, [*images[:3], (broken, "broken.jpg"), *images[3:]])
    failed = results.pop(3)
    assert isinstance(failed, ImageMatchError) and "corrupt" in str(failed)
    assert [r.status for r in results if isinstance(r, IngestResult)] == ["added"] * 7
    assert library.catalog.count() == 7


def test_a_shared_write_that_fails_for_one_upload_fails_only_that_one(
    monkeypatch: pytest.MonkeyPatch, library: Library
) -> None:
    """A first upload holds the write until four wait for it; the original of one of the four cannot be saved."""
    images = [(data, f"noise-{n}.jpg") for n, data in enumerate(distinct_jpegs(4, seed=51))]
    held = hold(monkeypatch, library, model_waiting=4, write_waiting=4)
    put_original = library.blobs.put_original

    def full_disk_for_one(image_id: str, extension: str, data: bytes) -> None:
        if data == images[2][0]:
            raise OSError(28, "No space left on device")
        put_original(image_id, extension, data)

    monkeypatch.setattr(library.blobs, "put_original", full_disk_for_one)

    def upload(item: tuple[bytes, str]) -> IngestResult | OSError:
        try:
            return library.ingest.add(item[0], filename=item[1])
        except OSError as error:
            return error

    with ThreadPoolExecutor(1) as plug:
        plugged = plug.submit(library.ingest.add, jpeg("astronaut"), filename="astronaut.jpg")
        held.model_entered.wait(30)
        with ThreadPoolExecutor(len(images)) as clients:
            outcomes = list(clients.map(upload, images))
    assert plugged.result().status == "added"
    assert isinstance(outcomes[2], OSError) and "No space left" in str(outcomes[2])
    assert [o.status for o in outcomes if isinstance(o, IngestResult)] == ["added"] * 3
    assert held.writes == [1, 1, 1, 1]  # the shared write of the four failed, then each of them wrote alone
    assert library.catalog.count() == 4
