"""Browsing by key, written once for every backend: a page is the records after a cursor in the order they were
added, found by reading the (created_at, id) keys of a window of time next to the cursor.

A backend answers "the keys of the matching records added between two times" with the bounds pushed into its
scan (`KeyedPages._key_reader`); `keyset_page` asks for a window next to the cursor and widens it until it
holds a page, so a page reads about a page of keys at any depth.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from imagematch.records import Filter, ImageRecord, PageCursor

KeyReader = Callable[[int | None, int | None], pa.Table]  # (low, high) micros, inclusive -> columns created, id
KEY_SCHEMA = pa.schema([pa.field("created", pa.int64()), pa.field("id", pa.string())])
_FIRST_SPAN = 3600 * 10**6  # one hour of uploads, in microseconds
_WIDEN = 8
_OPEN_SPAN = 3600 * 10**6 * 24 * 366 * 1000  # a window of a thousand years is open-ended


class KeyWindow:
    """The span of time a page of keys was last found in: the next page starts with about that span."""

    def __init__(self) -> None:
        self.span = _FIRST_SPAN


def keyset_page(
    read: KeyReader, after: PageCursor | None, limit: int, newest_first: bool, window: KeyWindow
) -> list[str]:
    """The ids of the `limit` records after `after` (None: from the start) in page order."""
    if limit <= 0:
        return []
    if after is None and not newest_first:  # where the oldest records are is not known: one read of every key
        return _first(read(None, None), None, limit, newest_first)
    anchor = after.created_micros if after is not None else time.time_ns() // 1000
    span = min(window.span, _OPEN_SPAN)
    while True:
        open_ended = span >= _OPEN_SPAN
        if newest_first:
            low, high = (None if open_ended else anchor - span), (after.created_micros if after else None)
        else:
            low, high = anchor, (None if open_ended else anchor + span)
        keys = read(low, high)
        found = _first(keys, after, limit, newest_first)
        if len(found) >= limit or open_ended:
            # Learn the span for the next page: widened as it had to be, narrowed when it held far too much.
            window.span = max(1, span // 2) if len(found) >= limit and keys.num_rows > 8 * limit else span
            return found
        span = min(span * _WIDEN, _OPEN_SPAN)


def _first(keys: pa.Table, after: PageCursor | None, limit: int, newest_first: bool) -> list[str]:
    if after is not None and keys.num_rows:
        created, ids = keys.column("created"), keys.column("id")
        beyond = pc.less(created, after.created_micros) if newest_first else pc.greater(created, after.created_micros)
        tied = pc.and_(pc.equal(created, after.created_micros), pc.greater(ids, after.id))
        keys = keys.filter(pc.or_(beyond, tied))
    if keys.num_rows == 0:
        return []
    order = [("created", "descending" if newest_first else "ascending"), ("id", "ascending")]
    if keys.num_rows > limit:
        keys = pc.take(keys, pc.select_k_unstable(keys, limit, sort_keys=order))
    return [str(i) for i in keys.sort_by(order).column("id").to_pylist()]


def offset_page(keys: pa.Table, offset: int, limit: int, newest_first: bool) -> list[str]:
    """Paging by number: the ids `offset` to `offset + limit` of every matching key in page order."""
    if offset >= keys.num_rows:
        return []
    order = [("created", "descending" if newest_first else "ascending"), ("id", "ascending")]
    wanted = min(keys.num_rows, offset + limit)
    top = pc.take(keys, pc.select_k_unstable(keys, wanted, sort_keys=order)).sort_by(order)
    return [str(i) for i in top.column("id").to_pylist()[offset:wanted]]


class KeyedPages(ABC):
    """`page()` of the store protocol for a backend that reads keys (`_key_reader`) and records (`get_many`)."""

    _window: KeyWindow

    @abstractmethod
    def _key_reader(self, flt: Filter | None) -> KeyReader | None:
        """How to read the keys of the records matching `flt` in a window of time; None while not open."""

    @abstractmethod
    def get_many(self, ids: Sequence[str]) -> dict[str, ImageRecord]: ...

    def page(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        newest_first: bool = True,
        flt: Filter | None = None,
        after: PageCursor | None = None,
    ) -> list[ImageRecord]:
        read = self._key_reader(flt)
        if read is None or limit <= 0:
            return []
        if after is not None or offset == 0:
            page = keyset_page(read, after, limit, newest_first, self._window)
        else:
            page = offset_page(read(None, None), offset, limit, newest_first)
        found = self.get_many(page)
        return [found[i] for i in page if i in found]
