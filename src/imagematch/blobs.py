"""Originals and thumbnails on disk, addressed by image id, written atomically.

A write goes to a temporary file in the same folder, is flushed to disk and renamed into place, so a crash
leaves either the whole file or nothing (at worst a `*.tmp` that `check --repair` removes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from imagematch.media import ACCEPTED_FORMATS

ORIGINALS = "originals"
THUMBNAILS = "thumbnails"
CUTOUTS = "cutouts"
LOST_AND_FOUND = "lost+found"
_EXTENSIONS = frozenset(ACCEPTED_FORMATS.values())


class BlobStore(Protocol):
    """Where the bytes of originals and thumbnails live.

    `original_path`/`thumbnail_path` give a local file when the backend keeps one (so it can be streamed
    from disk); backends without local files return None there and serve the bytes from `read_*`.
    """

    def put_original(self, image_id: str, extension: str, data: bytes) -> None: ...
    def put_thumbnail(self, image_id: str, data: bytes) -> None: ...
    def put_cutout(self, image_id: str, data: bytes) -> None: ...
    def has_original(self, image_id: str) -> bool: ...
    def has_thumbnail(self, image_id: str) -> bool: ...
    def original_path(self, image_id: str) -> Path | None: ...
    def thumbnail_path(self, image_id: str) -> Path | None: ...
    def read_original(self, image_id: str) -> bytes | None: ...
    def read_thumbnail(self, image_id: str) -> bytes | None: ...
    def cutout_path(self, image_id: str) -> Path | None: ...
    def read_cutout(self, image_id: str) -> bytes | None: ...
    def delete(self, image_id: str) -> None: ...
    def delete_derived(self, image_id: str) -> None:
        """Remove the thumbnail and cut-out preview, which can be made again from the original."""

    def quarantine_original(self, image_id: str) -> str:
        """Move an original that has no record out of the way (never delete it); returns where it went."""

    def original_ids(self) -> Iterator[str]: ...
    def thumbnail_ids(self) -> Iterator[str]: ...
    def cutout_ids(self) -> Iterator[str]: ...
    def temporary_files(self) -> list[Path]: ...
    def clear(self) -> None: ...


def _valid_id(image_id: str) -> str:
    """Ids are content hashes; refusing anything else makes path traversal impossible here."""
    if not image_id or not all(ch in "0123456789abcdef-" for ch in image_id) or len(image_id) > 64:
        raise ValueError(f"not an image id: {image_id!r}")
    return image_id


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class LocalBlobStore:
    """Files under `<data_dir>/originals/ab/<id>.<ext>` and `<data_dir>/thumbnails/ab/<id>.jpg`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for kind in (ORIGINALS, THUMBNAILS, CUTOUTS):
            (root / kind).mkdir(parents=True, exist_ok=True)

    def _folder(self, kind: str, image_id: str) -> Path:
        return self.root / kind / _valid_id(image_id)[:2]

    def put_original(self, image_id: str, extension: str, data: bytes) -> None:
        if extension not in _EXTENSIONS:
            raise ValueError(f"unexpected extension {extension!r}")
        path = self._folder(ORIGINALS, image_id) / f"{image_id}.{extension}"
        if path.exists() and path.stat().st_size == len(data):
            return  # content-addressed: the same id means the same bytes
        _write_atomic(path, data)

    def put_thumbnail(self, image_id: str, data: bytes) -> None:
        _write_atomic(self._folder(THUMBNAILS, image_id) / f"{image_id}.jpg", data)

    def put_cutout(self, image_id: str, data: bytes) -> None:
        """A preview of the background-removed image that was embedded, so users can check it."""
        _write_atomic(self._folder(CUTOUTS, image_id) / f"{image_id}.jpg", data)

    def cutout_path(self, image_id: str) -> Path | None:
        path = self._folder(CUTOUTS, image_id) / f"{image_id}.jpg"
        return path if path.is_file() else None

    def read_cutout(self, image_id: str) -> bytes | None:
        path = self.cutout_path(image_id)
        return path.read_bytes() if path else None

    def original_path(self, image_id: str) -> Path | None:
        folder = self._folder(ORIGINALS, image_id)
        for extension in sorted(_EXTENSIONS):
            path = folder / f"{image_id}.{extension}"
            if path.is_file():
                return path
        return None

    def thumbnail_path(self, image_id: str) -> Path | None:
        path = self._folder(THUMBNAILS, image_id) / f"{image_id}.jpg"
        return path if path.is_file() else None

    def has_original(self, image_id: str) -> bool:
        return self.original_path(image_id) is not None

    def has_thumbnail(self, image_id: str) -> bool:
        return self.thumbnail_path(image_id) is not None

    def read_original(self, image_id: str) -> bytes | None:
        path = self.original_path(image_id)
        return path.read_bytes() if path else None

    def read_thumbnail(self, image_id: str) -> bytes | None:
        path = self.thumbnail_path(image_id)
        return path.read_bytes() if path else None

    def delete(self, image_id: str) -> None:
        original = self.original_path(image_id)
        if original:
            original.unlink(missing_ok=True)
        self.delete_derived(image_id)

    def delete_derived(self, image_id: str) -> None:
        for path in (self.thumbnail_path(image_id), self.cutout_path(image_id)):
            if path:
                path.unlink(missing_ok=True)

    def quarantine_original(self, image_id: str) -> str:
        original = self.original_path(image_id)
        if original is None:
            return ""
        folder = self.root / LOST_AND_FOUND
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / original.name
        os.replace(original, target)
        return str(target)

    def _ids(self, kind: str) -> Iterator[str]:
        """The ids of the files of one kind, from directory entries alone (no stat a file: a full pass)."""
        with os.scandir(self.root / kind) as folders:
            for folder in folders:
                if not folder.is_dir():
                    continue
                with os.scandir(folder.path) as entries:
                    for entry in entries:
                        if entry.is_file() and not entry.name.startswith("."):
                            yield entry.name.split(".", 1)[0]

    def original_ids(self) -> Iterator[str]:
        return self._ids(ORIGINALS)

    def thumbnail_ids(self) -> Iterator[str]:
        return self._ids(THUMBNAILS)

    def cutout_ids(self) -> Iterator[str]:
        return self._ids(CUTOUTS)

    def temporary_files(self) -> list[Path]:
        return [p for kind in (ORIGINALS, THUMBNAILS, CUTOUTS) for p in (self.root / kind).glob("*/.*.tmp")]

    def clear(self) -> None:
        for kind in (ORIGINALS, THUMBNAILS, CUTOUTS):
            shutil.rmtree(self.root / kind, ignore_errors=True)
            (self.root / kind).mkdir(parents=True, exist_ok=True)
