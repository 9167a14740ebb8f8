"""Ingest: bytes -> validate and decode once -> file hash and pHash -> duplicate check -> embed -> write the
original and thumbnail (atomic) -> write the record (atomic per batch). A crash between the last two steps
leaves an orphan file, never a record without its file; `check --repair` removes orphans.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from imagematch import media
from imagematch.ai.batching import SharedCalls
from imagematch.ai.embedder import Prepared
from imagematch.blobs import BlobStore
from imagematch.duplicates import VARIANT_DISTANCE, DuplicateRule, lookup_hashes
from imagematch.exif import without_gps
from imagematch.fingerprint import (
    ColourLayout,
    colour_distance,
    colour_layout,
    file_hash,
    hamming,
    image_id,
    perceptual_hashes,
    phash_from_hex,
    phash_hex,
    turned_layout,
)
from imagematch.records import (
    CaptionStatus,
    ImageMatchError,
    ImageRecord,
    IngestResult,
    Metadata,
    StoredImage,
    TooLarge,
    Vector,
)
from imagematch.services.caption_queue import CaptionQueue
from imagematch.services.catalog import Catalog
from imagematch.services.duplicate_review import rule_of
from imagematch.services.embedding import Embedding, lowest_cpu_priority
from imagematch.services.pairing import Active, Pairing, one_generation
from imagematch.settings import Settings
from imagematch.validation import clean_description, clean_filename, clean_metadata

log = logging.getLogger(__name__)


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
    cutout: bytes | None  # JPEG preview of the background-removed image that was embedded
    phash: int
    phash_variants: dict[str, int]  # the pHashes of its mirrored and rotated versions
    label: str  # how the caller named it (a path for folder imports); record.filename is the clean name
    layout: ColourLayout | None = None  # its thumbnail's colour layout, made when a pHash match needs it


_Embedded = tuple[_Candidate, Vector, Vector | None]  # an image with its image vector and its words' vector
_EmbeddedUpload = tuple[Active, _Candidate, Vector, Vector | None]  # with the generation it was embedded for


class Ingest:
    """Adding images, one or many; the duplicate check at upload decides what is added."""

    def __init__(
        self,
        settings: Settings,
        pairing: Pairing,
        embedding: Embedding,
        blobs: BlobStore,
        catalog: Catalog,
        captions: CaptionQueue,
    ) -> None:
        self.settings = settings
        self.pairing = pairing
        self.embedding = embedding
        self.blobs = blobs
        self.catalog = catalog
        self.captions = captions
        self._writes_since_maintenance = 0
        self._maintenance = threading.Lock()
        # Uploads that finish embedding while a write runs are written together next (no timer: a lone upload
        # is written at once), each still checked against the others and getting its own result.
        self._group_writes: SharedCalls[_EmbeddedUpload, IngestResult | Exception] = SharedCalls(
            self._store_uploads, largest=settings.embed_batch_size
        )

    @property
    def duplicate_rule(self) -> DuplicateRule:
        return rule_of(self.settings)

    @one_generation
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
        self.embedding.open_for_ingest()
        sha = self._upload_hash(data)
        known = self._known_file(sha, name)
        if known is not None:
            return known
        with self.embedding.slots:  # decoding a large image needs memory, so decodes queue for a slot
            candidate = self._candidate(data, sha, name, text, meta)
        duplicate = self._duplicate_of(candidate, [])
        if duplicate is not None:
            return duplicate
        # Outside the slot: the prepared input is small, and uploads waiting for the model share its next call
        # (SharedCallsEmbedder), then the next write (_store_uploads).
        vector = self.pairing.embedder.encode_prepared([candidate.pixels])[0]
        words = self.embedding.words_vectors([candidate.record])[0]
        outcome = self._group_writes.run((self.pairing.current(), candidate, vector, words))
        if isinstance(outcome, Exception):
            raise outcome
        if outcome.status == "added":
            log.info(
                "added %s %r (%d×%d %s, %s) in %.0f ms",
                candidate.record.id,
                name,
                candidate.record.width,
                candidate.record.height,
                candidate.record.format,
                human_bytes(candidate.record.size),
                (time.perf_counter() - started) * 1000,
            )
        return outcome

    @one_generation
    def add_many(
        self,
        uploads: Iterable[Upload],
        *,
        on_result: Callable[[IngestResult], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[IngestResult]:
        """Ingest many images as a pipeline: worker threads decode ahead while the model embeds a batch, and
        a writer thread stores the previous batch meanwhile (one batch in flight, so memory stays bounded).

        Every upload gets exactly one result (added, duplicate or failed with the reason).
        Safe to interrupt: each batch is written atomically, and a re-run reports the rest as duplicates.
        """
        self.embedding.open_for_ingest()
        active = self.pairing.current()
        batch_size = self.settings.embed_batch_size
        ahead = batch_size * 2 + self.settings.decode_workers
        results: list[IngestResult] = []

        def emit(result: IngestResult) -> None:
            results.append(result)
            if result.status == "failed":
                log.debug("failed %r: %s", result.filename, result.reason)
            if on_result is not None:
                on_result(result)

        pending: list[_Candidate] = []
        writing: Future[list[IngestResult]] | None = None

        def commit(batch: list[_Candidate]) -> None:
            nonlocal writing
            embedded = self._embed_batch(batch, emit)
            if writing is not None:
                for result in writing.result():
                    emit(result)
            writing = writer.submit(self.pairing.run_in, active, self._store_batch, embedded)

        with (
            ThreadPoolExecutor(
                self.settings.decode_workers, thread_name_prefix="decode", initializer=lowest_cpu_priority
            ) as pool,
            ThreadPoolExecutor(1, thread_name_prefix="write") as writer,
        ):
            window: deque[Future[_Candidate | IngestResult]] = deque()
            source = iter(uploads)

            def refill() -> None:
                while len(window) < ahead and not (cancel and cancel.is_set()):
                    upload = next(source, None)
                    if upload is None:
                        return
                    window.append(pool.submit(self.pairing.run_in, active, self._prepare_upload, upload))

            refill()
            while window:
                outcome = window.popleft().result()
                refill()
                if isinstance(outcome, IngestResult):
                    emit(outcome)
                    continue
                pending.append(outcome)
                if len(pending) >= batch_size:
                    commit(pending)
                    pending = []
            if pending:
                commit(pending)
            if writing is not None:
                for result in writing.result():
                    emit(result)
        self.pairing.store.maintain()
        return results

    def _prepare_upload(self, upload: Upload) -> _Candidate | IngestResult:
        """Runs in a worker thread: read, validate, decode, fingerprint and preprocess one upload."""
        label = upload.filename
        try:
            data = upload.read()
            text = clean_description(upload.description)
            meta = clean_metadata(upload.metadata)
            sha = self._upload_hash(data)
            known = self._known_file(sha, label)
            if known is not None:
                return known
            return self._candidate(data, sha, clean_filename(label), text, meta, label=label)
        except ImageMatchError as error:
            return IngestResult("failed", label, reason=str(error))
        except OSError as error:
            return IngestResult("failed", label, reason=f"cannot read the file ({error.strerror or error})")

    def _embed_batch(self, batch: list[_Candidate], emit: Callable[[IngestResult], None]) -> list[_Embedded]:
        """Drop what is already a duplicate, then embed the rest (both vectors)."""
        fresh: list[_Candidate] = []
        for candidate in batch:
            duplicate = self._duplicate_of(candidate, fresh)
            if duplicate is not None:
                emit(duplicate)
            else:
                fresh.append(candidate)
        if not fresh:
            return []
        vectors = self.pairing.embedder.encode_prepared([c.pixels for c in fresh])
        words = self.embedding.words_vectors([c.record for c in fresh])
        return list(zip(fresh, vectors, words, strict=True))

    def _store_batch(self, embedded: list[_Embedded]) -> list[IngestResult]:
        """Write one embedded batch of `index` atomically; its duplicates are reported first."""
        started = time.perf_counter()
        results = self._write_checked(embedded)
        added = sum(result.status == "added" for result in results)
        if added:
            log.info("added %d images in %.0f ms", added, (time.perf_counter() - started) * 1000)
        return sorted(results, key=lambda result: result.status != "duplicate")

    def _write_checked(self, embedded: Sequence[_Embedded]) -> list[IngestResult]:
        """Write embedded images in one atomic upsert, checking duplicates again against what is stored by now
        and against the images before them in `embedded` (another batch or upload may have been written while
        these were embedded, by this process or another: the store's exclusive lock keeps another process's
        check-then-write from interleaving with this one). One result per image, in order."""
        results: list[IngestResult] = []
        with self.pairing.write_lock, self.pairing.store.exclusive():
            keep: list[_Embedded] = []
            for candidate, vector, words_vector in embedded:
                duplicate = self._duplicate_of(candidate, [k[0] for k in keep], vector, [k[1] for k in keep])
                if duplicate is not None:
                    results.append(duplicate)
                else:
                    keep.append((candidate, vector, words_vector))
                    results.append(IngestResult("added", candidate.label, record=candidate.record))
            self._write(keep)
        return results

    def _store_uploads(self, group: Sequence[_EmbeddedUpload]) -> list[IngestResult | Exception]:
        """The write of uploads that finished embedding while the previous write ran: one upsert for each model
        generation among them (an upload is written where it was embedded). Should the shared write fail, each
        upload is written alone, so an error reaches only the upload it belongs to."""
        generations: dict[int, list[int]] = {}
        for n, (active, *_) in enumerate(group):
            generations.setdefault(id(active), []).append(n)
        outcomes: dict[int, IngestResult | Exception] = {}
        for indices in generations.values():
            embedded = [(group[n][1], group[n][2], group[n][3]) for n in indices]
            outcomes.update(zip(indices, self._write_or_fail(group[indices[0]][0], embedded), strict=True))
        return [outcomes[n] for n in range(len(group))]

    def _write_or_fail(self, active: Active, embedded: list[_Embedded]) -> list[IngestResult | Exception]:
        try:
            return list(self.pairing.run_in(active, self._write_checked, embedded))
        except Exception as error:
            if len(embedded) == 1:
                return [error]
            log.warning("a shared write of %d uploads failed (%s); writing each alone", len(embedded), error)
            return [outcome for item in embedded for outcome in self._write_or_fail(active, [item])]

    def _upload_hash(self, data: bytes) -> str:
        """The file hash of an upload within the size limit; computed once per upload (a camera file costs
        milliseconds to hash)."""
        if len(data) > self.settings.max_upload_bytes:
            raise TooLarge(
                f"the file is {human_bytes(len(data))}; the limit is {human_bytes(self.settings.max_upload_bytes)}"
            )
        return file_hash(data)

    def _known_file(self, sha: str, name: str) -> IngestResult | None:
        """Identical bytes are always a duplicate; checked before any decoding."""
        existing = self.pairing.store.find_file_hash(sha)
        if existing is None:
            return None
        log.info("duplicate %r: the same file as %s", name, existing.id)
        return IngestResult("duplicate", name, existing=existing, distance=0, reason="the same file is already stored")

    def _candidate(
        self, data: bytes, sha: str, name: str, description: str, metadata: Metadata, label: str = ""
    ) -> _Candidate:
        decoded = media.decode(data, max_pixels=self.settings.max_pixels, **self.embedding.decode_sides())
        phash, variants = perceptual_hashes(decoded.image)
        now = datetime.now(UTC)
        pixels, cutout = self.embedding.embeddable(decoded.image)
        text = self.embedding.read_text(decoded.image, data, self.settings.max_pixels, label or name)
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
            model_id=self.pairing.embedder.model_id,
            description=description,
            caption_status=CaptionStatus.PENDING if self.captions.wanted else CaptionStatus.NONE,
            metadata=metadata,
            taken_at=decoded.exif.taken_at,
            camera=decoded.exif.camera,
            lens=decoded.exif.lens,
            gps_lat=decoded.exif.gps_lat,
            gps_lon=decoded.exif.gps_lon,
            cutout=cutout is not None,
            ocr=text,
        )
        return self._private(
            _Candidate(
                record=record,
                data=data,
                extension=decoded.extension,
                thumbnail=media.make_thumbnail(decoded.image),
                pixels=pixels,
                cutout=cutout,
                phash=phash,
                phash_variants=variants,
                label=label or name,
            )
        )

    def _private(self, candidate: _Candidate) -> _Candidate:
        """With IMAGEMATCH_STRIP_GPS, the stored original and the record lose the GPS position; the id and file
        hash stay those of the uploaded bytes, so the same upload is still recognised."""
        if not self.settings.strip_gps:
            return candidate
        stored = without_gps(candidate.data, candidate.record.format)
        record = replace(candidate.record, size=len(stored), gps_lat=None, gps_lon=None)
        return replace(candidate, record=record, data=stored)

    def _candidate_layout(self, candidate: _Candidate) -> ColourLayout:
        """From the thumbnail that is stored with it, so the decision is the same while it waits in a batch and
        once it is stored."""
        if candidate.layout is None:
            candidate.layout = colour_layout(candidate.thumbnail)
        return candidate.layout

    def _layout_of(self, record: ImageRecord, pending: Sequence[_Candidate]) -> ColourLayout | None:
        waiting = next((c for c in pending if c.record.id == record.id), None)
        return self._candidate_layout(waiting) if waiting is not None else self.catalog.stored_layout(record.id)

    def _duplicate_of(
        self,
        candidate: _Candidate,
        pending: Sequence[_Candidate],
        vector: Vector | None = None,
        pending_vectors: Sequence[Vector] = (),
    ) -> IngestResult | None:
        """A stored (or about to be stored) image that this one duplicates: the same file, or a close pHash with
        colour layouts that agree; once `vector` is known, also a mirrored or turned copy or a crop, each confirmed
        by the image vectors. Nothing is read beyond the pHash lookup unless a hash is close."""
        rule = self.duplicate_rule
        name = candidate.label
        near = self.pairing.store.near_phash(
            candidate.phash, rule.max_distance
        )  # identical files have identical pHashes
        same_file = next((r for r, _ in near if r.file_hash == candidate.record.file_hash), None) or next(
            (c.record for c in pending if c.record.file_hash == candidate.record.file_hash), None
        )
        if same_file is not None:
            return IngestResult(
                "duplicate", name, existing=same_file, distance=0, reason="the same file is already stored"
            )
        waiting = [(c.record, d) for c in pending if (d := hamming(candidate.phash, c.phash)) <= rule.max_distance]
        for existing, distance in sorted(near + waiting, key=lambda pair: pair[1]):  # stored first at equal distances
            layout = self._layout_of(existing, pending)
            colours = None if layout is None else colour_distance(self._candidate_layout(candidate), layout)
            if not rule.colours_agree(colours):
                log.info("%r is not %s: %d pHash bits, %.1f ΔE of colour apart", name, existing.id, distance, colours)
                continue
            log.info("duplicate %r: %d bits from %s", name, distance, existing.id)
            apart = "" if colours is None else f", colours {colours:.0f} ΔE apart"
            return IngestResult(
                "duplicate",
                name,
                existing=existing,
                distance=distance,
                reason=f"looks the same as {existing.filename or existing.id} ({distance} of 64 pHash bits "
                f"differ{apart})",
            )
        if vector is None:
            return None
        return self._turned_copy_of(candidate, vector, pending, pending_vectors) or self._crop_of(
            candidate, vector, pending, pending_vectors
        )

    def _turned_copy_of(
        self, candidate: _Candidate, vector: Vector, pending: Sequence[_Candidate], pending_vectors: Sequence[Vector]
    ) -> IngestResult | None:
        """A stored image that this one is a mirrored or rotated copy of: one of the upload's turned hashes within
        VARIANT_DISTANCE bits of its pHash, image vectors at least `duplicate_variant_similarity` alike and colour
        layouts that agree once turned alike (plain graphics and patterns can match a turned hash by chance)."""
        if not self.settings.duplicate_variants:
            return None
        pending_by_id = {c.record.id: v for c, v in zip(pending, pending_vectors, strict=False)}
        hashes = lookup_hashes(candidate.phash, candidate.phash_variants, VARIANT_DISTANCE)
        for variant, phash in hashes.items():
            if not variant:
                continue
            matches = self.pairing.store.near_phash(phash, VARIANT_DISTANCE)
            matches += [(c.record, d) for c in pending if (d := hamming(phash, c.phash)) <= VARIANT_DISTANCE]
            stored = self.pairing.store.get_vectors([r.id for r, _ in matches if r.id not in pending_by_id])
            for record, distance in sorted(matches, key=lambda pair: pair[1]):
                other = pending_by_id.get(record.id)
                if other is None and record.id in stored:
                    other = stored[record.id][0]
                similarity = float(other @ vector) if other is not None else None
                if similarity is None or similarity < self.settings.duplicate_variant_similarity:
                    continue
                layout = self._layout_of(record, pending)
                turned = turned_layout(self._candidate_layout(candidate), variant)
                if not self.duplicate_rule.colours_agree(None if layout is None else colour_distance(turned, layout)):
                    continue
                log.info("duplicate %r: %s copy of %s (%d bits)", candidate.label, variant, record.id, distance)
                return IngestResult(
                    "duplicate",
                    candidate.label,
                    existing=record,
                    distance=distance,
                    reason=f"looks like {record.filename or record.id} {variant} ({distance} of 64 pHash bits "
                    f"differ, image similarity {similarity:.3f})",
                )
        return None

    def _crop_of(
        self, candidate: _Candidate, vector: Vector, pending: Sequence[_Candidate], pending_vectors: Sequence[Vector]
    ) -> IngestResult | None:
        """The second signal: an image whose vector is very close and whose pHash is still near (a small crop).

        The pHash bound comes first: it is a vectorised scan over cached hashes and almost always finds nothing,
        so an upload costs no vector lookups unless a stored image is a plausible crop of it.
        """
        rule = self.duplicate_rule
        if not rule.uses_vectors:
            return None
        near = [r for r, _ in self.pairing.store.near_phash(candidate.phash, rule.crop_distance)]
        stored = self.pairing.store.get_vectors([r.id for r in near]) if near else {}
        neighbours = [(r, float(stored[r.id][0] @ vector)) for r in near if r.id in stored]
        neighbours += [(c.record, float(v @ vector)) for c, v in zip(pending, pending_vectors, strict=False)]
        for record, similarity in sorted(neighbours, key=lambda pair: -pair[1]):
            distance = hamming(candidate.phash, phash_from_hex(record.phash))
            if distance > self.settings.duplicate_distance and rule.is_duplicate(distance, similarity):
                log.info(
                    "duplicate %r: a crop of %s (similarity %.3f, %d bits)",
                    candidate.label,
                    record.id,
                    similarity,
                    distance,
                )
                return IngestResult(
                    "duplicate",
                    candidate.label,
                    existing=record,
                    distance=distance,
                    reason=f"looks like a crop or edit of {record.filename or record.id} (image similarity "
                    f"{similarity:.3f}, {distance} of 64 pHash bits differ)",
                )
        return None

    def _write(self, items: Sequence[_Embedded]) -> None:
        """Files first (atomic, idempotent), then the records in one atomic batch."""
        if not items:
            return
        for candidate, _, _ in items:
            self.blobs.put_original(candidate.record.id, candidate.extension, candidate.data)
            self.blobs.put_thumbnail(candidate.record.id, candidate.thumbnail)
            if candidate.cutout is not None:
                self.blobs.put_cutout(candidate.record.id, candidate.cutout)
        with self.pairing.noting([c.record.id for c, _, _ in items], "put"):
            self.pairing.store.upsert([StoredImage(c.record, v, w) for c, v, w in items])
        if self.captions.wanted and self.captions.on_pending is not None:
            self.captions.on_pending()
        self._writes_since_maintenance += len(items)
        if self._writes_since_maintenance >= self.settings.maintain_every:
            self._writes_since_maintenance = 0
            threading.Thread(target=self._maintain_quietly, name="maintain", daemon=True).start()

    def _maintain_quietly(self) -> None:
        """Background housekeeping after many single uploads; one at a time, never failing a request."""
        if not self._maintenance.acquire(blocking=False):
            return
        try:
            self.pairing.store.maintain()
        except Exception:
            log.exception("store maintenance failed; it will be tried again after more uploads")
        finally:
            self._maintenance.release()


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
