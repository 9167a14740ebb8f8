"""The Library: the one domain service. It owns the pipeline order and the rules.

Ingest: bytes -> validate and decode once -> file hash and pHash -> duplicate check -> embed -> write the
original and thumbnail (atomic) -> write the record (atomic per batch). A crash between the last two steps
leaves an orphan file, never a record without its file; `check --repair` removes orphans.

Search: each query term becomes a normalised vector; their weighted sum, re-normalised, is the query.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

from imagematch import media
from imagematch.ai.background import BackgroundRemover
from imagematch.ai.embedder import Embedder, Matrix, Prepared
from imagematch.ai.model_source import PRESETS
from imagematch.ai.ocr import DETECT_SIDE, OcrUnavailable, TextReader
from imagematch.ai.text_vectors import cached_text_vectors
from imagematch.blobs import BlobStore
from imagematch.duplicates import VARIANT_DISTANCE, DuplicateRule, Pairs, close_pairs, groups_of, lookup_hashes
from imagematch.exif import without_gps
from imagematch.fingerprint import (
    ColourLayout,
    colour_distance,
    colour_layout,
    could_be_image_id,
    file_hash,
    hamming,
    image_id,
    perceptual_hashes,
    phash_from_hex,
    phash_hex,
    turned_layout,
)
from imagematch.fusion import REFERENCE_TEXTS, fuse, reciprocal_rank_fusion, words_standing
from imagematch.keywords import search_text
from imagematch.keywords import tokens as keyword_tokens
from imagematch.migrate import MIGRATION, MigrationError
from imagematch.records import (
    CaptionStatus,
    Condition,
    Conflict,
    Filter,
    Hit,
    ImageMatchError,
    ImageRecord,
    ImageTerm,
    ImageText,
    IngestResult,
    InvalidInput,
    InvalidQuery,
    Match,
    Metadata,
    ModelUnavailable,
    NotFound,
    NotSupported,
    PageCursor,
    Query,
    QueryTerm,
    RecordPatch,
    Region,
    SearchResult,
    StoredImage,
    StoredImageTerm,
    StoreMismatch,
    TextTerm,
    TooLarge,
    Vector,
)
from imagematch.relevance import SAMPLE_SIZE, auto_min_score
from imagematch.settings import Settings
from imagematch.store import generations
from imagematch.store.base import VectorStore
from imagematch.validation import clean_description, clean_filename, clean_metadata, clean_text

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_P = ParamSpec("_P")


def _one_generation(method: Callable[Concatenate[Library, _P], _T]) -> Callable[Concatenate[Library, _P], _T]:
    """A Library operation that runs on one model and generation throughout (see Library._pinned)."""

    def pinned(self: Library, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with self._pinned():
            return method(self, *args, **kwargs)

    pinned.__name__, pinned.__doc__ = method.__name__, method.__doc__
    return pinned


RESET_PHRASE = "DELETE ALL"
# Far beyond any model's context (it is cut by tokens anyway); keeps tokenizing a hostile query cheap.
MAX_QUERY_TEXT_LENGTH = 10_000
_VECTOR_PAIRS_AT_ONCE = 20_000  # duplicate review: pairs whose vectors are held at once (all are compared)
_VECTOR_BATCH = 1000
MAX_TEXT_IN_PICTURE = 20_000  # characters of a correction of the text read in a picture: a page of small print
_CANDIDATE_READERS = 8  # concurrent searches whose image-side candidates are read beside their words side
_RETRY_PAGE = 500  # failed captions queued again per store read
FOLLOW_EVERY = 0.5  # seconds between two reads of the store's generation pointer by a running process
HOUSEKEEPING_EVERY = 10.0  # seconds between passes that carry leftover changes and drop retired generations
_SAMPLE_PIECES = 8  # a large library's sample is read as this many pages spread over it
SWITCH_SETTLES = 2.0  # after a switch, writes that read the old pointer just before it have landed by then


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
    background_removal: str
    ocr: str  # what reads the text in pictures, or "off"
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SimpleSearch:
    """The seed's search form: optional text, optional image (bytes or stored id), and a weight; `region` is the
    part of the image to search with, `hybrid`, `min_score` and `cutoff` as in Query."""

    text: str = ""
    image: bytes | None = None
    image_id: str = ""
    image_weight: float = 0.5
    k: int = 10
    filter: Filter | None = None
    region: Region | None = None
    hybrid: bool = False
    min_score: float | None = None
    cutoff: str | None = None


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Images that look like one another; `links` says why: (id, id, pHash bits, vector cosine or None)."""

    records: list[ImageRecord]
    links: list[tuple[str, str, int, float | None]]


@dataclass(frozen=True, slots=True)
class DuplicateLink:
    first: int
    second: int
    distance: int
    similarity: float | None


@dataclass(frozen=True, slots=True)
class _Active:
    """The model and the generation of the store it embeds for: they change together, never one alone."""

    embedder: Embedder
    store: VectorStore


