"""The store protocols: a few narrow ones, each one part of what a backend does, and `VectorStore`, all of them.

A backend implements `VectorStore` (store/lancedb.py, store/milvus.py, store/pinecone.py); code that needs only
a part asks for that part (`Documents` for the jobs history or the tuned state, `Records` to copy records), so
what it depends on is plain. Where a backend cannot do what a protocol asks, or does less, the protocol says so.

The documents protocol lives in store/documents.py (generations.py and batches.py need it, and this module
imports them) and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from imagematch.records import Filter, Hit, ImageRecord, Neighbour, PageCursor, StoredImage, Vector
from imagematch.store.batches import Batch
from imagematch.store.documents import Documents
from imagematch.store.generations import GenerationPointers

__all__ = [
    "Documents",
    "DuplicateLookup",
    "GenerationPointers",
    "KeywordSearch",
    "Lifecycle",
    "Rebuilds",
    "Records",
    "VectorField",
    "VectorSearch",
    "VectorStore",
]

VectorField = Literal["image", "words"]


class Lifecycle(Protocol):
    """Opening a store for a model, housekeeping, closing: what the library does once, around everything else."""

    name: str  # the backend's name (store/names.py), in messages

    def open(self, model_id: str, dim: int) -> None:
        """Create the store for this model, or check it was built with it (raises StoreMismatch).

        Pinecone needs a model of at least 64 dimensions (the pHash is a vector of the index's width), and its
        index keeps the dimension it was created with: another one is a StoreMismatch."""

    def stored_model(self) -> tuple[str, int] | None:
        """The model id and dimension the store was built with; None for a store never opened."""

    def maintain(self) -> None:
        """Housekeeping after large writes: compaction, old versions, indexes. Milvus flushes (and compacts on a
        server); Pinecone serverless does this on its own, and its `maintain` does nothing."""

    def close(self) -> None: ...


class Records(Protocol):
    """Image records and their two vectors (image, words), in the store object's generation.

    Writes of a batch are atomic: after a crash either every record of `upsert(items)` is there or none (see
    `upsert`). Reads leave out the records of a batch that has not finished. A filter names fields of
    store/fields.py; a library written before camera and lens filters ignored case (Milvus schema 2, Pinecone
    schema 1) answers such a filter with NotSupported until `imagematch reindex`.
    """

    def upsert(self, items: Sequence[StoredImage]) -> None:
        """Write the records, all or nothing. LanceDB writes them in one atomic merge. Milvus and Pinecone have no
        transactions: a batch of more than one request is marked first (store/batches.py), readers leave its new
        records out until its last request is done, and `imagematch check --repair` removes what a batch that
        never finished wrote. A record the batch replaces stays readable throughout, old or new."""

    def abandon_batch(self, batch: Batch) -> int:
        """Remove what an unfinished batch of this generation wrote (it was never answered as stored) and its
        marker; returns how many of its records had been written. LanceDB never marks a batch: only the marker
        is removed, and 0 returned."""

    def update(self, record: ImageRecord, words_vector: Vector | None) -> None:
        """Replace a record's fields and its words vector; its image vector is kept. A collection made before the
        text in pictures was stored (Milvus, schema 3 and older) refuses a record that holds it: NotSupported."""

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
        clients that page by number; it reads every matching key). Milvus and Pinecone cannot order by a field:
        the keys are sorted here (store/paging.py), and Pinecone reads every matching key, kept for a while."""

    def ids(self) -> Iterator[str]: ...

    def reset(self) -> None:
        """Remove every record (the model guard is kept)."""


class VectorSearch(Protocol):
    """Nearest records by cosine similarity of the image or the words vector, filter applied before the top k."""

    def search(self, vector: Vector, *, k: int, flt: Filter | None = None, field: VectorField = "image") -> list[Hit]:
        """The k records whose `field` vector is most similar (cosine) to `vector`, filter applied first."""

    def nearest(
        self, vector: Vector, *, k: int, flt: Filter | None = None, field: VectorField = "image"
    ) -> list[Neighbour]:
        """Like `search` without the records (fusion reads many candidates and shows a few), with both vectors
        of each where the store can return them at little cost: LanceDB does; Milvus and Pinecone return ids
        and scores only, and fusion reads the vectors it needs with `get_vectors`."""


class KeywordSearch(Protocol):
    """Records by the words of their text (imagematch.keywords), ranked by BM25."""

    def keyword_search(self, text: str, *, k: int, flt: Filter | None = None) -> list[Hit]:
        """The k records whose words (imagematch.keywords.search_text) best match `text` by BM25, filter applied
        first; records without any of its words are not returned. Scores are only comparable within one call.

        What each backend does: LanceDB uses its full-text index (stemmed, accents folded). Milvus uses its
        built-in BM25 (case and accents folded, no stemming); a collection made before it (schema 1) raises
        NotSupported until `imagematch reindex`. Pinecone has no BM25: it selects at most KEYWORD_CANDIDATES
        records sharing a word with `text` and ranks them here, so where more records share its words the best
        ones may be missed; records written before their words were kept (`_terms`) are found after a reindex."""


class DuplicateLookup(Protocol):
    """The two lookups of the duplicate check at every upload: the same file, and a near-identical picture."""

    def find_file_hash(self, file_hash: str) -> ImageRecord | None:
        """A record of the file with this hash, if there is one."""

    def near_phash(self, phash: int, max_distance: int) -> list[tuple[ImageRecord, int]]:
        """Records whose pHash is within max_distance bits of phash, closest first."""

    def phashes(self) -> tuple[list[str], npt.NDArray[np.uint64]]:
        """Every record's id and pHash, each id once: what duplicate review compares across the library, read
        as two columns (LanceDB, Milvus) or from the pHash namespace (Pinecone) instead of as whole records."""


class Rebuilds(GenerationPointers, Protocol):
    """Generations (store/generations.py): reading other ones, and building a new one to switch the library to
    (`imagematch reindex` with another model) while processes keep serving the live one."""

    def at(self, name: str) -> VectorStore:
        """The same library's generation `name`, as a store of its own."""

    def start_rebuild(self, model_id: str, dim: int) -> VectorStore:
        """A staging store to re-embed the library into; an interrupted rebuild for the same model resumes.

        A Pinecone index keeps its dimension: a model of another dimension is a StoreMismatch (a new index is
        the way there)."""

    def finish_rebuild(self) -> None:
        """Atomically make the staging store the library (and its model the stored model); the old generation
        is retired (generations.retire), not dropped, so processes still reading it are not cut off."""


class VectorStore(Lifecycle, Documents, Rebuilds, Records, VectorSearch, KeywordSearch, DuplicateLookup, Protocol):
    """Records, their two vectors, and the queries the library needs, in one place: every protocol above.

    What a backend implements, and what the library and its services hold; a function that needs only a part
    asks for that part instead.
    """
