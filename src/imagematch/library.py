"""The Library: the facade the entry points (web, CLI, jobs) hold. It builds the services, one job each
(imagematch.services), on one store, one blob store and one model, and hands them out as attributes:
`library.ingest`, `library.search`, `library.catalog`, `library.duplicates`, `library.captions`,
`library.maintenance`, `library.tuning`. The pairing of the model with its generation of the store is `library.pairing`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imagematch.ai.background import BackgroundRemover
from imagematch.ai.embedder import Embedder
from imagematch.ai.ocr import TextReader
from imagematch.blobs import BlobStore
from imagematch.services.caption_queue import CaptionQueue
from imagematch.services.carrying import ChangeCarrier
from imagematch.services.catalog import RESET_PHRASE, Catalog
from imagematch.services.duplicate_review import DuplicateGroup, DuplicateReview
from imagematch.services.embedding import Embedding
from imagematch.services.ingest import Ingest, Upload
from imagematch.services.maintenance import Maintenance, TextReadReport
from imagematch.services.pairing import Pairing
from imagematch.services.search import Search, SimpleSearch, to_query
from imagematch.services.tuning import TuneReport, Tuning
from imagematch.settings import Settings
from imagematch.store.base import VectorStore
from imagematch.store.tuned import Applied

__all__ = [
    "RESET_PHRASE",
    "DuplicateGroup",
    "Library",
    "LibraryInfo",
    "SimpleSearch",
    "TextReadReport",
    "TuneReport",
    "Upload",
    "to_query",
]


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
    tuning: Applied | None  # the search tuning in use for the model (`imagematch tune`), or None
    tuned_words: tuple[str, ...]  # what that tuning learned most
    warnings: tuple[str, ...]


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
        self.blobs = blobs
        self.warnings: list[str] = []  # degraded features, shown in health and on every page
        self.pairing = Pairing(embedder, store, self.warnings, model_spec=model_spec, resolve_model=resolve_model)
        self.embedding = Embedding(
            settings, self.pairing, blobs, self.warnings, remover=remover, text_reader=text_reader
        )
        self.carrier = ChangeCarrier(self.pairing, self.embedding)
        self.pairing.housework = self.carrier.keep_house
        self.catalog = Catalog(settings, self.pairing, self.embedding, blobs)
        self.tuning = Tuning(settings, self.pairing, self.catalog)
        self.captions = CaptionQueue(settings, self.pairing, self.embedding, self.catalog, wanted=captions_wanted)
        self.ingest = Ingest(settings, self.pairing, self.embedding, blobs, self.catalog, self.captions)
        self.search = Search(settings, self.pairing, self.embedding, self.catalog, blobs, self.tuning)
        self.duplicates = DuplicateReview(settings, self.pairing, self.catalog)
        self.maintenance = Maintenance(settings, self.pairing, self.embedding, self.carrier, self.catalog, blobs)
        self._settings = settings

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """New settings reach every service at once (tests and the screenshot script change limits)."""
        self._settings = settings
        for service in (
            self.embedding,
            self.catalog,
            self.captions,
            self.ingest,
            self.search,
            self.duplicates,
            self.maintenance,
            self.tuning,
        ):
            service.settings = settings

    @property
    def embedder(self) -> Embedder:
        """The model in use now (it changes when a reindex anywhere switches the library)."""
        return self.pairing.embedder

    @property
    def store(self) -> VectorStore:
        """The generation of the store in use now, paired with `embedder`."""
        return self.pairing.store

    def verify_model(self) -> None:
        self.pairing.verify_model()

    def open(self, *, ingest: bool = False) -> None:
        """Open the store for the model; called lazily by anything that needs vectors.

        The background-removal model and the text reader load at the first image to ingest, so a text search
        never pays for them; ingest=True loads them now (the server, so that a missing model is a warning, or
        with `on` an error, from the start).
        """
        if ingest:
            self.embedding.open_for_ingest()
        else:
            self.pairing.open()

    def close(self) -> None:
        """Stop the library's own threads and close its store: what a process does before it exits."""
        self.search.close()
        self.pairing.close()

    def info(self) -> LibraryInfo:
        stored = self.store.stored_model()
        tuning = self.tuning.state()
        embedder = self.embedder
        loaded = bool(getattr(embedder, "loaded", True))
        return LibraryInfo(
            model_id=embedder.model_id,
            model_loaded=loaded,
            dimensions=embedder.dim if loaded else (stored[1] if stored else None),
            context_length=embedder.context_length if loaded else None,
            store=self.store.name,
            stored_model=stored[0] if stored else None,
            images=self.store.count(),
            data_dir=str(self.settings.data_dir),
            background_removal=self.embedding.remover.name if self.embedding.remover else "off",
            ocr=self.embedding.text_engine,
            tuning=tuning.current,
            tuned_words=tuple(self.tuning.learned_words(tuning)),
            warnings=tuple(self.warnings),
        )
