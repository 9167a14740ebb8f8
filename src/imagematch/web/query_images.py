"""Query images uploaded on the search page, kept for a while so that a search can be repeated and edited.

A search by an uploaded image redirects to a linkable GET page; that page names the image by a random token
instead of carrying its bytes. The images live in memory only, bounded in count, bytes and age, so a flood of
uploads costs at most the byte budget; an evicted token just asks the user to choose the image again.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass(frozen=True, slots=True)
class KeptImage:
    data: bytes
    preview: bytes  # a JPEG thumbnail, shown beside the search form
    filename: str
    kept_at: float

    @property
    def size(self) -> int:
        return len(self.data) + len(self.preview)


class QueryImageStore:
    """A small least-recently-used store of query images, safe to share between request threads."""

    def __init__(self, max_bytes: int, max_images: int = 32, max_age_s: float = 3600.0) -> None:
        self.max_bytes = max_bytes
        self.max_images = max_images
        self.max_age_s = max_age_s
        self._images: OrderedDict[str, KeptImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, data: bytes, preview: bytes, filename: str) -> str:
        token = secrets.token_urlsafe(16)
        image = KeptImage(data, preview, filename, time.monotonic())
        with self._lock:
            self._images[token] = image
            self._bytes += image.size
            while len(self._images) > 1 and (len(self._images) > self.max_images or self._bytes > self.max_bytes):
                self._drop(next(iter(self._images)))
        return token

    def get(self, token: str) -> KeptImage | None:
        if not _TOKEN_SHAPE.fullmatch(token):
            return None
        with self._lock:
            image = self._images.get(token)
            if image is None:
                return None
            if time.monotonic() - image.kept_at > self.max_age_s:
                self._drop(token)
                return None
            self._images.move_to_end(token)
            return image

    def _drop(self, token: str) -> None:
        self._bytes -= self._images.pop(token).size
