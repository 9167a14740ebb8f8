"""Helpers the remote stores (Milvus, Pinecone) share.

Both keep times as numbers, the pHash as a ±1 vector, text under a byte limit, and the library's small
documents (job status can reach a megabyte) split into parts that each fit one row.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from imagematch.fingerprint import PHASH_BITS
from imagematch.records import ImageText

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TRUNCATION_MARK = " […cut: too long for the store]"
LIST_TRUNCATION_MARK = TRUNCATION_MARK.strip()  # the last item of a list that was cut


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch: exact in int64 and in a float64 until the year 2255."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int | float) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def phash_signs(phash: int, dim: int = PHASH_BITS) -> list[float]:
    """The 64 bits as ±1, zero-padded to `dim`: cosine similarity is then exactly 1 - 2·hamming/64."""
    if dim < PHASH_BITS:
        raise ValueError(f"a pHash vector needs at least {PHASH_BITS} dimensions, got {dim}")
    signs = [1.0 if phash >> (PHASH_BITS - 1 - bit) & 1 else -1.0 for bit in range(PHASH_BITS)]
    return signs + [0.0] * (dim - PHASH_BITS)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def json_len(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def json_len_escaped(value: Any) -> int:
    """Bytes of `value` as JSON with every non-ASCII character escaped: the most any server could count."""
    return len(json.dumps(value))


def fit_text(text: str, max_size: int, measure: Callable[[str], int] = utf8_len) -> str:
    """`text` itself when it fits, else its longest prefix that fits followed by TRUNCATION_MARK.

    `measure` is how the store counts (UTF-8 bytes by default); the cut never splits a character.
    """
    if measure(text) <= max_size:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle] + TRUNCATION_MARK) <= max_size:
            low = middle
        else:
            high = middle - 1
    return text[:low] + TRUNCATION_MARK


def image_text_json(text: ImageText, max_size: int, measure: Callable[[str], int] = utf8_len) -> str:
    """The text read in a picture as JSON within `max_size` (as `measure` counts), always whole JSON: the last
    lines go first, then a long correction is cut. Empty while the picture has not been read."""
    lines = text.lines
    while lines and measure(replace(text, lines=lines).to_json()) > max_size:
        lines = lines[: len(lines) * 3 // 4]
    fitted = replace(text, lines=lines)
    correction = fitted.correction
    while correction and measure(fitted.to_json()) > max_size:
        shorter = fit_text(correction, utf8_len(correction) * 3 // 4)
        correction = shorter if len(shorter) < len(correction) else ""
        fitted = replace(fitted, correction=correction)
    return fitted.to_json()


def _shortened(text: str, excess: int, measure: Callable[[str], int]) -> str:
    """`text` at least `excess` shorter (as `measure` counts), ending with TRUNCATION_MARK where that fits."""
    size = measure(text)
    target = size - max(excess, 1)
    mark = measure(TRUNCATION_MARK)
    if target >= mark:
        return fit_text(text, target, measure)
    return TRUNCATION_MARK if size > mark else ""


def _shortened_list(items: list[str], excess: int, measure: Callable[[str], int]) -> list[str]:
    """`items` at least `excess` shorter in all: its last items left out, LIST_TRUNCATION_MARK in their place."""
    kept = list(items)
    saved = 0
    while kept and saved < excess + measure(LIST_TRUNCATION_MARK):
        saved += measure(kept.pop())
    return [*kept, LIST_TRUNCATION_MARK]


def cut_longest(
    strings: dict[str, str | list[str]], excess: int, measure: Callable[[str], int] = utf8_len
) -> list[str]:
    """Cut the longest values (texts, and lists of tags by their size in all) until they are at least `excess`
    shorter in all (as `measure` counts), in place: a text keeps its beginning and ends with TRUNCATION_MARK,
    a list keeps its first items and ends with the item LIST_TRUNCATION_MARK. Returns the keys it cut, none
    when nothing can be cut further. Callers measure the whole again and repeat (escapes count differently)."""

    def size(value: str | list[str]) -> int:
        return measure(value) if isinstance(value, str) else sum(map(measure, value))

    cut: list[str] = []
    for key in sorted(strings, key=lambda k: -size(strings[k])):
        if excess <= 0:
            break
        value = strings[key]
        shortened = (
            _shortened(value, excess, measure) if isinstance(value, str) else _shortened_list(value, excess, measure)
        )
        saved = size(value) - size(shortened)
        if saved > 0:
            strings[key] = shortened
            excess -= saved
            cut.append(key)
    return cut


# Documents: a value is split into parts; a write adds a new version, then removes older versions, so a
# reader always finds one complete version (the newest), whatever it races with.


@dataclass(frozen=True, slots=True)
class DocumentPart:
    key: str
    version: str
    part: int
    parts: int
    value: str


class _Clock:
    """Microseconds that never repeat or go back within this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def tick(self) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 1)
            return self._last


_clock = _Clock()


def new_version() -> str:
    """Sortable as text by write time, unique across hosts."""
    return f"{_clock.tick():016x}-{uuid.uuid4().hex[:8]}"


def split_value(value: str, max_bytes: int, measure: Callable[[Any], int] = json_len) -> list[str]:
    """Pieces of `value`, each at most `max_bytes` when written as a JSON string (escapes counted)."""
    pieces: list[str] = []
    pending = [value]
    while pending:
        piece = pending.pop()
        if measure(piece) <= max_bytes or len(piece) <= 1:
            pieces.append(piece)
            continue
        middle = len(piece) // 2
        pending.extend((piece[middle:], piece[:middle]))
    return pieces or [""]


def newest_complete(parts: Iterable[DocumentPart]) -> dict[str, list[DocumentPart]]:
    """For each key, the parts (in order) of its newest version whose parts are all present."""
    versions: dict[str, dict[str, dict[int, DocumentPart]]] = defaultdict(lambda: defaultdict(dict))
    for part in parts:
        versions[part.key][part.version][part.part] = part
    found: dict[str, list[DocumentPart]] = {}
    for key, by_version in versions.items():
        for version in sorted(by_version, reverse=True):
            pieces = by_version[version]
            expected = next(iter(pieces.values())).parts
            if set(pieces) == set(range(expected)):
                found[key] = [pieces[i] for i in range(expected)]
                break
    return found


def assemble(parts: Iterable[DocumentPart]) -> dict[str, str]:
    """For each key, the value of its newest complete version."""
    return {key: "".join(p.value for p in pieces) for key, pieces in newest_complete(parts).items()}


def superseded(parts: Iterable[DocumentPart], key: str, version: str) -> list[DocumentPart]:
    """Parts of `key` written before `version`: safe to delete once `version` is complete."""
    return [p for p in parts if p.key == key and p.version < version]
