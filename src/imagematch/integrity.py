"""`imagematch check`: verify that records, files and vectors agree, and repair what can be repaired.

Repairs never delete user data silently: an original without a record is moved to lost+found (re-index it to
get it back), only derived files (thumbnails, cut-out previews, unfinished temporary files) are removed or
rebuilt, and a record whose original is gone is reported for the user to decide.

It runs beside live servers. Files are listed before records, so a file an upload writes after the listing
is not looked at, and an upload committed before the record listing is seen with its files. What is left, a
file whose upload commits between the two listings, is looked up again in the store just before it is moved,
under the store's exclusive lock, which every upload holds from its first file to its record: a file without
a record then is truly an orphan. Temporary files younger than `IN_FLIGHT_S` are writes in progress, kept.

A store batch that never finished (store/batches.py: Milvus and Pinecone mark a batch of several requests) is
reported once its marker is older than `batches.SETTLE_S`; repair removes what it wrote, whose uploads were
never answered as stored, so their originals are then orphans (moved to lost+found). The files of a batch still
in flight are left alone.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from imagematch import media
from imagematch.library import Library
from imagematch.records import ImageRecord
from imagematch.store.base import Records, VectorStore
from imagematch.store.batches import SETTLE_S, Batch, unfinished

log = logging.getLogger(__name__)

IN_FLIGHT_S = 300.0  # a temporary file this young may be a write in progress (a store without a lock)

ProblemKind = Literal[
    "missing_original",
    "missing_thumbnail",
    "missing_vector",
    "missing_cutout",
    "orphan_original",
    "orphan_thumbnail",
    "orphan_cutout",
    "temporary_file",
    "same_file_twice",
    "unfinished_batch",
]


@dataclass(slots=True)
class Problem:
    kind: ProblemKind
    subject: str  # an image id or a file path
    detail: str
    fixed: bool = False


@dataclass(slots=True)
class CheckReport:
    records: int = 0
    originals: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def unfixed(self) -> list[Problem]:
        return [p for p in self.problems if not p.fixed]

    @property
    def healthy(self) -> bool:
        return not self.unfixed


def check(library: Library, *, repair: bool = False, page: int = 1000) -> CheckReport:
    report = CheckReport()
    report.problems += check_batches(library.store, repair=repair)
    blobs = library.blobs
    # Files first (see the module's docstring): what an upload writes from now on is not looked at.
    originals = set(blobs.original_ids())
    thumbnails = set(blobs.thumbnail_ids())
    cutouts = set(blobs.cutout_ids())
    derived = {"orphan_thumbnail": thumbnails, "orphan_cutout": cutouts}
    record_ids: set[str] = set()
    hashes: Counter[str] = Counter()
    for records in _pages(library.catalog.iter_records(page), page):
        # One pass: each page of records is checked as it is read. A file missing from the listing may have
        # been written since (an upload committed after it), so only then is the file itself looked up.
        vectors = library.store.get_vectors([record.id for record in records])
        for record in records:
            record_ids.add(record.id)
            hashes[record.file_hash] += 1
            _check_record(library, record, record.id in vectors, (originals, thumbnails, cutouts), repair, report)
    report.records = len(record_ids)
    for file_hash, count in hashes.items():
        if count > 1:
            report.problems.append(Problem("same_file_twice", file_hash, f"the same file is stored {count} times"))

    report.originals = len(originals)
    store = library.store  # read once, outside the lock (see captions._claim)
    with store.exclusive():  # no upload is between its files and its record meanwhile
        # A batch in flight in another process (a store without a lock) has its files and not yet its records.
        record_ids |= {i for batch in unfinished(store) if batch.age() < SETTLE_S for i in batch.ids}
        for image_id in sorted(_without_record(store, originals - record_ids)):
            problem = Problem("orphan_original", image_id, "an original with no record (an interrupted ingest)")
            if repair:
                problem.detail = f"moved to {blobs.quarantine_original(image_id)}; re-index it to add it back"
                problem.fixed = True
            report.problems.append(problem)
        for kind, found in derived.items():
            for image_id in sorted(_without_record(store, found - record_ids)):
                problem = Problem(kind, image_id, "a derived file with no record")  # type: ignore[arg-type]
                if repair:
                    blobs.delete_derived(image_id)
                    problem.fixed = True
                report.problems.append(problem)
        for path in blobs.temporary_files():
            if _age(path) < IN_FLIGHT_S:
                continue  # a write in progress, or just finished
            problem = Problem("temporary_file", str(path), "an unfinished write")
            if repair:
                path.unlink(missing_ok=True)
                problem.fixed = True
            report.problems.append(problem)
    log.info(
        "check: %d records, %d originals, %d problems, %d fixed",
        report.records,
        report.originals,
        len(report.problems),
        len(report.problems) - len(report.unfixed),
    )
    return report


def check_batches(store: VectorStore, *, repair: bool, settle: float = SETTLE_S) -> list[Problem]:
    """Batches whose marker is older than `settle` (their writer crashed or failed), and with `repair` their
    records removed, in whichever generation they were written to."""
    return [_unfinished_batch(store, batch, repair) for batch in unfinished(store) if batch.age() >= settle]


def _unfinished_batch(store: VectorStore, batch: Batch, repair: bool) -> Problem:
    problem = Problem(
        "unfinished_batch",
        batch.key,
        f"a batch of {len(batch.ids)} new records in {batch.generation} never finished (a crash or a store error "
        "between its requests); its records are hidden",
    )
    if repair:
        target = store if batch.generation == store.generation_name else store.at(batch.generation)
        written = target.abandon_batch(batch)
        problem.detail = (
            f"removed {written} partly written records of a batch of {len(batch.ids)} in {batch.generation} that "
            "never finished (their uploads were never answered as stored)"
        )
        problem.fixed = True
    return problem


def _pages(records: Iterable[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    page: list[ImageRecord] = []
    for record in records:
        page.append(record)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def _check_record(
    library: Library,
    record: ImageRecord,
    has_vector: bool,
    listed: tuple[set[str], set[str], set[str]],
    repair: bool,
    report: CheckReport,
) -> None:
    blobs = library.blobs
    image_id = record.id
    originals, thumbnails, cutouts = listed
    if not has_vector:
        report.problems.append(Problem("missing_vector", image_id, "the record has no vector; run reindex"))
    has_original = image_id in originals or blobs.has_original(image_id)
    if not has_original:
        report.problems.append(
            Problem("missing_original", image_id, "the original file is gone; delete the record or restore it")
        )
    if image_id not in thumbnails and not blobs.has_thumbnail(image_id):
        problem = Problem("missing_thumbnail", image_id, "no thumbnail")
        if repair and has_original:
            problem.fixed = _rebuild_thumbnail(library, image_id, record.width * record.height)
        report.problems.append(problem)
    if (
        record.cutout
        and image_id not in cutouts
        and blobs.cutout_path(image_id) is None
        and not blobs.read_cutout(image_id)
    ):
        report.problems.append(Problem("missing_cutout", image_id, "the cut-out preview is missing"))


def _rebuild_thumbnail(library: Library, image_id: str, pixels: int) -> bool:
    data = library.blobs.read_original(image_id)
    if data is None:
        return False
    try:
        decoded = media.decode(data, max_pixels=max(library.settings.max_pixels, pixels))
    except Exception as error:
        log.warning("check: cannot rebuild the thumbnail of %s: %s", image_id, error)
        return False
    library.blobs.put_thumbnail(image_id, media.make_thumbnail(decoded.image))
    return True


def _without_record(store: Records, ids: Iterable[str], page: int = 500) -> list[str]:
    """Of these ids, those the store has no record of now (an upload may have committed since the listing)."""
    candidates = sorted(ids)
    missing = []
    for start in range(0, len(candidates), page):
        chunk = candidates[start : start + page]
        found = store.get_many(chunk)
        missing += [image_id for image_id in chunk if image_id not in found]
    return missing


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0  # renamed into place meanwhile: a finished write
