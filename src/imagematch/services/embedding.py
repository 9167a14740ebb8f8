"""How an image and its words become vectors with the model in use: decoded at the sizes the model and the
thumbnails need, cut out when background removal helps, its text read, in a bounded number of slots. Stored
images and query images go through the same steps, so their vectors are comparable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from PIL import Image

from imagematch import media
from imagematch.ai.background import BackgroundRemover
from imagematch.ai.embedder import Prepared
from imagematch.ai.ocr import OcrUnavailable, TextReader
from imagematch.blobs import BlobStore
from imagematch.records import ImageMatchError, ImageRecord, ImageText, ModelUnavailable, StoredImage, Vector
from imagematch.services.pairing import Pairing
from imagematch.settings import Settings
from imagematch.store.base import Records

log = logging.getLogger(__name__)


class Embedding:
    def __init__(
        self,
        settings: Settings,
        pairing: Pairing,
        blobs: BlobStore,
        warnings: list[str],
        *,
        remover: BackgroundRemover | None = None,
        text_reader: TextReader | None = None,
    ) -> None:
        self.settings = settings
        self.pairing = pairing
        self.blobs = blobs
        self.warnings = warnings
        self.remover = remover
        self._remover_lock = threading.Lock()
        self._remover_checked = False  # loaded, or found missing and turned off
        self.text_reader = text_reader
        self._reader_lock = threading.Lock()
        self._reader_checked = False
        # Bounds memory under a flood: at most this many requests decode an image at once; others queue.
        self.slots = threading.BoundedSemaphore(max(1, settings.decode_workers))

    def open_for_ingest(self) -> None:
        """Open the store, and load the background-removal model and the text reader that ingest needs."""
        self.pairing.open()
        self.load_remover()
        self.load_text_reader()

    def load_remover(self) -> None:
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

    def load_text_reader(self) -> TextReader | None:
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

    def read_text(self, image: Image.Image, data: bytes, max_pixels: int, label: str) -> ImageText:
        """The text in a picture; a picture the reader fails on is stored without it, left for `imagematch ocr`."""
        reader = self.load_text_reader()
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

    def decode_sides(self) -> dict[str, int]:
        """Decode only the pixels that are used: the model's input on the short side, a thumbnail on the long.

        For a camera JPEG this lets draft mode decode at 1/8 scale, several times cheaper than in full.
        """
        return {"short_side": max(self.pairing.embedder.image_size, 64), "long_side": media.THUMBNAIL_SIZE}

    def embeddable(self, image: Image.Image) -> tuple[Prepared, bytes | None]:
        """Model input for an image: the background-removed cut-out when the remover says it helps.

        Stored and query images go through the same steps, so their vectors are comparable.
        """
        self.load_remover()
        if self.remover is None:
            return self.pairing.embedder.prepare(image), None
        cut = self.remover.cutout(image)
        if cut.image is None:
            return self.pairing.embedder.prepare(image), None
        return self.pairing.embedder.prepare(cut.image), media.make_thumbnail(cut.image, media.WORK_SIZE // 2)

    def words_vectors(self, records: Sequence[ImageRecord]) -> list[Vector | None]:
        """The text embedding of each record's own words (description first, then caption, then the text in the
        picture: what does not fit the text encoder's context is cut from the end), or None."""
        texts = [
            self.pairing.embedder.fit_text([r.description, r.caption, r.ocr.text]).text if r.words else ""
            for r in records
        ]
        wanted = [i for i, t in enumerate(texts) if t]
        out: list[Vector | None] = [None] * len(records)
        if wanted:
            vectors = self.pairing.embedder.encode_texts([texts[i] for i in wanted])
            for i, vector in zip(wanted, vectors, strict=True):
                out[i] = vector
        return out

    def reload(self, record: ImageRecord) -> tuple[ImageRecord, Prepared, bytes | None] | None:
        data = self.blobs.read_original(record.id)
        if data is None:
            log.error("reindex: the original of %s is missing; run `imagematch check`", record.id)
            return None
        limit = max(self.settings.max_pixels, record.width * record.height)
        decoded = media.decode(data, max_pixels=limit, **self.decode_sides())
        pixels, cutout = self.embeddable(decoded.image)
        return record, pixels, cutout

    def embed_into(self, store: Records, loaded: Sequence[tuple[ImageRecord, Prepared, bytes | None]]) -> None:
        """Embed reloaded originals with the current model and write them (one batch) into `store`."""
        if not loaded:
            return
        embedder = self.pairing.embedder
        vectors = embedder.encode_prepared([pixels for _, pixels, _ in loaded])
        words = self.words_vectors([record for record, _, _ in loaded])
        for record, _, cutout in loaded:
            if cutout is not None:
                self.blobs.put_cutout(record.id, cutout)
        store.upsert(
            [
                StoredImage(replace(r, model_id=embedder.model_id, cutout=c is not None), v, w)
                for (r, _, c), v, w in zip(loaded, vectors, words, strict=True)
            ]
        )


def lowest_cpu_priority() -> None:
    """For the threads that decode ahead of the model in bulk work: they take the cores only when the model's
    threads (and searches) leave them idle. A model run spread over all cores waits at every step for its
    slowest thread, so a decoder that preempts one of them stalls them all; at the lowest priority the decoders
    fill the gaps instead (measured in bench/ingest.py). Linux sets this per thread; elsewhere it is skipped."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
