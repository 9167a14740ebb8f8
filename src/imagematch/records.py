"""Plain data that crosses module boundaries, and the errors the library raises.

Nothing here knows about HTTP, storage engines or models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
# A list is of strings only (tags): every store can hold it and test membership in it.
MetadataValue = str | int | float | bool | list[str]
Metadata = dict[str, MetadataValue]

MAX_METADATA_KEYS = 100
MAX_METADATA_KEY_LENGTH = 128
MAX_METADATA_VALUE_LENGTH = 2000  # characters of a text value, or of all the strings of a list together
MAX_METADATA_LIST_ITEMS = 100
MAX_DESCRIPTION_LENGTH = 5000
MAX_FILENAME_LENGTH = 255
MAX_QUERY_TERMS = 16
# Weights are relative, so a few orders of magnitude are all a query needs; far larger ones overflow the float32
# sum of the terms' vectors (a weight of 1e300 made the query vector NaN and the search silently empty).
MAX_WEIGHT = 1000

Region = tuple[float, float, float, float]  # left, top, right, bottom as fractions of width and height


class CaptionStatus(StrEnum):
    NONE = "none"  # no captioner configured when the image arrived
    PENDING = "pending"  # waiting for the caption worker
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """Everything we know about one stored image, except its vectors."""

    id: str
    phash: str  # 16 hex digits, the 64-bit perceptual hash
    file_hash: str  # sha256 of the original bytes
    filename: str
    size: int  # bytes of the original
    width: int
    height: int
    format: str  # Pillow's format name: JPEG, PNG, WEBP, ...
    created_at: datetime
    updated_at: datetime
    model_id: str
    description: str = ""
    caption: str = ""
    caption_status: CaptionStatus = CaptionStatus.NONE
    caption_error: str = ""
    caption_edited: bool = False  # the user corrected the caption; the worker leaves it alone
    metadata: Metadata = field(default_factory=dict)
    taken_at: datetime | None = None
    camera: str = ""
    lens: str = ""
    gps_lat: float | None = None
    gps_lon: float | None = None
    cutout: bool = False  # the embedding was made from the background-removed cut-out

    @property
    def words(self) -> str:
        """The image's own words, in the order they count: the user's description first."""
        return "\n".join(part for part in (self.description.strip(), self.caption.strip()) if part)


# The columns (or fields) a store keeps for a record, in the dataclass order.
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ImageRecord))


@dataclass(frozen=True, slots=True, order=True)
class PageCursor:
    """Where a page of records ends: the time the last record shown was added (microseconds since the epoch)
    and its id. The next page starts after it in the page's order, whatever was added or deleted meanwhile, and
    costs the same however deep it is (no offset to skip)."""

    created_micros: int
    id: str

    @classmethod
    def of(cls, record: ImageRecord) -> PageCursor:
        return cls(_micros(record.created_at), record.id)

    def encode(self) -> str:
        """Text for a link or an API response: `<micros>.<id>`."""
        return f"{self.created_micros}.{self.id}"

    @classmethod
    def decode(cls, text: str) -> PageCursor:
        micros, dot, image_id = text.partition(".")
        if not dot or not image_id or not re.fullmatch(r"-?[0-9]{1,20}", micros) or len(text) > 200:
            raise InvalidInput(f"not a page cursor: {text[:60]!r} (use the `next` value of the previous page)")
        return cls(int(micros), image_id)

    def follows(self, created_micros: int, image_id: str, newest_first: bool) -> bool:
        """Whether a record with this key comes after the cursor in the page order (time, then id ascending)."""
        if created_micros == self.created_micros:
            return image_id > self.id
        return created_micros < self.created_micros if newest_first else created_micros > self.created_micros


def _micros(value: datetime) -> int:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoredImage:
    """A record with its vectors, as written to and read from a store."""

    record: ImageRecord
    vector: Vector  # image embedding, L2-normalised
    words_vector: Vector | None = None  # text embedding of record.words, None when there are no words


@dataclass(frozen=True, slots=True)
class Match:
    """Why a result matched: the parts of its score."""

    image: float  # cosine similarity of the query with the image vector
    words: float | None = None  # of the query's words with the image's own words; None where not compared
    words_added: float = 0.0  # what the image's words added to its score (imagematch.fusion)
    keywords: tuple[str, ...] = ()  # hybrid search: the query's words found in the image's own text
    rank_fusion: float | None = None  # hybrid search: the reciprocal rank fusion value results are ordered by


@dataclass(frozen=True, slots=True)
class Hit:
    record: ImageRecord
    score: float  # cosine similarity, or with words the fused score on the same scale; higher is better
    why: Match | None = None  # set by the Library's search; stores leave it out


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A search candidate before its record is read: what fusing two rankings needs."""

    id: str
    score: float
    vectors: tuple[Vector, Vector | None] | None = None  # image and words vector, where the store returns them


