"""The Library: the one domain service. It owns the pipeline order and the rules.

Ingest: bytes -> validate and decode once -> file hash and pHash -> duplicate check -> embed -> write the
original and thumbnail (atomic) -> write the record (atomic per batch). A crash between the last two steps
leaves an orphan file, never a record without its file; `check --repair` removes orphans.

Search: each query term becomes a normalised vector; their weighted sum, re-normalised, is the query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from imagematch import media
from imagematch.ai.embedder import Embedder, Prepared
from imagematch.blobs import BlobStore
from imagematch.fingerprint import file_hash, hamming, image_id, perceptual_hash, phash_hex
from imagematch.records import (
    CaptionStatus,
    Filter,
    ImageMatchError,
    ImageRecord,
    ImageTerm,
    IngestResult,
    InvalidInput,
    InvalidQuery,
    Metadata,
    NotFound,
    Query,
    QueryTerm,
    RecordPatch,
    SearchResult,
    StoredImage,
    StoredImageTerm,
    StoreMismatch,
    TextTerm,
    TooLarge,
    Vector,
)
from imagematch.settings import Settings
from imagematch.store.base import VectorStore
from imagematch.validation import clean_description, clean_filename, clean_metadata, clean_text

log = logging.getLogger(__name__)

RESET_PHRASE = "DELETE ALL"


@dataclass(frozen=True, slots=True)
class Upload:
    """One image to ingest: a label and a way to read its bytes (read lazily, in a worker thread)."""

    filename: str
    read: Callable[[], bytes]
    description: str = ""
    metadata: Metadata = field(default_factory=dict)

    @classmethod
    def from_path(cls, path: Path, description: str = "", metadata: Metadata | None = None) -> Upload:
        return cls(str(path), path.read_bytes, description, metadata or {})


@dataclass(slots=True)
class _Candidate:
    """An image decoded and fingerprinted, ready for the duplicate check and the model."""

    record: ImageRecord
    data: bytes
    extension: str
    thumbnail: bytes
    pixels: Prepared
    phash: int
    label: str  # how the caller named it (a path for folder imports); record.filename is the clean name


@dataclass(frozen=True, slots=True)
class LibraryInfo:
    model_id: str
    model_loaded: bool
    dimensions: int | None
    context_length: int | None
    store: str
    stored_model: str | None
    images: int
    data_dir: str


@dataclass(frozen=True, slots=True)
class SimpleSearch:
    """The seed's search form: optional text, optional image (bytes or stored id), and a weight."""

    text: str = ""
    image: bytes | None = None
    image_id: str = ""
    image_weight: float = 0.5
    k: int = 10
    filter: Filter | None = None


