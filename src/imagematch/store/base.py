"""The `VectorStore` protocol every storage backend implements, and helpers they share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Literal, Protocol

from imagematch.records import Filter, Hit, ImageRecord, Neighbour, PageCursor, StoredImage, Vector
from imagematch.store.batches import Batch
from imagematch.store.generations import Generations

VectorField = Literal["image", "words"]


class VectorStore(Protocol):
    """Records, their two vectors, and the queries the library needs, in one place.

    Writes of a batch are atomic: after a crash either every record of `upsert(items)` is there or none (see
    `upsert`).
    """

    name: str

    def open(self, model_id: str, dim: int) -> None:
        """Create the store for this model, or check it was built with it (raises StoreMismatch)."""

    def stored_model(self) -> tuple[str, int] | None:
        """The model id and dimension the store was built with; None for a store never opened."""

    def put_document(self, kind: str, key: str, value: str) -> None:
        """Small shared state (batch jobs, queues) kept with the library, so every server process sees it."""

    def get_document(self, kind: str, key: str) -> str | None: ...

    def exclusive(self) -> AbstractContextManager[object]:
        """Held by one process of the library at a time, around a check-then-write (the duplicate check and the
        write after it, a caption lease, check --repair's last look before moving a file): a file lock for the
        stores on this machine's disk (LanceDB, Milvus Lite); a Milvus server and Pinecone hold nothing."""

    def list_documents(self, kind: str) -> dict[str, str]: ...

    def delete_document(self, kind: str, key: str) -> None: ...

    @property
    def generation_name(self) -> str:
        """The generation this store object reads and writes (see store/generations.py)."""

    def generations(self) -> Generations:
        """The live and staging generations as stored now (a cheap read: every process checks it often)."""

    def at(self, name: str) -> VectorStore:
        """The same library's generation `name`, as a store of its own."""

    def drop_generation(self, name: str) -> None: ...

    def start_rebuild(self, model_id: str, dim: int) -> VectorStore:
        """A staging store to re-embed the library into; an interrupted rebuild for the same model resumes."""

    def finish_rebuild(self) -> None:
        """Atomically make the staging store the library (and its model the stored model); the old generation
        is retired (generations.retire), not dropped, so processes still reading it are not cut off."""

    def upsert(self, items: Sequence[StoredImage]) -> None:
        """Write the records, all or nothing. LanceDB writes them in one atomic merge. Milvus and Pinecone have no
        transactions: a batch of more than one request is marked first (store/batches.py), readers leave its new
        records out until its last request is done, and `imagematch check --repair` removes what a batch that
        never finished wrote. A record the batch replaces stays readable throughout, old or new."""

    def abandon_batch(self, batch: Batch) -> int:
        """Remove what an unfinished batch of this generation wrote (it was never answered as stored) and its
        marker; returns how many of its records had been written."""

    def update(self, record: ImageRecord, words_vector: Vector | None) -> None:
        """Replace a record's fields and its words vector; its image vector is kept."""

    def get(self, image_id: str) -> ImageRecord | None: ...

    def get_many(self, ids: Sequence[str]) -> dict[str, ImageRecord]: ...

    def get_vectors(self, ids: Sequence[str]) -> dict[str, tuple[Vector, Vector | None]]: ...

    def delete(self, ids: Sequence[str]) -> int:
        """Remove records; returns how many existed."""

    def count(self, flt: Filter | None = None) -> int: ...

    def page(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        newest_first: bool = True,
        flt: Filter | None = None,
        after: PageCursor | None = None,
    ) -> list[ImageRecord]:
        """A page of records ordered by the time they were added, then by id.

        With `after` (PageCursor.of the last record of the previous page) the page is the next `limit` records
        after that one, and `offset` is ignored: records added or deleted between pages neither repeat nor
        leave gaps, and a deep page costs what the first does. `offset` alone skips that many (kept for
        clients that page by number; it reads every matching key)."""

    def ids(self) -> Iterator[str]: ...

    def search(self, vector: Vector, *, k: int, flt: Filter | None = None, field: VectorField = "image") -> list[Hit]:
        """The k records whose `field` vector is most similar (cosine) to `vector`, filter applied first."""

    def nearest(
        self, vector: Vector, *, k: int, flt: Filter | None = None, field: VectorField = "image"
    ) -> list[Neighbour]:
        """Like `search` without the records (fusion reads many candidates and shows a few), with both vectors
        of each where the store can return them at little cost."""

    def keyword_search(self, text: str, *, k: int, flt: Filter | None = None) -> list[Hit]:
        """The k records whose words (imagematch.keywords.search_text) best match `text` by BM25, filter applied
        first; records without any of its words are not returned. Scores are only comparable within one call."""

    def find_file_hash(self, file_hash: str) -> ImageRecord | None: ...

    def near_phash(self, phash: int, max_distance: int) -> list[tuple[ImageRecord, int]]:
        """Records whose pHash is within max_distance bits of phash, closest first."""

    def reset(self) -> None:
        """Remove every record (the model guard is kept)."""

    def maintain(self) -> None:
        """Housekeeping after large writes: compaction, old versions, indexes."""

    def close(self) -> None: ...
