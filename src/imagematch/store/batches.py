"""All-or-nothing batches on engines without transactions (Milvus, Pinecone), written once.

A batch that takes more than one request (Milvus writes 500 rows a request; Pinecone writes three namespaces)
is announced first: a document of kind `UNFINISHED` names the batch's generation and the ids of the records it
adds, and is deleted after the last request. Until then every reader of that generation leaves those records
out, whether the writer is still at work (in this process or another) or crashed. `imagematch check` reports
a marker older than `SETTLE_S`, and `--repair` removes what its batch wrote (the upload was never answered as
stored) and then the marker (`BatchMarkers.abandon`).

Only records the batch adds are named: a record it replaces was readable before and stays readable, in its old
or its new version (neither engine keeps both). A later write of a named record supersedes the marker for it.
A batch of one request needs no marker. Readers pay one small documents read a second when no marker exists.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from imagematch.store.documents import Documents
from imagematch.store.shared import new_version

UNFINISHED = "_unfinished_batch"  # document kind: batch id -> Batch as JSON
SETTLE_S = 300.0  # a marker this old belongs to a writer that crashed or gave up, never to one at work
CHECK_EVERY_S = 1.0  # how long a reader keeps what it read of the markers of other processes


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch announced and not finished: the records it adds to `generation` are hidden until it is."""

    key: str
    generation: str
    ids: tuple[str, ...]
    at: float

    def to_json(self) -> str:
        return json.dumps({"generation": self.generation, "ids": list(self.ids), "at": self.at})

    @classmethod
    def from_json(cls, key: str, text: str) -> Batch:
        value = json.loads(text)
        return cls(key, str(value["generation"]), tuple(value["ids"]), float(value["at"]))

    def age(self) -> float:
        return time.time() - self.at


def unfinished(documents: Documents) -> list[Batch]:
    """Every marker of the library (all generations), oldest first."""
    batches = [Batch.from_json(key, text) for key, text in documents.list_documents(UNFINISHED).items()]
    return sorted(batches, key=lambda batch: batch.at)


class BatchMarkers:
    """One generation's markers, for its store object.

    `present(ids)` says which of these records the engine holds now, markers ignored; `erase(ids)` removes every
    row of them in every part of the record (a half-written record included), markers ignored.
    """

    def __init__(
        self,
        documents: Documents,
        generation: Callable[[], str],
        present: Callable[[Sequence[str]], set[str]],
        erase: Callable[[Sequence[str]], None],
    ) -> None:
        self._documents = documents
        self._generation = generation
        self._present = present
        self._erase = erase
        self._lock = threading.Lock()
        self._own: dict[str, Batch] = {}  # this process's batches in flight
        self._read: tuple[float, list[Batch]] | None = None  # (when, markers as read)

    def _markers(self) -> list[Batch]:
        """The markers of this generation: this process's at once, other processes' as read at most
        CHECK_EVERY_S ago."""
        with self._lock:
            read = self._read
        if read is None or time.monotonic() - read[0] > CHECK_EVERY_S:
            generation = self._generation()
            read = (time.monotonic(), [b for b in unfinished(self._documents) if b.generation == generation])
            with self._lock:
                self._read = read
        with self._lock:
            own = list(self._own.values())
        return [*read[1], *(batch for batch in own if batch.key not in {b.key for b in read[1]})]

    def hidden(self) -> frozenset[str]:
        """The ids readers leave out now (empty, the common case, when no batch is unfinished)."""
        return frozenset(image_id for batch in self._markers() for image_id in batch.ids)

    def visible(self, ids: Iterable[str]) -> list[str]:
        hidden = self.hidden()
        return [image_id for image_id in ids if image_id not in hidden]

    def _forget_read(self) -> None:
        with self._lock:
            self._read = None

    @contextmanager
    def writing(self, ids: Sequence[str], *, one_request: bool) -> Iterator[None]:
        """Around the requests of one batch: announced unless `one_request` (atomic by itself). If the body
        raises, the marker stays: the batch is unfinished, and check --repair removes what it wrote."""
        unique = list(dict.fromkeys(ids))
        batch = None
        if not one_request:
            there = self._present(unique)
            adds = tuple(image_id for image_id in unique if image_id not in there)
            if adds:
                batch = Batch(new_version(), self._generation(), adds, time.time())
                with self._lock:
                    self._own[batch.key] = batch  # hidden in this process from now on
        try:
            if batch is not None:
                self._documents.put_document(UNFINISHED, batch.key, batch.to_json())
            yield
            if batch is not None:
                self._documents.delete_document(UNFINISHED, batch.key)
        finally:
            if batch is not None:
                with self._lock:
                    self._own.pop(batch.key, None)
                self._forget_read()
        self._supersede(unique)

    def _supersede(self, written: Sequence[str]) -> None:
        """A record written whole since an older batch named it is no longer that batch's to hide or remove."""
        done = set(written)
        for batch in self._markers():
            if batch.key in self._own or not done & set(batch.ids):
                continue
            rest = tuple(image_id for image_id in batch.ids if image_id not in done)
            if rest:
                self._documents.put_document(
                    UNFINISHED, batch.key, Batch(batch.key, batch.generation, rest, batch.at).to_json()
                )
            else:
                self._documents.delete_document(UNFINISHED, batch.key)
            self._forget_read()

    def abandon(self, batch: Batch) -> int:
        """Remove what an unfinished batch of this generation wrote, then its marker; returns how many of its
        records had rows."""
        written = self._present(batch.ids)
        self._erase(batch.ids)
        self._documents.delete_document(UNFINISHED, batch.key)
        self._forget_read()
        return len(written)

    def clear(self) -> None:
        """After every record of the generation was removed: its markers have nothing left to hide."""
        for batch in self._markers():
            if batch.key not in self._own:
                self._documents.delete_document(UNFINISHED, batch.key)
        self._forget_read()