class Library:
    def __init__(self, settings: Settings, embedder: Embedder, store: VectorStore, blobs: BlobStore) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self.blobs = blobs
        self._open_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._opened = False
        # Bounds memory under a flood: at most this many requests run the model at once; others queue.
        self._embed_slots = threading.BoundedSemaphore(max(1, settings.decode_workers))

    # lifecycle

    def verify_model(self) -> None:
        """Refuse a store built with another model, before any work (no model load needed)."""
        stored = self.store.stored_model()
        if stored is not None and stored[0] != self.embedder.model_id:
            raise StoreMismatch(
                f"the library was built with model {stored[0]}, but IMAGEMATCH_MODEL is "
                f"{self.embedder.model_id}. Run `imagematch reindex` to re-embed every image with the "
                f"configured model, or set IMAGEMATCH_MODEL back to {stored[0]}"
            )

    def open(self) -> None:
        """Load the model and open the store for it; called lazily by anything that needs vectors."""
        if self._opened:
            return
        with self._open_lock:
            if not self._opened:
                self.verify_model()
                self.store.open(self.embedder.model_id, self.embedder.dim)
                self._opened = True

    def info(self) -> LibraryInfo:
        stored = self.store.stored_model()
        loaded = bool(getattr(self.embedder, "loaded", True))
        return LibraryInfo(
            model_id=self.embedder.model_id,
            model_loaded=loaded,
            dimensions=self.embedder.dim if loaded else (stored[1] if stored else None),
            context_length=self.embedder.context_length if loaded else None,
            store=self.store.name,
            stored_model=stored[0] if stored else None,
            images=self.store.count(),
            data_dir=str(self.settings.data_dir),
        )

    # ingest

    def add(
        self,
        data: bytes,
        *,
        filename: str = "",
        description: str = "",
        metadata: Metadata | None = None,
    ) -> IngestResult:
        """Ingest one image. Raises ImageMatchError for input we cannot accept; duplicates are a result."""
        started = time.perf_counter()
        name = clean_filename(filename)
        text = clean_description(description)
        meta = clean_metadata(metadata)
        self.open()
        known = self._known_file(data, name)
        if known is not None:
            return known
        candidate = self._candidate(data, name, text, meta)
        duplicate = self._duplicate_of(candidate, [])
        if duplicate is not None:
            return duplicate
        with self._embed_slots:
            vector = self.embedder.encode_prepared([candidate.pixels])[0]
        words = self._words_vectors([candidate.record])[0]
        with self._write_lock:
            duplicate = self._duplicate_of(candidate, [])
            if duplicate is not None:
                return duplicate
            self._write([(candidate, vector, words)])
        log.info(
            "added %s %r (%d×%d %s, %s) in %.0f ms",
            candidate.record.id,
            name,
            candidate.record.width,
            candidate.record.height,
            candidate.record.format,
            _human_bytes(candidate.record.size),
            (time.perf_counter() - started) * 1000,
        )
        return IngestResult("added", name, record=candidate.record)

    def add_many(
        self,
        uploads: Iterable[Upload],
        *,
        on_result: Callable[[IngestResult], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[IngestResult]:
        """Ingest many images as a pipeline: decode in worker threads while the model embeds a batch.

        Every upload gets exactly one result (added, duplicate or failed with the reason), in order.
        Safe to interrupt: each batch is written atomically, and a re-run reports the rest as duplicates.
        """
        self.open()
        batch_size = self.settings.embed_batch_size
        ahead = batch_size * 2 + self.settings.decode_workers
        results: list[IngestResult] = []

        def emit(result: IngestResult) -> None:
            results.append(result)
            if result.status == "failed":
                log.warning("failed %r: %s", result.filename, result.reason)
            if on_result is not None:
                on_result(result)

        pending: list[_Candidate] = []
        with ThreadPoolExecutor(self.settings.decode_workers, thread_name_prefix="decode") as pool:
            window: deque[Future[_Candidate | IngestResult]] = deque()
            source = iter(uploads)

            def refill() -> None:
                while len(window) < ahead and not (cancel and cancel.is_set()):
                    upload = next(source, None)
                    if upload is None:
                        return
                    window.append(pool.submit(self._prepare_upload, upload))

            refill()
            while window:
                outcome = window.popleft().result()
                refill()
                if isinstance(outcome, IngestResult):
                    emit(outcome)
                    continue
                pending.append(outcome)
                if len(pending) >= batch_size:
                    self._commit_batch(pending, emit)
                    pending = []
            if pending:
                self._commit_batch(pending, emit)
        self.store.maintain()
        return results

    def _prepare_upload(self, upload: Upload) -> _Candidate | IngestResult:
        """Runs in a worker thread: read, validate, decode, fingerprint and preprocess one upload."""
        label = upload.filename
        try:
            data = upload.read()
            text = clean_description(upload.description)
            meta = clean_metadata(upload.metadata)
            known = self._known_file(data, label)
            if known is not None:
                return known
            return self._candidate(data, clean_filename(label), text, meta, label=label)
        except ImageMatchError as error:
            return IngestResult("failed", label, reason=str(error))
        except OSError as error:
            return IngestResult("failed", label, reason=f"cannot read the file ({error.strerror or error})")

    def _commit_batch(self, batch: list[_Candidate], emit: Callable[[IngestResult], None]) -> None:
        fresh: list[_Candidate] = []
        for candidate in batch:
            duplicate = self._duplicate_of(candidate, fresh)
            if duplicate is not None:
                emit(duplicate)
            else:
                fresh.append(candidate)
        if not fresh:
            return
        started = time.perf_counter()
        vectors = self.embedder.encode_prepared([c.pixels for c in fresh])
        words = self._words_vectors([c.record for c in fresh])
        with self._write_lock:
            keep: list[tuple[_Candidate, Vector, Vector | None]] = []
            for candidate, vector, words_vector in zip(fresh, vectors, words, strict=True):
                duplicate = self._duplicate_of(candidate, [k[0] for k in keep])
                if duplicate is not None:
                    emit(duplicate)
                else:
                    keep.append((candidate, vector, words_vector))
            self._write(keep)
        log.info("added %d images in %.0f ms", len(keep), (time.perf_counter() - started) * 1000)
        for candidate, _, _ in keep:
            emit(IngestResult("added", candidate.label, record=candidate.record))

    def _known_file(self, data: bytes, name: str) -> IngestResult | None:
        """Identical bytes are always a duplicate; checked before any decoding."""
        if len(data) > self.settings.max_upload_bytes:
            raise TooLarge(
                f"the file is {_human_bytes(len(data))}; the limit is {_human_bytes(self.settings.max_upload_bytes)}"
            )
        existing = self.store.find_file_hash(file_hash(data))
        if existing is None:
            return None
        log.info("duplicate %r: the same file as %s", name, existing.id)
        return IngestResult("duplicate", name, existing=existing, distance=0, reason="the same file is already stored")

    def _candidate(self, data: bytes, name: str, description: str, metadata: Metadata, label: str = "") -> _Candidate:
        decoded = media.decode(data, max_pixels=self.settings.max_pixels)
        sha = file_hash(data)
        phash = perceptual_hash(decoded.image)
        now = datetime.now(UTC)
        caption_status = CaptionStatus.NONE
        record = ImageRecord(
            id=image_id(phash, sha),
            phash=phash_hex(phash),
            file_hash=sha,
            filename=name,
            size=len(data),
            width=decoded.width,
            height=decoded.height,
            format=decoded.format,
            created_at=now,
            updated_at=now,
            model_id=self.embedder.model_id,
            description=description,
            caption_status=caption_status,
            metadata=metadata,
            taken_at=decoded.exif.taken_at,
            camera=decoded.exif.camera,
            lens=decoded.exif.lens,
            gps_lat=decoded.exif.gps_lat,
            gps_lon=decoded.exif.gps_lon,
        )
        return _Candidate(
            record=record,
            data=data,
            extension=decoded.extension,
            thumbnail=media.make_thumbnail(decoded.image),
            pixels=self.embedder.prepare(decoded.image),
            phash=phash,
            label=label or name,
        )

    def _duplicate_of(self, candidate: _Candidate, pending: Sequence[_Candidate]) -> IngestResult | None:
        """A stored (or about to be stored) image that this one duplicates: same file or close pHash."""
        limit = self.settings.duplicate_distance
        name = candidate.label
        same_file = self.store.find_file_hash(candidate.record.file_hash)
        if same_file is not None:
            return IngestResult(
                "duplicate", name, existing=same_file, distance=0, reason="the same file is already stored"
            )
        matches = self.store.near_phash(candidate.phash, limit)
        best: tuple[ImageRecord, int] | None = matches[0] if matches else None
        for other in pending:
            distance = hamming(candidate.phash, other.phash)
            if distance <= limit and (best is None or distance < best[1]):
                best = (other.record, distance)
        if best is None:
            return None
        existing, distance = best
        log.info("duplicate %r: %d bits from %s", name, distance, existing.id)
        return IngestResult(
            "duplicate",
            name,
            existing=existing,
            distance=distance,
            reason=f"looks the same as {existing.filename or existing.id} ({distance} of 64 pHash bits differ)",
        )

    def _words_vectors(self, records: Sequence[ImageRecord]) -> list[Vector | None]:
        """The text embedding of each record's own words (description first, then caption), or None."""
        texts = [self.embedder.fit_text([r.description, r.caption]).text if r.words else "" for r in records]
        wanted = [i for i, t in enumerate(texts) if t]
        out: list[Vector | None] = [None] * len(records)
        if wanted:
            vectors = self.embedder.encode_texts([texts[i] for i in wanted])
            for i, vector in zip(wanted, vectors, strict=True):
                out[i] = vector
        return out

    def _write(self, items: Sequence[tuple[_Candidate, Vector, Vector | None]]) -> None:
        """Files first (atomic, idempotent), then the records in one atomic batch."""
        if not items:
            return
        for candidate, _, _ in items:
            self.blobs.put_original(candidate.record.id, candidate.extension, candidate.data)
            self.blobs.put_thumbnail(candidate.record.id, candidate.thumbnail)
        self.store.upsert([StoredImage(c.record, v, w) for c, v, w in items])

    # read and edit

    def get(self, image_id: str) -> ImageRecord:
        record = self.store.get(image_id)
        if record is None:
            raise NotFound(image_id)
        return record

    def page(
        self, *, offset: int = 0, limit: int = 50, newest_first: bool = True, flt: Filter | None = None
    ) -> list[ImageRecord]:
        if offset < 0 or not 1 <= limit <= 1000:
            raise InvalidInput("offset must be >= 0 and limit between 1 and 1000")
        return self.store.page(offset=offset, limit=limit, newest_first=newest_first, flt=flt)

    def count(self, flt: Filter | None = None) -> int:
        return self.store.count(flt)

    def update(self, image_id: str, patch: RecordPatch) -> ImageRecord:
        """Apply a user's edit; the words vector follows the new description or caption."""
        self.open()
        with self._write_lock:
            record = self.get(image_id)
            changes: dict[str, object] = {}
            if patch.description is not None:
                changes["description"] = clean_description(patch.description)
            if patch.metadata is not None:
                changes["metadata"] = clean_metadata(patch.metadata)
            if patch.caption is not None:
                changes["caption"] = clean_text(patch.caption, "the caption")
                changes["caption_edited"] = True
                changes["caption_status"] = CaptionStatus.DONE
                changes["caption_error"] = ""
            if not changes:
                return record
            updated = replace(record, updated_at=datetime.now(UTC), **changes)  # type: ignore[arg-type]
            words_changed = updated.words != record.words
            if words_changed:
                words = self._words_vectors([updated])[0]
            else:
                words = self.store.get_vectors([image_id]).get(image_id, (None, None))[1]
            self.store.update(updated, words)
        log.info("updated %s (%s)", image_id, ", ".join(sorted(changes)))
        return updated

    def delete(self, image_id: str) -> ImageRecord:
        """Record first, then files: a crash in between leaves an orphan file, not a broken record."""
        with self._write_lock:
            record = self.get(image_id)
            self.store.delete([image_id])
            self.blobs.delete(image_id)
        log.info("deleted %s %r", image_id, record.filename)
        return record

    def reset(self, confirm: str) -> int:
        """Delete every record and stored file, only with the exact confirmation phrase."""
        if confirm != RESET_PHRASE:
            raise InvalidInput(f"to delete everything, confirm with the exact phrase {RESET_PHRASE!r}")
        with self._write_lock:
            count = self.store.count()
            self.store.reset()
            self.blobs.clear()
        log.warning("reset: deleted %d images and their files", count)
        return count

    def original_file(self, image_id: str) -> tuple[ImageRecord, Path | bytes]:
        """The stored original: a local file when the blob store has one, else its bytes."""
        record = self.get(image_id)
        found = self.blobs.original_path(image_id) or self.blobs.read_original(image_id)
        if found is None:
            raise NotFound(image_id)
        return record, found

    def thumbnail_file(self, image_id: str) -> Path | bytes:
        self.get(image_id)
        found = self.blobs.thumbnail_path(image_id) or self.blobs.read_thumbnail(image_id)
        if found is None:
            raise NotFound(image_id)
        return found

    # search

    def search(self, query: Query) -> SearchResult:
        started = time.perf_counter()
        if not 1 <= query.k <= self.settings.max_k:
            raise InvalidQuery(f"k must be between 1 and {self.settings.max_k}")
        self.open()
        vector, truncated = self._query_vector(query.terms)
        hits = self.store.search(vector, k=query.k, flt=query.filter)
        took = (time.perf_counter() - started) * 1000
        log.info("search %s k=%d: %d hits in %.0f ms", _describe_terms(query.terms), query.k, len(hits), took)
        return SearchResult(hits=hits, truncated=truncated, took_ms=took)

    def simple_search(self, request: SimpleSearch) -> SearchResult:
        """The seed's form: text and/or an image, mixed by image_weight in [0, 1]."""
        return self.search(to_query(request))

    def _query_vector(self, terms: Sequence[QueryTerm]) -> tuple[Vector, bool]:
        total = np.zeros(self.embedder.dim, dtype=np.float32)
        truncated = False
        for term in terms:
            if term.weight == 0:
                continue
            vector, cut = self._term_vector(term)
            truncated = truncated or cut
            total += np.float32(term.weight) * vector
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise InvalidQuery("the query terms cancel each other out; change a weight")
        return (total / norm).astype(np.float32), truncated

    def _term_vector(self, term: QueryTerm) -> tuple[Vector, bool]:
        if isinstance(term, TextTerm):
            fitted = self.embedder.fit_text([term.text])
            return self.embedder.encode_texts([fitted.text])[0], fitted.truncated
        if isinstance(term, ImageTerm):
            if len(term.data) > self.settings.max_upload_bytes:
                raise TooLarge(f"the query image is larger than {_human_bytes(self.settings.max_upload_bytes)}")
            decoded = media.decode(term.data, max_pixels=self.settings.max_pixels)
            with self._embed_slots:
                return self.embedder.encode_images([decoded.image])[0], False
        stored = self.store.get_vectors([term.image_id]).get(term.image_id)
        if stored is None:
            raise NotFound(term.image_id)
        return stored[0], False

    # maintenance

    def reindex(self, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Re-embed every stored original with the configured model, into a staging store, then switch.

        Interrupted, it resumes where it stopped; until it finishes the old library stays as it was.
        """
        dim = self.embedder.dim
        staging = self.store.start_rebuild(self.embedder.model_id, dim)
        done = set(staging.ids())
        ids = list(self.store.ids())
        total = len(ids)
        if on_progress:
            on_progress(len(done), total)
        todo = [i for i in ids if i not in done]
        batch_size = self.settings.embed_batch_size
        with ThreadPoolExecutor(self.settings.decode_workers, thread_name_prefix="reindex") as pool:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                records = self.store.get_many(chunk)
                loaded = list(pool.map(self._reload, [records[i] for i in chunk if i in records]))
                ready = [(r, p) for r, p in loaded if p is not None]
                vectors = self.embedder.encode_prepared([p for _, p in ready])
                words = self._words_vectors([r for r, _ in ready])
                staging.upsert(
                    [
                        StoredImage(replace(r, model_id=self.embedder.model_id), v, w)
                        for (r, _), v, w in zip(ready, vectors, words, strict=True)
                    ]
                )
                done.update(chunk)
                if on_progress:
                    on_progress(len(done), total)
        self.store.finish_rebuild()
        self._opened = False
        self.open()
        self.store.maintain()
        log.info("reindexed %d images with %s", total, self.embedder.model_id)
        return total

    def _reload(self, record: ImageRecord) -> tuple[ImageRecord, Prepared | None]:
        data = self.blobs.read_original(record.id)
        if data is None:
            log.error("reindex: the original of %s is missing; run `imagematch check`", record.id)
            return record, None
        decoded = media.decode(data, max_pixels=max(self.settings.max_pixels, record.width * record.height))
        return record, self.embedder.prepare(decoded.image)

    def iter_records(self, page: int = 500) -> Iterator[ImageRecord]:
        offset = 0
        while True:
            records = self.store.page(offset=offset, limit=page, newest_first=False)
            yield from records
            if len(records) < page:
                return
            offset += page


def to_query(request: SimpleSearch) -> Query:
    """Turn the seed's two-input form into a query of terms."""
    weight = request.image_weight
    if not (isinstance(weight, int | float) and 0.0 <= weight <= 1.0):
        raise InvalidQuery("image_weight must be a number between 0 and 1")
    text = request.text.strip()
    image_terms: list[QueryTerm] = []
    if request.image is not None:
        image_terms.append(ImageTerm(request.image, 1.0))
    if request.image_id:
        image_terms.append(StoredImageTerm(request.image_id, 1.0))
    if not text and not image_terms:
        raise InvalidQuery("give text, an image or an image id to search with")
    if not image_terms:
        return Query((TextTerm(text),), request.k, request.filter)
    share = 1.0 / len(image_terms)
    terms: list[QueryTerm] = [replace(t, weight=share * (weight if text else 1.0)) for t in image_terms]
    if text:
        terms.append(TextTerm(text, 1.0 - weight))
    return Query(tuple(t for t in terms if t.weight != 0) or tuple(terms), request.k, request.filter)


def _describe_terms(terms: Sequence[QueryTerm]) -> str:
    parts = []
    for term in terms:
        if isinstance(term, TextTerm):
            label = repr(term.text[:40])
        elif isinstance(term, ImageTerm):
            label = f"image:{_human_bytes(len(term.data))}"
        else:
            label = f"id:{term.image_id}"
        parts.append(f"{term.weight:g}×{label}")
    return " + ".join(parts)


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
