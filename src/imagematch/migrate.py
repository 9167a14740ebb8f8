"""Copy a library from one store to another without re-embedding: `imagematch migrate --to STORE`.

Records (with their descriptions, captions and metadata) and both vectors move as they are, so the target
serves the same searches as soon as the copy ends. The copy is resumable: records already in the target
are skipped, so an interrupted run is finished by running it again. The batch-job history (documents)
stays behind; it describes work done by the old deployment. Stop writers (servers, `index`) while it runs:
the final check compares the two stores and fails when they differ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from imagematch.records import ImageMatchError, StoredImage
from imagematch.store.base import VectorStore

log = logging.getLogger(__name__)


class MigrationError(ImageMatchError):
    """The target does not hold what the source holds after the copy."""


@dataclass(frozen=True, slots=True)
class MigrationReport:
    model_id: str
    dim: int
    total: int  # records in the source
    copied: int  # written by this run
    skipped: int  # already in the target, from an earlier run
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
    already = set(target.ids())
    ids = list(source.ids())
    todo = [i for i in ids if i not in already]
    skipped = len(ids) - len(todo)
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
    return MigrationReport(model_id, dim, len(ids), copied, skipped, time.monotonic() - started)


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
