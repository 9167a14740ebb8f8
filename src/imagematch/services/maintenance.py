"""Maintenance over the whole library: re-embedding every image with another model into a new generation
(`reindex`) and reading the text in every picture not read yet (`read_texts`). Both resume when interrupted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from imagematch import media
from imagematch.ai.embedder import Embedder
from imagematch.ai.ocr import DETECT_SIDE
from imagematch.blobs import BlobStore
from imagematch.records import Conflict, ImageMatchError, NotSupported
from imagematch.services.carrying import ChangeCarrier
from imagematch.services.catalog import Catalog
from imagematch.services.embedding import Embedding, lowest_cpu_priority
from imagematch.services.pairing import Active, Pairing, one_generation
from imagematch.settings import Settings
from imagematch.store import generations

log = logging.getLogger(__name__)


SWITCH_SETTLES = 2.0  # after a switch, writes that read the old pointer just before it have landed by then


class Maintenance:
    def __init__(
        self,
        settings: Settings,
        pairing: Pairing,
        embedding: Embedding,
        carrier: ChangeCarrier,
        catalog: Catalog,
        blobs: BlobStore,
    ) -> None:
        self.settings = settings
        self.pairing = pairing
        self.embedding = embedding
        self.carrier = carrier
        self.catalog = catalog
        self.blobs = blobs

    @one_generation
    def read_texts(
        self,
        *,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TextReadReport:
        """Read the text in every picture not read yet (`imagematch ocr`, the OCR job). Each picture's text is
        written as soon as it is read, so an interrupted run resumes where it stopped; a correction made
        meanwhile wins."""
        self.pairing.open()
        if self.embedding.load_text_reader() is None:
            raise NotSupported("reading text in pictures is off: set IMAGEMATCH_OCR=auto or on")
        pending = deque(record.id for record in self.catalog.iter_records() if record.ocr.pending)
        report = TextReadReport(total=len(pending))
        active = self.pairing.current()
        if on_progress is not None:
            on_progress(0, report.total)
        with ThreadPoolExecutor(
            self.settings.decode_workers, thread_name_prefix="ocr", initializer=lowest_cpu_priority
        ) as pool:
            running: deque[Future[bool | None]] = deque()
            while pending or running:
                # As many pictures in flight as there are workers: a cancel stops after those.
                while pending and len(running) < self.settings.decode_workers and not (cancel and cancel.is_set()):
                    running.append(pool.submit(self.pairing.run_in, active, self._read_stored, pending.popleft()))
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
        record = self.pairing.store.get(image_id)
        data = self.blobs.read_original(image_id) if record is not None else None
        if record is None or data is None:
            return None
        limit = max(self.settings.max_pixels, record.width * record.height)
        try:
            decoded = media.decode(data, max_pixels=limit, short_side=DETECT_SIDE, long_side=64)
        except ImageMatchError as error:
            log.warning("could not read the text in %s: %s", image_id, error)
            return None
        text = self.embedding.read_text(decoded.image, data, limit, image_id)
        if text.pending:
            return None
        with (
            self.pairing.write_lock,
            self.pairing.store.exclusive(),
        ):  # a correction another process makes meanwhile wins
            current = self.pairing.store.get(image_id)
            if current is None or not current.ocr.pending:
                return bool(current and current.ocr.text)
            updated = replace(current, ocr=text)
            if updated.words != current.words:
                words = self.embedding.words_vectors([updated])[0]
            else:
                words = self.pairing.store.get_vectors([image_id]).get(image_id, (None, None))[1]
            with self.pairing.noting([image_id], "put"):
                self.pairing.store.update(updated, words)
        return bool(text.text)

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
        (`Pairing.follow`). Interrupted, it resumes where it stopped; until the switch the old library is untouched.
        `embedder` and `model_spec`: another model than the configured one (a reindex started from the web UI).
        """
        pinned = Active(embedder, self.pairing.current().store) if embedder is not None else None
        with self.pairing.pinned(pinned) as active:
            embedder, live = active.embedder, active.store
            live.put_document(generations.MODEL_SPECS, embedder.model_id, model_spec or self.pairing.model_spec)
            staging = live.start_rebuild(embedder.model_id, embedder.dim)
            target = Active(embedder, staging)
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
                self.settings.decode_workers, thread_name_prefix="reindex", initializer=lowest_cpu_priority
            ) as pool:
                for start in range(0, len(todo), batch_size):
                    chunk = todo[start : start + batch_size]
                    records = live.get_many(chunk)
                    wanted = [records[i] for i in chunk if i in records]
                    loaded = list(pool.map(lambda r: self.pairing.run_in(target, self.embedding.reload, r), wanted))
                    self.pairing.run_in(target, self.embedding.embed_into, staging, [r for r in loaded if r])
                    done.update(chunk)
                    if on_progress:
                        on_progress(len(done), total)
            self.carrier.carry_changes(target)  # what the servers wrote while this ran
        if live.generations().staging != staging.generation_name:
            raise Conflict("another reindex replaced this one's staging generation: this one stops, switching nothing")
        live.at(live.generation_name).finish_rebuild()  # `live` itself stays on the old one for its readers
        with self.pairing.write_lock:
            self.pairing.active = target
        self.pairing.opened = False
        self.pairing.open()
        time.sleep(SWITCH_SETTLES)  # writes that read the old pointer just before the switch land meanwhile
        self.carrier.carry_changes(target)
        staging.maintain()
        log.info("reindexed %d images with %s", total, embedder.model_id)
        return total


@dataclass(slots=True)
class TextReadReport:
    """What `read_texts` did: pictures to read, read so far, found holding text, not readable."""

    total: int
    done: int = 0
    with_text: int = 0
    failed: int = 0
