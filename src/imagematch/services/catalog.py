"""The catalog: reading, editing and deleting stored images and their files, and every full pass over the
records. Each write takes the store's write lock and notes its change for a rebuild that may be running.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from imagematch import media
from imagematch.blobs import BlobStore
from imagematch.fingerprint import ColourLayout, colour_layout, could_be_image_id
from imagematch.records import (
    CaptionStatus,
    Conflict,
    Filter,
    ImageMatchError,
    ImageRecord,
    InvalidInput,
    NotFound,
    PageCursor,
    RecordPatch,
)
from imagematch.services.embedding import Embedding
from imagematch.services.pairing import Pairing, one_generation
from imagematch.settings import Settings
from imagematch.store import tuned
from imagematch.validation import clean_description, clean_metadata, clean_text

log = logging.getLogger(__name__)


RESET_PHRASE = "DELETE ALL"
MAX_TEXT_IN_PICTURE = 20_000  # characters of a correction of the text read in a picture: a page of small print


class Catalog:
    def __init__(self, settings: Settings, pairing: Pairing, embedding: Embedding, blobs: BlobStore) -> None:
        self.settings = settings
        self.pairing = pairing
        self.embedding = embedding
        self.blobs = blobs

    def get(self, image_id: str) -> ImageRecord:
        record = self.pairing.store.get(image_id) if could_be_image_id(image_id) else None
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
        return self.pairing.store.page(offset=offset, limit=limit, newest_first=newest_first, flt=flt, after=after)

    def count(self, flt: Filter | None = None) -> int:
        return self.pairing.store.count(flt)

    @one_generation
    def update(self, image_id: str, patch: RecordPatch) -> ImageRecord:
        """Apply a user's edit; the words vector follows the new description, caption or text in the picture."""
        self.pairing.open()
        with self.pairing.write_lock:
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
                words = self.embedding.words_vectors([updated])[0]
            else:
                words = self.pairing.store.get_vectors([image_id]).get(image_id, (None, None))[1]
            with self.pairing.noting([image_id], "put"):
                self.pairing.store.update(updated, words)
        log.info("updated %s (%s)", image_id, ", ".join(sorted(changes)))
        return updated

    @one_generation
    def delete(self, image_id: str) -> ImageRecord:
        """Record first, then files: a crash in between leaves an orphan file, not a broken record."""
        with self.pairing.write_lock:
            record = self.get(image_id)
            with self.pairing.noting([image_id], "delete"):
                self.pairing.store.delete([image_id])
            self.blobs.delete(image_id)
        log.info("deleted %s %r", image_id, record.filename)
        return record

    @one_generation
    def reset(self, confirm: str) -> int:
        """Delete every record, stored file and search tuning, only with the exact confirmation phrase."""
        if confirm != RESET_PHRASE:
            raise InvalidInput(f"to delete everything, confirm with the exact phrase {RESET_PHRASE!r}")
        if self.pairing.store.generations().staging:
            raise Conflict("a reindex is running: reset the library when it has finished")
        with self.pairing.write_lock:
            count = self.pairing.store.count()
            tuned.forget(self.pairing.store)  # learned from the images about to go: never left on an empty library
            self.pairing.store.reset()
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

    def iter_records(self, page: int = 500, flt: Filter | None = None) -> Iterator[ImageRecord]:
        """Every (matching) record, oldest first, a page at a time after the last one seen: each page costs
        about the same, so a full pass is linear, and records added meanwhile are reached, never repeated."""
        after: PageCursor | None = None
        while True:
            records = self.pairing.store.page(limit=page, newest_first=False, flt=flt, after=after)
            yield from records
            if len(records) < page:
                return
            after = PageCursor.of(records[-1])

    def stored_layout(self, image_id: str) -> ColourLayout | None:
        """A stored image's colour layout, from its thumbnail (read only when a pHash match needs it, so nothing
        new is stored); from the original when the thumbnail is missing or damaged, thumbnailed as at upload.
        None when neither can be read: the pHash then decides alone."""
        thumbnail = self.blobs.read_thumbnail(image_id)
        if thumbnail is not None:
            try:
                return colour_layout(thumbnail)
            except (OSError, ValueError) as error:  # a damaged file: Pillow's UnidentifiedImageError is an OSError
                log.warning("the thumbnail of %s does not decode (%s): its original is read instead", image_id, error)
        original = self.blobs.read_original(image_id)
        if original is None:
            log.warning("no readable thumbnail nor original for %s: no colour check", image_id)
            return None
        try:
            decoded = media.decode(original, max_pixels=self.settings.max_pixels, **self.embedding.decode_sides())
        except ImageMatchError as error:
            log.warning("the original of %s does not decode (%s): no colour check", image_id, error)
            return None
        return colour_layout(media.make_thumbnail(decoded.image))