class Library:
    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        store: VectorStore,
        blobs: BlobStore,
        *,
        remover: BackgroundRemover | None = None,
        text_reader: TextReader | None = None,
        captions_wanted: bool = False,
        model_spec: str = "",
        resolve_model: Callable[[str], tuple[Embedder, str]] | None = None,
    ) -> None:
        self.settings = settings
        self._active = _Active(embedder, store)
        self._pins = threading.local()  # the _Active an operation started with, for the whole operation
        self.model_spec = model_spec  # how another process loads this model (IMAGEMATCH_MODEL, resolved)
        # IMAGEMATCH_MODEL's value -> its embedder (not loaded yet) and the value that names it anywhere
        self.resolve_model = resolve_model
        self.keeps_house = False  # a long-running process (the server) carries leftover changes and sweeps
        self._checked_at = 0.0
        self._housekept_at = 0.0
        self._follow_lock = threading.Lock()
        self._housekeeping = threading.Lock()
        self._housekeeper: threading.Thread | None = None
        self.blobs = blobs
        self.remover = remover
        self.captions_wanted = captions_wanted  # new images wait for the caption worker
        self.warnings: list[str] = []  # degraded features, shown in health and on every page
        self.on_pending: Callable[[], None] | None = None  # told when images start waiting for a caption
        self._writes_since_maintenance = 0
        self._maintenance = threading.Lock()
        self._open_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._opened = False
        self._remover_lock = threading.Lock()
        self._remover_checked = False  # loaded, or found missing and turned off
        self.text_reader = text_reader
        self._reader_lock = threading.Lock()
        self._reader_checked = False
        # Bounds memory under a flood: at most this many requests run the model at once; others queue.
        self._embed_slots = threading.BoundedSemaphore(max(1, settings.decode_workers))
        # The two candidate lists of a fused search are read at once: each store query waits on its engine.
        self._candidate_reader = ThreadPoolExecutor(_CANDIDATE_READERS, thread_name_prefix="candidates")
        self._references: tuple[str, Matrix] | None = None  # model id, its REFERENCE_TEXTS vectors
        self._sample: tuple[int, str, Matrix] | None = None  # image count, model id, a sample of image vectors
        self._sample_lock = threading.Lock()
        self._references_lock = threading.Lock()

    # the model and generation in use

    @property
    def embedder(self) -> Embedder:
        return self._current().embedder

    @property
    def store(self) -> VectorStore:
        return self._current().store

    def _current(self) -> _Active:
        pinned: _Active | None = getattr(self._pins, "active", None)
        if pinned is not None:
            return pinned
        self._follow()
        return self._active

    @contextlib.contextmanager
    def _pinned(self, active: _Active | None = None) -> Iterator[_Active]:
        """Run an operation on one model and one generation, even if the library moves on meanwhile."""
        outer: _Active | None = getattr(self._pins, "active", None)
        if active is None and outer is not None:
            yield outer
            return
        self._pins.active = chosen = active or self._current()
        try:
            yield chosen
        finally:
            self._pins.active = outer

    def _in(self, active: _Active, work: Callable[..., _T], *args: object) -> _T:
        """`work(*args)` pinned to `active`: for the worker threads of a pinned operation."""
        with self._pinned(active):
            return work(*args)

    def _follow(self) -> None:
        """Notice a switch made by a reindex in any process, and move to its model and generation.

        The pointer is read at most every FOLLOW_EVERY seconds; the new model loads while requests carry on
        with the old one, which is kept (retired) long enough for that."""
        if not self._opened or time.monotonic() - self._checked_at < FOLLOW_EVERY:
            return
        if not self._follow_lock.acquire(blocking=False):
            return  # another thread is checking or moving
        try:
            self._checked_at = time.monotonic()
            live = self._active.store.generations().live
            if live != self._active.store.generation_name:
                self._move_to(live)
            if self.keeps_house and time.monotonic() - self._housekept_at >= HOUSEKEEPING_EVERY:
                self._start_housekeeping()
        except Exception:
            log.exception("could not follow the library's generation; trying again")
        finally:
            self._follow_lock.release()

    def _move_to(self, live: str) -> None:
        store = self._active.store.at(live)
        stored = store.stored_model()
        if stored is None:
            raise ModelUnavailable(f"the library's generation {live} names no model")
        model_id, dim = stored
        embedder, spec = self._active.embedder, self.model_spec
        if model_id != embedder.model_id:
            spec = store.get_document(generations.MODEL_SPECS, model_id) or ""
            if not spec or self.resolve_model is None:
                raise ModelUnavailable(
                    f"the library was reindexed with model {model_id}, which this process cannot load: "
                    f"restart it with IMAGEMATCH_MODEL set to that model"
                )
            log.info("the library was reindexed with %s: loading it", model_id)
            embedder = self.resolve_model(spec)[0]
            embedder.load()
            if (embedder.model_id, embedder.dim) != (model_id, dim):
                raise ModelUnavailable(f"{spec} loads as {embedder.model_id}, not the library's {model_id}")
        store.open(model_id, dim)
        with self._write_lock:  # writes are pinned; this keeps the two attributes from being seen apart
            self._active = _Active(embedder, store)
            self.model_spec = spec
        log.info("now serving generation %s of the library with %s", live, model_id)
        self._start_housekeeping()

    @property
    def model_presets(self) -> dict[str, str]:
        """The short names IMAGEMATCH_MODEL takes, and the model each stands for."""
        return dict(PRESETS)

    def prepare_model(self, model: str) -> tuple[Embedder, str]:
        """The embedder for what IMAGEMATCH_MODEL would say (not loaded yet), and the value that names it
        anywhere; InvalidInput when it is unknown or cannot be had here."""
        if self.resolve_model is None:
            raise InvalidInput("this library cannot switch models")
        try:
            return self.resolve_model(model.strip())
        except ModelUnavailable as error:
            raise InvalidInput(str(error)) from error

    def _start_housekeeping(self) -> None:
        self._housekept_at = time.monotonic()
        if self._housekeeper is None or not self._housekeeper.is_alive():
            self._housekeeper = threading.Thread(target=self._keep_house, name="generations", daemon=True)
            self._housekeeper.start()

    def _keep_house(self) -> None:
        if not self._housekeeping.acquire(blocking=False):
            return
        try:
            active = self._active
            if active.store.generations().live == active.store.generation_name:
                self._carry_changes(active)
                generations.sweep(active.store)
        except Exception:
            log.exception("carrying changes into the new generation failed; trying again later")
        finally:
            self._housekeeping.release()

    @contextlib.contextmanager
    def _noting(self, ids: Sequence[str], kind: generations.ChangeKind) -> Iterator[None]:
        """Around a write: while a rebuild runs, or when this process has not noticed a switch yet, note the
        images it touches so the new generation takes the change over (`_carry_changes`). Noted before (a
        crash in the write leaves the note) and again after: a carry that read the image before the write
        landed, and forgot the first note, finds the second."""
        store = self.store
        pointers = store.generations()
        noting = bool(pointers.staging) or pointers.live != store.generation_name
        if noting:
            generations.note_changes(store, ids, kind)
        yield
        if noting:
            generations.note_changes(store, ids, kind)

    def _carry_changes(self, target: _Active) -> int:
        """Bring what writers did to older generations into `target`: edits, new images (embedded by its
        model from their originals) and deletions. Returns how many changes were carried."""
        pointers = target.store.generations()
        if target.store.generation_name != (pointers.staging or pointers.live):
            return 0  # a newer generation is being built: the changes are for it
        sources: dict[str, VectorStore] = {}
        carried = 0
        with self._pinned(target):
            for change in generations.pending_changes(target.store):
                if change.source != target.store.generation_name:
                    if change.kind == "delete":
                        kept = target.store.get(change.image_id)
                        if kept is None or kept.updated_at.timestamp() <= change.at:  # not added again since
                            target.store.delete([change.image_id])
                    else:
                        source = sources.get(change.source) or target.store.at(change.source)
                        sources[change.source] = source
                        record = source.get(change.image_id)
                        if record is None and time.time() - change.at < generations.CHANGE_SETTLES:
                            continue  # its write may still be on its way
                        if record is not None:
                            self._carry(record, target)
                    carried += 1
                generations.forget_change(target.store, change)
        if carried:
            log.info("carried %d changes into generation %s", carried, target.store.generation_name)
        return carried

    def _carry(self, record: ImageRecord, target: _Active) -> None:
        model_id = target.embedder.model_id
        stored = target.store.get_vectors([record.id]).get(record.id)
        if stored is not None:
            kept = target.store.get(record.id)
            if kept is not None and kept.updated_at > record.updated_at:
                return  # edited in the new generation since: the older change does not overwrite it
            updated = replace(record, model_id=model_id, cutout=kept.cutout if kept else record.cutout)
            target.store.update(updated, self._words_vectors([updated])[0])
            return
        loaded = self._reload(record)
        if loaded is not None:
            self._embed_into(target.store, [loaded])

    # lifecycle

    def verify_model(self) -> None:
        """Refuse a store built with another model, before any work (no model load needed); unless a reindex
        (from the web UI, or the CLI) switched the library to a model this process can load: then use that.
        A store that `imagematch migrate` is still copying into is refused too: it holds part of the library."""
        copying_from = self.store.get_document(MIGRATION, "source")
        if copying_from:
            raise MigrationError(
                f"the {self.store.name} store holds an unfinished copy of the library from the {copying_from} "
                f"store: finish it with `imagematch migrate --to {self.store.name}` (IMAGEMATCH_STORE={copying_from}), "
                f"or serve from {copying_from}"
            )
        stored = self.store.stored_model()
        if stored is not None and stored[0] != self.embedder.model_id:
            spec = self.store.get_document(generations.MODEL_SPECS, stored[0])
            if spec and self.resolve_model is not None:
                embedder = self.resolve_model(spec)[0]
                if embedder.model_id == stored[0]:
                    warning = (
                        f"IMAGEMATCH_MODEL is {self.embedder.model_id}, but the library was reindexed with "
                        f"{spec} ({stored[0]}): using that. Set IMAGEMATCH_MODEL={spec} to make it the setting."
                    )
                    log.warning(warning)
                    self.warnings.append(warning)
                    self._active = _Active(embedder, self._active.store)
                    self.model_spec = spec
                    return
            raise StoreMismatch(
                f"the library was built with model {stored[0]}, but IMAGEMATCH_MODEL is "
                f"{self.embedder.model_id}. Run `imagematch reindex` to re-embed every image with the "
                f"configured model, or set IMAGEMATCH_MODEL back to {stored[0]}"
            )

    def open(self, *, ingest: bool = False) -> None:
        """Open the store for the model; called lazily by anything that needs vectors.

        The background-removal model and the text reader load at the first image to ingest, so a text search
        never pays for them; ingest=True loads them now (the server, so that a missing model is a warning, or
        with `on` an error, from the start).
        """
        if not self._opened:
            with self._open_lock:
                if not self._opened:
                    self.verify_model()
                    self.store.open(self.embedder.model_id, self.embedder.dim)
                    self._opened = True
        if ingest:
            self._load_remover()
            self._load_text_reader()

    def close(self) -> None:
        """Stop the library's own threads and close its store: what a process does before it exits."""
        self._candidate_reader.shutdown(wait=True)
        if self._housekeeper is not None:
            self._housekeeper.join()
        self._active.store.close()

    def _load_remover(self) -> None:
        """`on` needs the model; `auto` carries on without cut-outs, saying so once."""
        if self._remover_checked:
            return
        with self._remover_lock:
            if self._remover_checked or self.remover is None:
                self._remover_checked = True
                return
            try:
                self.remover.load()
            except ModelUnavailable as error:
                if self.settings.background_removal == "on":
                    raise
                log.warning("background removal is off: %s", error)
                self.warnings.append(
                    "background removal is off: its model could not be loaded (the server log says why)"
                )
                self.remover = None
            self._remover_checked = True

    def _load_text_reader(self) -> TextReader | None:
        """`on` needs the OCR engine; `auto` carries on without reading text, saying so once."""
        with self._reader_lock:
            if not self._reader_checked and self.text_reader is not None:
                try:
                    self.text_reader.load()
                except OcrUnavailable as error:
                    if self.settings.ocr == "on":
                        raise ModelUnavailable(f"{error}; or set IMAGEMATCH_OCR=auto or off") from error
                    log.warning("reading text in pictures is off: %s", error)
                    self.warnings.append("reading text in pictures is off: its engine could not be loaded")
                    self.text_reader = None
            self._reader_checked = True
            return self.text_reader

    @property
    def text_engine(self) -> str:
        """What reads the text in pictures, or "off"."""
        return self.text_reader.engine if self.text_reader is not None else "off"

    def _read_text(self, image: Image.Image, data: bytes, max_pixels: int, label: str) -> ImageText:
        """The text in a picture; a picture the reader fails on is stored without it, left for `imagematch ocr`."""
        reader = self._load_text_reader()
        if reader is None:
            return ImageText()
        started = time.perf_counter()

        def larger(side: int) -> Image.Image:
            return media.decode(data, max_pixels=max_pixels, short_side=64, long_side=side).image

        try:
            text = reader.read(image, larger)
        except (RuntimeError, ValueError, OSError, ImageMatchError) as error:
            log.warning("could not read the text in %r: %s", label, error)
            return ImageText()
        log.debug("read %d lines in %r in %.0f ms", len(text.lines), label, (time.perf_counter() - started) * 1000)
        return text

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
            background_removal=self.remover.name if self.remover else "off",
            ocr=self.text_engine,
            warnings=tuple(self.warnings),
        )

    # ingest

    @_one_generation
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
        self.open(ingest=True)
        sha = self._upload_hash(data)
        known = self._known_file(sha, name)
        if known is not None:
            return known
        with self._embed_slots:  # decoding a large image needs memory too, so it queues like the model
            candidate = self._candidate(data, sha, name, text, meta)
        duplicate = self._duplicate_of(candidate, [])
        if duplicate is not None:
            return duplicate
        with self._embed_slots:
            vector = self.embedder.encode_prepared([candidate.pixels])[0]
        words = self._words_vectors([candidate.record])[0]
        with self._write_lock, self.store.exclusive():  # the check and the write, one process at a time
            duplicate = self._duplicate_of(candidate, [], vector)
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

    @_one_generation
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
        self.open(ingest=True)
        active = self._current()
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
            writing = writer.submit(self._in, active, self._store_batch, embedded)

        with (
            ThreadPoolExecutor(
                self.settings.decode_workers, thread_name_prefix="decode", initializer=_lowest_cpu_priority
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
                    window.append(pool.submit(self._in, active, self._prepare_upload, upload))

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
        self.store.maintain()
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

    def _embed_batch(
        self, batch: list[_Candidate], emit: Callable[[IngestResult], None]
    ) -> list[tuple[_Candidate, Vector, Vector | None]]:
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
        vectors = self.embedder.encode_prepared([c.pixels for c in fresh])
        words = self._words_vectors([c.record for c in fresh])
        return list(zip(fresh, vectors, words, strict=True))

    def _store_batch(self, embedded: list[tuple[_Candidate, Vector, Vector | None]]) -> list[IngestResult]:
        """Write one embedded batch atomically, checking duplicates again against what is stored by now
        (the batch before it may have been written while this one was embedded, by this process or another: the
        store's exclusive lock keeps another process's check-then-write from interleaving with this one)."""
        started = time.perf_counter()
        results: list[IngestResult] = []
        with self._write_lock, self.store.exclusive():
            keep: list[tuple[_Candidate, Vector, Vector | None]] = []
            for candidate, vector, words_vector in embedded:
                duplicate = self._duplicate_of(candidate, [k[0] for k in keep], vector, [k[1] for k in keep])
                if duplicate is not None:
                    results.append(duplicate)
                else:
                    keep.append((candidate, vector, words_vector))
            self._write(keep)
        if keep:
            log.info("added %d images in %.0f ms", len(keep), (time.perf_counter() - started) * 1000)
        results += [IngestResult("added", candidate.label, record=candidate.record) for candidate, _, _ in keep]
        return results

    def _upload_hash(self, data: bytes) -> str:
        """The file hash of an upload within the size limit; computed once per upload (a camera file costs
        milliseconds to hash)."""
        if len(data) > self.settings.max_upload_bytes:
            raise TooLarge(
                f"the file is {_human_bytes(len(data))}; the limit is {_human_bytes(self.settings.max_upload_bytes)}"
            )
        return file_hash(data)

    def _known_file(self, sha: str, name: str) -> IngestResult | None:
        """Identical bytes are always a duplicate; checked before any decoding."""
        existing = self.store.find_file_hash(sha)
        if existing is None:
            return None
        log.info("duplicate %r: the same file as %s", name, existing.id)
        return IngestResult("duplicate", name, existing=existing, distance=0, reason="the same file is already stored")

    def _candidate(
        self, data: bytes, sha: str, name: str, description: str, metadata: Metadata, label: str = ""
    ) -> _Candidate:
        decoded = media.decode(data, max_pixels=self.settings.max_pixels, **self._decode_sides())
        phash, variants = perceptual_hashes(decoded.image)
        now = datetime.now(UTC)
        pixels, cutout = self._embeddable(decoded.image)
        text = self._read_text(decoded.image, data, self.settings.max_pixels, label or name)
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
            caption_status=CaptionStatus.PENDING if self.captions_wanted else CaptionStatus.NONE,
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

    def _decode_sides(self) -> dict[str, int]:
        """Decode only the pixels that are used: the model's input on the short side, a thumbnail on the long.

        For a camera JPEG this lets draft mode decode at 1/8 scale, several times cheaper than in full.
        """
        return {"short_side": max(self.embedder.image_size, 64), "long_side": media.THUMBNAIL_SIZE}

    def _embeddable(self, image: Image.Image) -> tuple[Prepared, bytes | None]:
        """Model input for an image: the background-removed cut-out when the remover says it helps.

        Stored and query images go through the same steps, so their vectors are comparable.
        """
        self._load_remover()
        if self.remover is None:
            return self.embedder.prepare(image), None
        cut = self.remover.cutout(image)
        if cut.image is None:
            return self.embedder.prepare(image), None
        return self.embedder.prepare(cut.image), media.make_thumbnail(cut.image, media.WORK_SIZE // 2)

    @property
    def duplicate_rule(self) -> DuplicateRule:
        return DuplicateRule(
            self.settings.duplicate_distance,
            self.settings.duplicate_crop_distance,
            self.settings.duplicate_similarity,
            self.settings.duplicate_colour_distance,
        )

    def _candidate_layout(self, candidate: _Candidate) -> ColourLayout:
        """From the thumbnail that is stored with it, so the decision is the same while it waits in a batch and
        once it is stored."""
        if candidate.layout is None:
            candidate.layout = colour_layout(candidate.thumbnail)
        return candidate.layout

    def _stored_layout(self, record: ImageRecord) -> ColourLayout | None:
        """A stored image's colour layout, from its thumbnail (read only when a pHash match needs it, so nothing
        new is stored); from the original when the thumbnail is missing, thumbnailed as at upload. None when
        neither can be read: the pHash then decides alone."""
        thumbnail = self.blobs.read_thumbnail(record.id)
        if thumbnail is None:
            original = self.blobs.read_original(record.id)
            if original is None:
                log.warning("no thumbnail nor original for %s: no colour check", record.id)
                return None
            try:
                decoded = media.decode(original, max_pixels=self.settings.max_pixels, **self._decode_sides())
            except ImageMatchError as error:
                log.warning("the original of %s does not decode (%s): no colour check", record.id, error)
                return None
            thumbnail = media.make_thumbnail(decoded.image)
        return colour_layout(thumbnail)

    def _layout_of(self, record: ImageRecord, pending: Sequence[_Candidate]) -> ColourLayout | None:
        waiting = next((c for c in pending if c.record.id == record.id), None)
        return self._candidate_layout(waiting) if waiting is not None else self._stored_layout(record)

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
        near = self.store.near_phash(candidate.phash, rule.max_distance)  # identical files have identical pHashes
        same_file = next((r for r, _ in near if r.file_hash == candidate.record.file_hash), None)
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
            matches = self.store.near_phash(phash, VARIANT_DISTANCE)
            matches += [(c.record, d) for c in pending if (d := hamming(phash, c.phash)) <= VARIANT_DISTANCE]
            stored = self.store.get_vectors([r.id for r, _ in matches if r.id not in pending_by_id])
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
        near = [r for r, _ in self.store.near_phash(candidate.phash, rule.crop_distance)]
        stored = self.store.get_vectors([r.id for r in near]) if near else {}
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

    def duplicate_groups(self, rule: DuplicateRule | None = None, *, limit: int = 50) -> list[DuplicateGroup]:
        """Near-duplicates across the library, grouped, largest groups first, at most `limit` groups.

        Pairs come from buckets of the pHashes (duplicates.close_pairs: candidate pairs only, never every pair),
        fingerprint distances up to the rule's reach; pairs within the pHash distance are decided by their colour
        layouts (from the thumbnails, as at upload), every other pair by the two stored image vectors, a bounded
        chunk of pairs at a time, however many there are.
        """
        rule = rule or self.duplicate_rule
        records = list(self.iter_records())
        hashes = np.array([phash_from_hex(r.phash) for r in records], dtype=np.uint64)
        pairs = close_pairs(hashes, rule.reach)
        settled = pairs.select(pairs.distance <= rule.max_distance)
        layouts: dict[int, ColourLayout | None] = {}  # read once each, only for images in a close pair

        def layout(index: int) -> ColourLayout | None:
            if index not in layouts:
                layouts[index] = self._stored_layout(records[index])
            return layouts[index]

        links = []
        for a, b, d in zip(*_columns(settled), strict=True):
            one, other = layout(int(a)), layout(int(b))
            colours = None if one is None or other is None else colour_distance(one, other)
            if rule.is_duplicate(int(d), None, colours):
                links.append(DuplicateLink(int(a), int(b), int(d), None))
        undecided = pairs.select(pairs.distance > rule.max_distance)
        for start in range(0, len(undecided), _VECTOR_PAIRS_AT_ONCE):
            chunk = undecided.select(np.arange(start, min(start + _VECTOR_PAIRS_AT_ONCE, len(undecided))))
            involved = sorted({int(i) for i in np.concatenate([chunk.first, chunk.second])})
            vectors = {}
            for batch in range(0, len(involved), _VECTOR_BATCH):
                wanted = [records[i].id for i in involved[batch : batch + _VECTOR_BATCH]]
                vectors.update({key: value[0] for key, value in self.store.get_vectors(wanted).items()})
            for a, b, d in zip(*_columns(chunk), strict=True):
                first, second = records[int(a)].id, records[int(b)].id
                if first in vectors and second in vectors:
                    similarity = float(vectors[first] @ vectors[second])
                    if rule.is_duplicate(int(d), similarity):
                        links.append(DuplicateLink(int(a), int(b), int(d), similarity))
        groups = groups_of([(link.first, link.second) for link in links])[:limit]
        found = []
        for members in groups:
            inside = set(members)
            found.append(
                DuplicateGroup(
                    records=[records[i] for i in members],
                    links=[
                        (records[link.first].id, records[link.second].id, link.distance, link.similarity)
                        for link in links
                        if link.first in inside
                    ],
                )
            )
        return found

    @_one_generation
    def keep_one(self, keep: str, delete: Sequence[str]) -> list[ImageRecord]:
        """Resolve a duplicate group: delete the others, never the one kept. Returns what was deleted."""
        self.get(keep)
        if keep in delete:
            raise InvalidInput("the image to keep cannot also be deleted")
        targets = [self.get(image_id) for image_id in dict.fromkeys(delete)]
        for record in targets:
            self.delete(record.id)
        return targets

    def _words_vectors(self, records: Sequence[ImageRecord]) -> list[Vector | None]:
        """The text embedding of each record's own words (description first, then caption, then the text in the
        picture: what does not fit the text encoder's context is cut from the end), or None."""
        texts = [
            self.embedder.fit_text([r.description, r.caption, r.ocr.text]).text if r.words else "" for r in records
        ]
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
            if candidate.cutout is not None:
                self.blobs.put_cutout(candidate.record.id, candidate.cutout)
        with self._noting([c.record.id for c, _, _ in items], "put"):
            self.store.upsert([StoredImage(c.record, v, w) for c, v, w in items])
        if self.captions_wanted and self.on_pending is not None:
            self.on_pending()
        self._writes_since_maintenance += len(items)
        if self._writes_since_maintenance >= self.settings.maintain_every:
            self._writes_since_maintenance = 0
            threading.Thread(target=self._maintain_quietly, name="maintain", daemon=True).start()

    def _maintain_quietly(self) -> None:
        """Background housekeeping after many single uploads; one at a time, never failing a request."""
        if not self._maintenance.acquire(blocking=False):
            return
        try:
            self.store.maintain()
        except Exception:
            log.exception("store maintenance failed; it will be tried again after more uploads")
        finally:
            self._maintenance.release()

    # read and edit

    def get(self, image_id: str) -> ImageRecord:
        record = self.store.get(image_id) if could_be_image_id(image_id) else None
        if record is None:
            raise NotFound(image_id)
        return record

    def page(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        newest_first: bool = True,
        flt: Filter | None = None,
        after: PageCursor | None = None,
    ) -> list[ImageRecord]:
        """A page of records by the time they were added. With `after` (PageCursor.of the previous page's last
        record) the next page, at the cost of the first however deep; `offset` pages by number instead."""
        if offset < 0 or not 1 <= limit <= 1000:
            raise InvalidInput("offset must be >= 0 and limit between 1 and 1000")
        return self.store.page(offset=offset, limit=limit, newest_first=newest_first, flt=flt, after=after)

    def count(self, flt: Filter | None = None) -> int:
        return self.store.count(flt)

    @_one_generation
    def update(self, image_id: str, patch: RecordPatch) -> ImageRecord:
        """Apply a user's edit; the words vector follows the new description, caption or text in the picture."""
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
            if patch.ocr_text is not None:
                corrected = clean_text(patch.ocr_text, "the text in the picture", MAX_TEXT_IN_PICTURE)
                changes["ocr"] = replace(record.ocr, correction=corrected)
            if not changes:
                return record
            updated = replace(record, updated_at=datetime.now(UTC), **changes)  # type: ignore[arg-type]
            words_changed = updated.words != record.words
            if words_changed:
                words = self._words_vectors([updated])[0]
            else:
                words = self.store.get_vectors([image_id]).get(image_id, (None, None))[1]
            with self._noting([image_id], "put"):
                self.store.update(updated, words)
        log.info("updated %s (%s)", image_id, ", ".join(sorted(changes)))
        return updated

    @_one_generation
    def delete(self, image_id: str) -> ImageRecord:
        """Record first, then files: a crash in between leaves an orphan file, not a broken record."""
        with self._write_lock:
            record = self.get(image_id)
            with self._noting([image_id], "delete"):
                self.store.delete([image_id])
            self.blobs.delete(image_id)
        log.info("deleted %s %r", image_id, record.filename)
        return record

    @_one_generation
    def reset(self, confirm: str) -> int:
        """Delete every record and stored file, only with the exact confirmation phrase."""
        if confirm != RESET_PHRASE:
            raise InvalidInput(f"to delete everything, confirm with the exact phrase {RESET_PHRASE!r}")
        if self.store.generations().staging:
            raise Conflict("a reindex is running: reset the library when it has finished")
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

    def cutout_file(self, image_id: str) -> Path | bytes:
        """The background-removed image that was embedded, for users to check; 404 when none was used."""
        self.get(image_id)
        found = self.blobs.cutout_path(image_id) or self.blobs.read_cutout(image_id)
        if found is None:
            raise NotFound(image_id)
        return found

    def thumbnail_file(self, image_id: str) -> Path | bytes:
        self.get(image_id)
        found = self.blobs.thumbnail_path(image_id) or self.blobs.read_thumbnail(image_id)
        if found is None:
            raise NotFound(image_id)
        return found

    # search

    @_one_generation
    def search(self, query: Query) -> SearchResult:
        """Top k for a query of weighted terms.

        The query vector is the weighted sum of the terms' normalised vectors, re-normalised. When the query
        has text and images have words (description, caption), each candidate is also scored by its words
        vector against the text, fused by `words_weight` times the text's share of the query (imagematch.fusion).
        Stored images that are terms of the query are left out of its results.
        """
        started = time.perf_counter()
        if not 1 <= query.k <= self.settings.max_k:
            raise InvalidQuery(f"k must be between 1 and {self.settings.max_k}")
        if any(isinstance(t, TextTerm) and len(t.text) > MAX_QUERY_TEXT_LENGTH for t in query.terms):
            raise InvalidQuery(f"the search text is longer than {MAX_QUERY_TEXT_LENGTH:,} characters; shorten it")
        self.open()
        vectors = self._query_vectors(query.terms)
        encoded = time.perf_counter()
        weight = self.settings.words_weight * vectors.text_share
        # The stored images a query is made of are what it asks to see others like: they are not results.
        shown = {t.image_id for t in query.terms if isinstance(t, StoredImageTerm)}
        wanted = query.k + len(shown)
        depth = self._depth(wanted) if query.hybrid else wanted
        text = vectors.text if weight > 0 else None
        scoring = _Scoring(vectors.query, text, weight)
        if text is None:
            hits = [
                Hit(hit.record, hit.score, Match(hit.score))
                for hit in self.store.search(vectors.query, k=depth, flt=query.filter)
            ]
        else:
            hits = self._fused_search(scoring, text, depth, query.filter, shown)
        if query.hybrid:
            hits = self._hybrid(hits, query, depth, scoring)
        least = self._least_score(query, vectors.query)
        if least is not None:
            hits = [hit for hit in hits if hit.score >= least]
        hits = [hit for hit in hits if hit.record.id not in shown][: query.k]
        took = (time.perf_counter() - started) * 1000
        log.info("search %s k=%d: %d hits in %.0f ms", _describe_terms(query.terms), query.k, len(hits), took)
        encode = (encoded - started) * 1000
        return SearchResult(hits=hits, truncated=vectors.truncated, took_ms=took, encode_ms=encode)

    @_one_generation
    def simple_search(self, request: SimpleSearch) -> SearchResult:
        """The seed's form: text and/or an image, mixed by image_weight in [0, 1]."""
        query = to_query(request)
        if self.settings.query_caption and request.text.strip():
            caption = self._query_image_caption(request)
            if caption:
                query = replace(
                    query,
                    terms=tuple(replace(t, context=caption) if isinstance(t, TextTerm) else t for t in query.terms),
                )
        return self.search(query)

    def _query_image_caption(self, request: SimpleSearch) -> str:
        """The caption of the query image when it is a stored image (by id, or the same file as one)."""
        record = None
        if request.image_id and could_be_image_id(request.image_id):
            record = self.store.get(request.image_id)
        elif request.image is not None:
            record = self.store.find_file_hash(file_hash(request.image))
        return record.caption if record is not None else ""

    def _depth(self, k: int) -> int:
        """How many candidates a ranking that is fused with another one reads."""
        return min(max(k * 3, 100), self.settings.max_k * 3)

    def _hybrid(self, vector_hits: list[Hit], query: Query, depth: int, scoring: _Scoring) -> list[Hit]:
        """The vector ranking fused with a keyword ranking of the query's positive words (reciprocal rank fusion).

        Results are ordered by the fused value, and keep the score of their vectors, so that every mode shows
        one scale: an image that only the keywords found is scored from its stored vectors like any other.
        Without positive text terms there is nothing to match as keywords.
        """
        words = " ".join(t.text for t in query.terms if isinstance(t, TextTerm) and t.weight > 0)
        if not words.strip():
            return vector_hits
        keyword_hits = self.store.keyword_search(words, k=depth, flt=query.filter)
        scored = {hit.record.id: hit for hit in vector_hits}
        unscored = [hit.record for hit in keyword_hits if hit.record.id not in scored]
        if unscored:
            stored = self.store.get_vectors([record.id for record in unscored])
            kept = [record for record in unscored if record.id in stored]
            for record, (score, why) in zip(kept, scoring.score([stored[r.id] for r in kept]), strict=True):
                scored[record.id] = Hit(record, score, why)
        # An image only the keywords found still has the rank its score earns among the vector candidates: left
        # out of the vector ranking, a unique keyword match would tie with the vectors' first and lose by its id.
        by_score = sorted(scored, key=lambda i: (-scored[i].score, i))
        fused = reciprocal_rank_fusion([by_score, [hit.record.id for hit in keyword_hits]])
        asked = set(keyword_tokens(words))
        hits = []
        for key in sorted((i for i in fused if i in scored), key=lambda i: (-fused[i], i)):
            hit = scored[key]
            found = tuple(sorted(asked & set(keyword_tokens(search_text(hit.record)))))
            why = replace(hit.why or Match(hit.score), keywords=found, rank_fusion=fused[key])
            hits.append(replace(hit, why=why))
        return hits

    def _fused_search(self, scoring: _Scoring, text: Vector, k: int, flt: Filter | None, shown: set[str]) -> list[Hit]:
        """The top k by image and words together: candidates from both vectors, each scored exactly."""
        depth = self._depth(k)
        by_image = self._candidate_reader.submit(self.store.nearest, scoring.query, k=depth, flt=flt)
        by_words = self.store.nearest(text, k=depth, flt=flt, field="words")
        image_candidates = by_image.result()
        candidates = image_candidates + by_words
        stored = {c.id: c.vectors for c in candidates if c.vectors is not None}
        stored |= self.store.get_vectors([c.id for c in candidates if c.id not in stored])
        ids = [i for i in dict.fromkeys(c.id for c in candidates) if i in stored]
        if not ids:
            return []
        # The query's own images would widen the spread that puts words evidence on the image scale.
        from_image = [stored[c.id][0] for c in image_candidates if c.id in stored and c.id not in shown]
        scoring.calibrate(self._reference_vectors(), np.array(from_image) if from_image else None)
        scores = scoring.score([stored[i] for i in ids])
        order = sorted(range(len(ids)), key=lambda n: -scores[n][0])[:k]
        records = self.store.get_many([ids[n] for n in order])  # only the k that are shown
        return [Hit(records[ids[n]], *scores[n]) for n in order if ids[n] in records]

    def _least_score(self, query: Query, vector: Vector) -> float | None:
        """The score a result needs: the query's min_score, raised to its automatic cut-off when that is on."""
        least = query.min_score
        if (query.cutoff or self.settings.cutoff) == "auto":
            automatic = auto_min_score(self._library_sample() @ vector)
            if automatic is not None:
                least = automatic if least is None else max(least, automatic)
        return least

    def _library_sample(self) -> Matrix:
        """Image vectors of up to SAMPLE_SIZE images spread over the library (by date added), what a query's floor
        is measured on: read again when the library has grown or shrunk by a tenth (while small, at any change)."""
        count = self.store.count()
        model_id = self.embedder.model_id
        with self._sample_lock:
            if self._sample is not None:
                kept_count, kept_model, vectors = self._sample
                if kept_model == model_id and abs(count - kept_count) <= kept_count // 10:
                    return vectors
        pieces = _SAMPLE_PIECES if count > SAMPLE_SIZE else 1
        step, size = count // pieces, SAMPLE_SIZE // pieces
        ids = [record.id for n in range(pieces) for record in self.store.page(offset=n * step, limit=size)]
        stored = self.store.get_vectors(ids)
        rows = [stored[i][0] for i in dict.fromkeys(ids) if i in stored]
        sample = np.stack(rows) if rows else np.zeros((0, self.embedder.dim), dtype=np.float32)
        with self._sample_lock:
            self._sample = (count, model_id, sample)
        return sample

    def _reference_vectors(self) -> Matrix:
        """The reference texts' vectors that words evidence is measured against: made once per model and
        runtime, and kept in the model cache for the processes that follow (each CLI search is one)."""
        model_id = self.embedder.model_id
        with self._references_lock:
            if self._references is None or self._references[0] != model_id:
                vectors = cached_text_vectors(self.embedder, REFERENCE_TEXTS, self.settings.model_cache_dir)
                self._references = (model_id, vectors)
            return self._references[1]

    def _query_vectors(self, terms: Sequence[QueryTerm]) -> _QueryVectors:
        total = np.zeros(self.embedder.dim, dtype=np.float32)
        text_total = np.zeros(self.embedder.dim, dtype=np.float32)
        truncated = False
        text_weight = all_weight = 0.0
        for term in terms:
            if term.weight == 0:
                continue
            vector, cut = self._term_vector(term)
            truncated = truncated or cut
            total += np.float32(term.weight) * vector
            all_weight += abs(term.weight)
            if isinstance(term, TextTerm):
                text_total += np.float32(term.weight) * vector
                text_weight += abs(term.weight)
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise InvalidQuery("the query terms cancel each other out; change a weight")
        text_norm = float(np.linalg.norm(text_total))
        text = (text_total / text_norm).astype(np.float32) if text_norm > 1e-6 else None
        return _QueryVectors((total / norm).astype(np.float32), text, text_weight / all_weight, truncated)

    def _term_vector(self, term: QueryTerm) -> tuple[Vector, bool]:
        if isinstance(term, TextTerm):
            fitted = self.embedder.fit_text([term.text, term.context])
            user_cut = self.embedder.count_tokens(term.text) > fitted.limit
            return self.embedder.encode_texts([fitted.text])[0], user_cut
        if isinstance(term, ImageTerm):
            if len(term.data) > self.settings.max_upload_bytes:
                raise TooLarge(f"the query image is larger than {_human_bytes(self.settings.max_upload_bytes)}")
            return self._image_vector(term.data, self.settings.max_pixels, term.region), False
        if not could_be_image_id(term.image_id):
            raise NotFound(term.image_id)
        if term.region is not None:
            record = self.get(term.image_id)
            original = self.blobs.read_original(term.image_id)
            if original is None:
                raise NotFound(term.image_id)
            limit = max(self.settings.max_pixels, record.width * record.height)
            return self._image_vector(original, limit, term.region), False
        stored = self.store.get_vectors([term.image_id]).get(term.image_id)
        if stored is None:
            raise NotFound(term.image_id)
        return stored[0], False

    def query_preview(self, data: bytes) -> bytes:
        """Check a query image the way a search decodes it and make its preview thumbnail, in a decode slot like
        every other decode: the search page keeps the image for the searches that follow."""
        if len(data) > self.settings.max_upload_bytes:
            raise TooLarge(f"the query image is larger than {_human_bytes(self.settings.max_upload_bytes)}")
        with self._embed_slots:
            decoded = media.decode(data, max_pixels=self.settings.max_pixels, **self._decode_sides())
            return media.make_thumbnail(decoded.image)

    def _image_vector(self, data: bytes, max_pixels: int, region: Region | None) -> Vector:
        """An image's embedding, made the way stored images are; with a region, of that rectangle only."""
        with self._embed_slots:
            sides = self._decode_sides() if region is None else {}  # a region keeps more pixels to crop from
            decoded = media.decode(data, max_pixels=max_pixels, **sides)
            image = decoded.image if region is None else media.crop_region(decoded.image, region)
            pixels, _ = self._embeddable(image)
            vector: Vector = self.embedder.encode_prepared([pixels])[0]
        return vector

    # captions

    def pending_captions(self, limit: int = 20) -> list[ImageRecord]:
        """Images waiting for a caption, oldest first: the queue lives in the store, so restarts resume it."""
        return self.store.page(limit=limit, newest_first=False, flt=_status_filter(CaptionStatus.PENDING))

    def caption_counts(self) -> dict[str, int]:
        return {status.value: self.store.count(_status_filter(status)) for status in CaptionStatus}

    @_one_generation
    def apply_caption(self, image_id: str, caption: str) -> ImageRecord | None:
        """Store a generated caption and re-embed the image's words; a user's correction always wins."""
        with self._write_lock:
            record = self.store.get(image_id)
            if record is None or record.caption_edited:
                return record
            updated = replace(
                record,
                caption=caption,
                caption_status=CaptionStatus.DONE,
                caption_error="",
                updated_at=datetime.now(UTC),
            )
            with self._noting([image_id], "put"):
                self.store.update(updated, self._words_vectors([updated])[0])
        log.info("captioned %s: %r", image_id, caption[:80])
        return updated

    @_one_generation
    def fail_caption(self, image_id: str, reason: str) -> None:
        with self._write_lock:
            record = self.store.get(image_id)
            if record is None or record.caption_edited:
                return
            updated = replace(record, caption_status=CaptionStatus.FAILED, caption_error=reason)
            words = self.store.get_vectors([image_id]).get(image_id, (None, None))[1]
            with self._noting([image_id], "put"):
                self.store.update(updated, words)
        log.warning("caption failed for %s: %s", image_id, reason)

    @_one_generation
    def retry_captions(self, image_id: str | None = None) -> int:
        """Queue failed captions again (or one image's caption, whatever its state). Returns how many."""
        if not self.captions_wanted:
            raise InvalidInput("captions are off: set MOONDREAM_API_KEY or IMAGEMATCH_MOONDREAM_ENDPOINT")
        queued: set[str] = set()
        with self._write_lock:
            if image_id is not None:
                self._queue_captions([self.get(image_id)])
                queued.add(image_id)
            else:
                # One pass after a cursor: each failed image is read once, and one that fails again meanwhile
                # (the worker runs on) is left for the next retry, so this ends.
                after: PageCursor | None = None
                while page := self.store.page(
                    limit=_RETRY_PAGE, newest_first=False, flt=_status_filter(CaptionStatus.FAILED), after=after
                ):
                    after = PageCursor.of(page[-1])
                    fresh = [r for r in page if r.id not in queued]
                    self._queue_captions(fresh)
                    queued.update(r.id for r in fresh)
        log.info("queued %d captions again", len(queued))
        if queued and self.on_pending is not None:
            self.on_pending()
        return len(queued)

    def _queue_captions(self, records: Sequence[ImageRecord]) -> None:
        words = self.store.get_vectors([r.id for r in records])
        with self._noting([r.id for r in records], "put"):
            for record in records:
                pending = replace(record, caption_status=CaptionStatus.PENDING, caption_error="", caption_edited=False)
                self.store.update(pending, words.get(record.id, (None, None))[1])

    # the text in pictures

    @_one_generation
    def read_texts(
        self,
        *,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TextReadReport:
        """Read the text in every picture not read yet (`imagematch ocr`, the OCR job). Each picture's text is
        written as soon as it is read, so an interrupted run resumes where it stopped; a correction made
        meanwhile wins."""
        self.open()
        if self._load_text_reader() is None:
            raise NotSupported("reading text in pictures is off: set IMAGEMATCH_OCR=auto or on")
        pending = deque(record.id for record in self.iter_records() if record.ocr.pending)
        report = TextReadReport(total=len(pending))
        active = self._current()
        if on_progress is not None:
            on_progress(0, report.total)
        with ThreadPoolExecutor(
            self.settings.decode_workers, thread_name_prefix="ocr", initializer=_lowest_cpu_priority
        ) as pool:
            running: deque[Future[bool | None]] = deque()
            while pending or running:
                # As many pictures in flight as there are workers: a cancel stops after those.
                while pending and len(running) < self.settings.decode_workers and not (cancel and cancel.is_set()):
                    running.append(pool.submit(self._in, active, self._read_stored, pending.popleft()))
                if not running:
                    break
                outcome = running.popleft().result()
                report.done += 1
                report.failed += outcome is None
                report.with_text += bool(outcome)
                if on_progress is not None:
                    on_progress(report.done, report.total)
        log.info("read the text in %d pictures: %d hold text, %d failed", report.done, report.with_text, report.failed)
        return report

    def _read_stored(self, image_id: str) -> bool | None:
        """Read one stored picture and write its text: True when it holds text, None when it could not be read."""
        record = self.store.get(image_id)
        data = self.blobs.read_original(image_id) if record is not None else None
        if record is None or data is None:
            return None
        limit = max(self.settings.max_pixels, record.width * record.height)
        try:
            decoded = media.decode(data, max_pixels=limit, short_side=DETECT_SIDE, long_side=64)
        except ImageMatchError as error:
            log.warning("could not read the text in %s: %s", image_id, error)
            return None
        text = self._read_text(decoded.image, data, limit, image_id)
        if text.pending:
            return None
        with self._write_lock, self.store.exclusive():  # a correction another process makes meanwhile wins
            current = self.store.get(image_id)
            if current is None or not current.ocr.pending:
                return bool(current and current.ocr.text)
            updated = replace(current, ocr=text)
            if updated.words != current.words:
                words = self._words_vectors([updated])[0]
            else:
                words = self.store.get_vectors([image_id]).get(image_id, (None, None))[1]
            with self._noting([image_id], "put"):
                self.store.update(updated, words)
        return bool(text.text)

    # maintenance

    def reindex(
        self,
        on_progress: Callable[[int, int], None] | None = None,
        *,
        embedder: Embedder | None = None,
        model_spec: str = "",
    ) -> int:
        """Re-embed every stored original with the configured model into a staging generation, then switch.

        Servers on the library keep answering on the old model meanwhile: what they write is noted and carried
        into the new generation before and after the switch, and they move to the new model by themselves
        (`_follow`). Interrupted, it resumes where it stopped; until the switch the old library is untouched.
        `embedder` and `model_spec`: another model than the configured one (a reindex started from the web UI).
        """
        pinned = _Active(embedder, self._current().store) if embedder is not None else None
        with self._pinned(pinned) as active:
            embedder, live = active.embedder, active.store
            live.put_document(generations.MODEL_SPECS, embedder.model_id, model_spec or self.model_spec)
            staging = live.start_rebuild(embedder.model_id, embedder.dim)
            target = _Active(embedder, staging)
            done = set(staging.ids())
            if not done:
                time.sleep(SWITCH_SETTLES)  # writes that read the pointer before the staging one existed land
            ids = list(live.ids())
            total = len(ids)
            if on_progress:
                on_progress(len(done), total)
            todo = [i for i in ids if i not in done]
            batch_size = self.settings.embed_batch_size
            with ThreadPoolExecutor(
                self.settings.decode_workers, thread_name_prefix="reindex", initializer=_lowest_cpu_priority
            ) as pool:
                for start in range(0, len(todo), batch_size):
                    chunk = todo[start : start + batch_size]
                    records = live.get_many(chunk)
                    wanted = [records[i] for i in chunk if i in records]
                    loaded = list(pool.map(lambda r: self._in(target, self._reload, r), wanted))
                    self._in(target, self._embed_into, staging, [r for r in loaded if r])
                    done.update(chunk)
                    if on_progress:
                        on_progress(len(done), total)
            self._carry_changes(target)  # what the servers wrote while this ran
        if live.generations().staging != staging.generation_name:
            raise Conflict("another reindex replaced this one's staging generation: this one stops, switching nothing")
        live.at(live.generation_name).finish_rebuild()  # `live` itself stays on the old one for its readers
        with self._write_lock:
            self._active = target
        self._opened = False
        self.open()
        time.sleep(SWITCH_SETTLES)  # writes that read the old pointer just before the switch land meanwhile
        self._carry_changes(target)
        staging.maintain()
        log.info("reindexed %d images with %s", total, embedder.model_id)
        return total

    def _embed_into(self, store: VectorStore, loaded: Sequence[tuple[ImageRecord, Prepared, bytes | None]]) -> None:
        """Embed reloaded originals with the current model and write them (one batch) into `store`."""
        if not loaded:
            return
        embedder = self.embedder
        vectors = embedder.encode_prepared([pixels for _, pixels, _ in loaded])
        words = self._words_vectors([record for record, _, _ in loaded])
        for record, _, cutout in loaded:
            if cutout is not None:
                self.blobs.put_cutout(record.id, cutout)
        store.upsert(
            [
                StoredImage(replace(r, model_id=embedder.model_id, cutout=c is not None), v, w)
                for (r, _, c), v, w in zip(loaded, vectors, words, strict=True)
            ]
        )

    def _reload(self, record: ImageRecord) -> tuple[ImageRecord, Prepared, bytes | None] | None:
        data = self.blobs.read_original(record.id)
        if data is None:
            log.error("reindex: the original of %s is missing; run `imagematch check`", record.id)
            return None
        limit = max(self.settings.max_pixels, record.width * record.height)
        decoded = media.decode(data, max_pixels=limit, **self._decode_sides())
        pixels, cutout = self._embeddable(decoded.image)
        return record, pixels, cutout

    def iter_records(self, page: int = 500, flt: Filter | None = None) -> Iterator[ImageRecord]:
        """Every (matching) record, oldest first, a page at a time after the last one seen: each page costs
        about the same, so a full pass is linear, and records added meanwhile are reached, never repeated."""
        after: PageCursor | None = None
        while True:
            records = self.store.page(limit=page, newest_first=False, flt=flt, after=after)
            yield from records
            if len(records) < page:
                return
            after = PageCursor.of(records[-1])


@dataclass(slots=True)
class TextReadReport:
    """What `read_texts` did: pictures to read, read so far, found holding text, not readable."""

    total: int
    done: int = 0
    with_text: int = 0
    failed: int = 0


class _Scoring:
    """How one query scores any image from its stored vectors: the image cosine, plus what the image's words add
    when the query has words that count (imagematch.fusion). The words side is calibrated once per search, on the
    reference texts and the query's image candidates, so that images found later (by keywords) score alike."""

    def __init__(self, query: Vector, text: Vector | None, weight: float) -> None:
        self.query = query
        self.text = text
        self.weight = weight
        self._reference_scores: npt.NDArray[np.float64] | None = None
        self._baseline: npt.NDArray[np.float64] | None = None

    def calibrate(self, references: Matrix, image_candidates: Matrix | None) -> None:
        """The text's cosines with the reference texts, and the image cosines of the query's image candidates."""
        if self.text is not None:
            self._reference_scores = (references @ self.text).astype(np.float64)
        if image_candidates is not None:
            self._baseline = (image_candidates @ self.query).astype(np.float64)

    def score(self, vectors: Sequence[tuple[Vector, Vector | None]]) -> list[tuple[float, Match]]:
        """Each image's (score, why) from its image and words vectors."""
        if not vectors:
            return []
        image = np.array([float(v @ self.query) for v, _ in vectors])
        if self.text is None or self._reference_scores is None:
            return [(float(x), Match(float(x))) for x in image]
        text = self.text
        words = np.array([float(w @ text) if w is not None else np.nan for _, w in vectors])
        standing = words_standing(words, self._reference_scores)
        fused = fuse(image, standing, self._baseline if self._baseline is not None else image, self.weight)
        return [
            (float(f), Match(float(x), None if np.isnan(w) else float(w), float(f - x)))
            for x, w, f in zip(image, words, fused, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class _QueryVectors:
    query: Vector  # all terms
    text: Vector | None  # the text terms alone, for the words vectors
    text_share: float  # how much of the query's weight is text
    truncated: bool


def _lowest_cpu_priority() -> None:
    """For the threads that decode ahead of the model in bulk work: they take the cores only when the model's
    threads (and searches) leave them idle. A model run spread over all cores waits at every step for its
    slowest thread, so a decoder that preempts one of them stalls them all; at the lowest priority the decoders
    fill the gaps instead (measured in bench/ingest.py). Linux sets this per thread; elsewhere it is skipped."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _columns(pairs: Pairs) -> tuple[list[int], list[int], list[int]]:
    return pairs.first.tolist(), pairs.second.tolist(), pairs.distance.tolist()


def _status_filter(status: CaptionStatus) -> Filter:
    return Filter((Condition("caption_status", "eq", status.value, builtin=True),))


def to_query(request: SimpleSearch) -> Query:
    """Turn the seed's two-input form into a query of terms."""
    weight = request.image_weight
    if not (isinstance(weight, int | float) and 0.0 <= weight <= 1.0):
        raise InvalidQuery("image_weight must be a number between 0 and 1")
    text = request.text.strip()
    image_terms: list[QueryTerm] = []
    if request.image is not None:
        image_terms.append(ImageTerm(request.image, 1.0, region=request.region))
    if request.image_id:
        image_terms.append(StoredImageTerm(request.image_id, 1.0, region=request.region))
    if not text and not image_terms:
        raise InvalidQuery("give text, an image or an image id to search with")
    if request.region is not None and not image_terms:
        raise InvalidQuery("a region needs an image to select it from")
    options = {"hybrid": request.hybrid, "min_score": request.min_score, "cutoff": request.cutoff}
    if not image_terms:
        return Query((TextTerm(text),), request.k, request.filter, **options)  # type: ignore[arg-type]
    share = 1.0 / len(image_terms)
    terms: list[QueryTerm] = [replace(t, weight=share * (weight if text else 1.0)) for t in image_terms]
    if text:
        terms.append(TextTerm(text, 1.0 - weight))
    kept = tuple(t for t in terms if t.weight != 0) or tuple(terms)
    return Query(kept, request.k, request.filter, **options)  # type: ignore[arg-type]


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
