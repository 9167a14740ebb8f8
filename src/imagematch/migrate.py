"""Copy a library from one store to another without re-embedding: `imagematch migrate --to STORE`.

Records (with their descriptions, captions and metadata) and both vectors move as they are, so the target
serves the same searches as soon as the copy ends. The copy is resumable: records already in the target
are skipped when they still equal the source's, record and vectors, so an interrupted run (even killed) is
finished by running it again, also after the source served and changed in between: edited records are
copied again, and records deleted from the source since are removed from a target this migration filled
(the MIGRATION document marks it until the copy is verified; Library.verify_model refuses to serve a store
so marked). The search tuning of the model (`imagematch tune`) comes along; the batch-job history (documents) stays
behind, as it describes work done by the old deployment.
Stop writers (servers, `index`) while it runs: the final check compares the two stores and fails when they
differ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from imagematch.records import ImageMatchError, StoredImage, Vector
from imagematch.store import tuned
from imagematch.store.base import Records, VectorStore

log = logging.getLogger(__name__)

MIGRATION = "migration"  # document kind; key "source": the source store's name while a copy is unfinished


class MigrationError(ImageMatchError):
    """The target does not hold what the source holds after the copy."""


@dataclass(frozen=True, slots=True)
class MigrationReport:
    model_id: str
    dim: int
    total: int  # records in the source
    copied: int  # written by this run
    skipped: int  # already in the target, from an earlier run, and equal to the source's
    removed: int  # left in the target by an earlier run, deleted from the source since
    seconds: float


def migrate(
    source: VectorStore,
    target: VectorStore,
    *,
    batch: int = 500,
    on_progress: Callable[[int, int], None] | None = None,
) -> MigrationReport:
    """Copy every record of `source`, with both its vectors, into `target`, then verify the counts.

    The target is opened for the source's model (StoreMismatch when it holds another). `on_progress(done,
    total)` is called after each batch; an exception it raises stops the copy, and the next run resumes.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    started = time.monotonic()
    stored = source.stored_model()
    if stored is None:
        raise ImageMatchError(f"the {source.name} store holds no library yet: there is nothing to migrate")
    model_id, dim = stored
    source.open(model_id, dim)
    target.open(model_id, dim)
    present = set(target.ids())
    ids = list(source.ids())
    unfinished = target.get_document(MIGRATION, "source") == source.name
    if not present and not unfinished:  # marked before its first record, so a crash leaves it marked
        target.put_document(MIGRATION, "source", source.name)
        unfinished = True
    removed = _remove_deleted(target, present - set(ids)) if unfinished else 0
    current = _unchanged(source, target, [i for i in ids if i in present], batch)
    todo = [i for i in ids if i not in current]
    skipped = len(current)
    copied = 0
    log.info("migrating %d records (%d already there) from %s to %s", len(ids), skipped, source.name, target.name)
    if on_progress:
        on_progress(skipped, len(ids))
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        records = source.get_many(chunk)
        vectors = source.get_vectors(chunk)
        items = [StoredImage(records[i], *vectors[i]) for i in chunk if i in records and i in vectors]
        target.upsert(items)
        copied += len(items)
        if on_progress:
            on_progress(skipped + copied, len(ids))
    target.maintain()
    _verify(source, target)
    tuned.copy(source, target, model_id)  # the search tuning belongs to the library and its model
    target.delete_document(MIGRATION, "source")
    return MigrationReport(model_id, dim, len(ids), copied, skipped, removed, time.monotonic() - started)


def _remove_deleted(target: Records, stale: set[str]) -> int:
    """Records an earlier run of this migration copied that the source no longer holds."""
    if not stale:
        return 0
    log.info("removing %d records deleted from the source since the last run", len(stale))
    return target.delete(sorted(stale))


def _unchanged(source: Records, target: Records, ids: list[str], batch: int) -> set[str]:
    """The ids whose record and both vectors in the target equal the source's: a re-run skips only those, so
    records edited in the source since the last run (the old library served after a crash) are copied again."""
    same: set[str] = set()
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        records, copies = source.get_many(chunk), target.get_many(chunk)
        vectors, copied = source.get_vectors(chunk), target.get_vectors(chunk)
        same.update(
            image_id
            for image_id in chunk
            if image_id in records
            and records[image_id] == copies.get(image_id)
            and image_id in copied
            and _same_vectors(vectors[image_id], copied[image_id])
        )
    return same


def _same_vectors(ours: tuple[Vector, Vector | None], theirs: tuple[Vector, Vector | None]) -> bool:
    (image, words), (copied_image, copied_words) = ours, theirs
    if (words is None) != (copied_words is None) or not np.allclose(image, copied_image, atol=1e-6):
        return False
    return words is None or bool(np.allclose(words, copied_words, atol=1e-6))  # type: ignore[arg-type]


def _verify(source: VectorStore, target: VectorStore) -> None:
    missing = set(source.ids()) - set(target.ids())
    if missing:
        sample = ", ".join(sorted(missing)[:5])
        raise MigrationError(f"{len(missing)} records did not reach the {target.name} store (e.g. {sample}); run again")
    source_count, target_count = source.count(), target.count()
    if source_count != target_count:
        raise MigrationError(
            f"the {source.name} store holds {source_count} records but the {target.name} store {target_count}: "
            "the target held other records, or something wrote to a store during the copy"
        )
