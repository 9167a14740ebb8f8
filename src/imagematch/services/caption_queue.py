"""The caption queue: which images wait for a caption, and what the caption worker (captions.py) writes back.
The queue is the records' caption status in the store, so restarts resume it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from imagematch.records import CaptionStatus, Condition, Filter, ImageRecord, InvalidInput, PageCursor
from imagematch.services.catalog import Catalog
from imagematch.services.embedding import Embedding
from imagematch.services.pairing import Pairing, one_generation
from imagematch.settings import Settings

log = logging.getLogger(__name__)


RETRY_PAGE = 500  # failed captions queued again per store read


class CaptionQueue:
    def __init__(
        self, settings: Settings, pairing: Pairing, embedding: Embedding, catalog: Catalog, *, wanted: bool
    ) -> None:
        self.settings = settings
        self.pairing = pairing
        self.embedding = embedding
        self.catalog = catalog
        self.wanted = wanted  # new images wait for the caption worker
        self.on_pending: Callable[[], None] | None = None  # told when images start waiting for a caption

    def pending(self, limit: int = 20) -> list[ImageRecord]:
        """Images waiting for a caption, oldest first: the queue lives in the store, so restarts resume it."""
        return self.pairing.store.page(limit=limit, newest_first=False, flt=status_filter(CaptionStatus.PENDING))

    def counts(self) -> dict[str, int]:
        return {status.value: self.pairing.store.count(status_filter(status)) for status in CaptionStatus}

    @one_generation
    def apply(self, image_id: str, caption: str) -> ImageRecord | None:
        """Store a generated caption and re-embed the image's words; a user's correction always wins."""
        with self.pairing.write_lock:
            record = self.pairing.store.get(image_id)
            if record is None or record.caption_edited:
                return record
            updated = replace(
                record,
                caption=caption,
                caption_status=CaptionStatus.DONE,
                caption_error="",
                updated_at=datetime.now(UTC),
            )
            with self.pairing.noting([image_id], "put"):
                self.pairing.store.update(updated, self.embedding.words_vectors([updated])[0])
        log.info("captioned %s: %r", image_id, caption[:80])
        return updated

    @one_generation
    def fail(self, image_id: str, reason: str) -> None:
        with self.pairing.write_lock:
            record = self.pairing.store.get(image_id)
            if record is None or record.caption_edited:
                return
            updated = replace(record, caption_status=CaptionStatus.FAILED, caption_error=reason)
            words = self.pairing.store.get_vectors([image_id]).get(image_id, (None, None))[1]
            with self.pairing.noting([image_id], "put"):
                self.pairing.store.update(updated, words)
        log.warning("caption failed for %s: %s", image_id, reason)

    @one_generation
    def retry(self, image_id: str | None = None) -> int:
        """Queue failed captions again (or one image's caption, whatever its state). Returns how many."""
        if not self.wanted:
            raise InvalidInput("captions are off: set MOONDREAM_API_KEY or IMAGEMATCH_MOONDREAM_ENDPOINT")
        queued: set[str] = set()
        with self.pairing.write_lock:
            if image_id is not None:
                self._queue_captions([self.catalog.get(image_id)])
                queued.add(image_id)
            else:
                # One pass after a cursor: each failed image is read once, and one that fails again meanwhile
                # (the worker runs on) is left for the next retry, so this ends.
                after: PageCursor | None = None
                while page := self.pairing.store.page(
                    limit=RETRY_PAGE, newest_first=False, flt=status_filter(CaptionStatus.FAILED), after=after
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
        words = self.pairing.store.get_vectors([r.id for r in records])
        with self.pairing.noting([r.id for r in records], "put"):
            for record in records:
                pending = replace(record, caption_status=CaptionStatus.PENDING, caption_error="", caption_edited=False)
                self.pairing.store.update(pending, words.get(record.id, (None, None))[1])


def status_filter(status: CaptionStatus) -> Filter:
    return Filter((Condition("caption_status", "eq", status.value, builtin=True),))