@dataclass(frozen=True, slots=True)
class TextTerm:
    text: str
    weight: float = 1.0
    context: str = ""  # extra words (a query image's caption) appended only where they fit after `text`


@dataclass(frozen=True, slots=True)
class ImageTerm:
    """An image given with the query (not stored); with a region, only that rectangle of it counts."""

    data: bytes
    weight: float = 1.0
    filename: str = "query"
    region: Region | None = None


@dataclass(frozen=True, slots=True)
class StoredImageTerm:
    """An image already in the library, referred to by id: its stored vector is used, or with a region, the
    embedding of that rectangle of its original (the stored vector describes the whole image)."""

    image_id: str
    weight: float = 1.0
    region: Region | None = None


QueryTerm = TextTerm | ImageTerm | StoredImageTerm

FilterOp = Literal["eq", "ne", "in", "nin", "gt", "gte", "lt", "lte"]
FilterScalar = str | int | float | bool | datetime
FILTER_OPS: tuple[FilterOp, ...] = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte")
# Record fields a filter may name directly; anything else is a custom metadata key.
FILTER_FIELDS = (
    "format",
    "filename",
    "width",
    "height",
    "size",
    "created_at",
    "taken_at",
    "camera",
    "lens",
    "caption_status",
    "cutout",
)
# Built-in text fields a filter matches by a part, ignoring case: EXIF names are long and oddly cased, so
# "canon" finds "Canon EOS R5" (see `name_words`).
PARTIAL_FIELDS = ("camera", "lens")
_WORD = re.compile(r"\w+")

T = TypeVar("T")


def name_words(text: str) -> tuple[str, ...]:
    """The lower-cased words of a camera or lens filter. A record matches when each of them is part of its
    name: "eos r5" and "EOS" match "Canon EOS R5", "r6" does not."""
    return tuple(_WORD.findall(text.lower()))


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on a record: a built-in field (FILTER_FIELDS) or a custom metadata key.

    On a list value (tags), `eq` and `in` hold when the list has one of the values as a member, `ne` and
    `nin` when it has none of them. `ne` and `nin` never hold for a record without the key.
    """

    key: str
    op: FilterOp
    value: FilterScalar | tuple[FilterScalar, ...]
    builtin: bool = False


@dataclass(frozen=True, slots=True)
class Filter:
    """Every item of `all_of` holds and, when `any_of` is not empty, at least one of its items; items are
    conditions or filters, so `$and` and `$or` nest."""

    all_of: tuple[Condition | Filter, ...] = ()
    any_of: tuple[Condition | Filter, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.all_of or self.any_of)

    def and_(self, other: Filter | None) -> Filter:
        if not other:
            return self
        if not self:
            return other
        return Filter((*self._conjuncts(), *other._conjuncts()))

    def _conjuncts(self) -> tuple[Condition | Filter, ...]:
        return self.all_of if not self.any_of else (self,)

    def conditions(self) -> list[Condition]:
        """Every condition in the tree, at any depth."""
        found: list[Condition] = []
        for item in (*self.all_of, *self.any_of):
            found.extend(item.conditions() if isinstance(item, Filter) else [item])
        return found

    def fold(
        self, condition: Callable[[Condition], T], every: Callable[[list[T]], T], some: Callable[[list[T]], T]
    ) -> T:
        """The filter in a store's language: `condition` renders one test, `every` and `some` join tests that
        must all hold, or one of which must (each gets a non-empty list). Only for a filter that is not empty."""
        if not self:
            raise ValueError("an empty filter has no test to render")

        def render(item: Condition | Filter) -> T:
            return item.fold(condition, every, some) if isinstance(item, Filter) else condition(item)

        parts = [render(item) for item in self.all_of]
        if self.any_of:
            alternatives = [render(item) for item in self.any_of]
            parts.append(alternatives[0] if len(alternatives) == 1 else some(alternatives))
        return parts[0] if len(parts) == 1 else every(parts)


def check_region(region: object) -> Region:
    """A region as four finite fractions with 0 <= left < right <= 1 and 0 <= top < bottom <= 1."""
    if not isinstance(region, tuple | list) or len(region) != 4:
        raise InvalidQuery("a region is four numbers: left, top, right, bottom, as fractions of the image")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in region):
        raise InvalidQuery("a region's numbers must be finite fractions between 0 and 1")
    left, top, right, bottom = (float(v) for v in region)
    if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
        raise InvalidQuery("a region must lie inside the image: 0 <= left < right <= 1 and 0 <= top < bottom <= 1")
    return left, top, right, bottom


@dataclass(frozen=True, slots=True)
class Query:
    """Weighted terms, plus how to rank: `hybrid` fuses a keyword ranking of the text terms' words with the vector
    ranking; `min_score` drops matches below that score, so a search can find nothing; `cutoff` "auto" drops
    those below the query's own cut-off (imagematch.relevance), None means the library's setting."""

    terms: tuple[QueryTerm, ...]
    k: int = 10
    filter: Filter | None = None
    hybrid: bool = False
    min_score: float | None = None
    cutoff: str | None = None

    def __post_init__(self) -> None:
        if not self.terms:
            raise InvalidQuery("a search needs text, an image or an image id")
        if len(self.terms) > MAX_QUERY_TERMS:
            raise InvalidQuery(f"a query has at most {MAX_QUERY_TERMS} terms")
        for term in self.terms:
            if not isinstance(term.weight, int | float) or not math.isfinite(term.weight):
                raise InvalidQuery("weights must be finite numbers")
            if abs(term.weight) > MAX_WEIGHT:
                raise InvalidQuery(f"weights must be between -{MAX_WEIGHT:,} and {MAX_WEIGHT:,}, not {term.weight:g}")
            if isinstance(term, TextTerm) and not term.text.strip():
                raise InvalidQuery("text must not be empty")
            if not isinstance(term, TextTerm) and term.region is not None:
                check_region(term.region)
        if all(term.weight == 0 for term in self.terms):
            raise InvalidQuery("at least one weight must be non-zero")
        if self.min_score is not None and not (math.isfinite(self.min_score) and -1 <= self.min_score <= 1):
            raise InvalidQuery("min_score must be a number between -1 and 1")
        if self.cutoff is not None and self.cutoff not in ("off", "auto"):
            raise InvalidQuery(f"cutoff must be off or auto, not {self.cutoff!r}")


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[Hit]
    truncated: bool = False  # some query text was cut at the model's context length
    took_ms: float = 0.0
    encode_ms: float = 0.0  # of took_ms, the time the model took to turn the query into a vector


IngestStatus = Literal["added", "duplicate", "failed"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    status: IngestStatus
    filename: str
    record: ImageRecord | None = None
    existing: ImageRecord | None = None  # for duplicates: the image already stored
    distance: int | None = None  # for duplicates: pHash Hamming distance to the existing image
    reason: str = ""  # for failures and duplicates: why, in words

    @property
    def image_id(self) -> str | None:
        if self.record is not None:
            return self.record.id
        if self.existing is not None:
            return self.existing.id
        return None


@dataclass(frozen=True, slots=True)
class RecordPatch:
    """A user's edit of one record. None means leave unchanged."""

    description: str | None = None
    metadata: Metadata | None = None  # replaces the whole metadata mapping
    caption: str | None = None  # a user's correction


# Errors. The web layer maps each class to an HTTP status; the CLI prints the message.


class ImageMatchError(Exception):
    """Base of every error we raise on purpose; the message is meant for users."""


class InvalidImage(ImageMatchError):
    """An image in an accepted format whose data cannot be used (empty, truncated, corrupt)."""


class UnsupportedFormat(InvalidImage):
    """Not a kind of file we accept: one no decoder recognises (text, SVG, PDF) or a format we do not take (ICO)."""


class TooLarge(ImageMatchError):
    """The upload or the image exceeds a configured limit."""


class InvalidInput(ImageMatchError):
    """A description, metadata or another field is not acceptable."""


class InvalidQuery(InvalidInput):
    """The search request cannot be answered as asked."""


class NotSupported(InvalidQuery):
    """The configured store cannot answer this kind of search (for example, keyword search on an old collection)."""


class NotFound(ImageMatchError):
    def __init__(self, image_id: str, what: str = "image") -> None:
        super().__init__(f"no {what} with id {image_id!r}")
        self.image_id = image_id


class Conflict(ImageMatchError):
    """The request clashes with the current state (for example, a batch job is already running)."""


class StoreMismatch(ImageMatchError):
    """The store was built with another model; its vectors cannot be compared with ours."""


class ModelUnavailable(ImageMatchError):
    """The configured model cannot be loaded (not cached, no network, bad path)."""
