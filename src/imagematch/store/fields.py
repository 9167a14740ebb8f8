"""The fields a store keeps for a record, listed once, and the one record ↔ row codec every backend uses.

Each field has a kind; a backend says how it stores each kind (a `Codec`, and its own mapping of kinds to
engine types: an Arrow type, a Milvus DataType, a Pinecone metadata rule), never field by field. Adding a
field to `ImageRecord` means one line in `FIELDS` (plus a schema step where an engine needs one): a row
written before the field existed reads back with the field's default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from imagematch.fingerprint import from_signed, phash_from_hex, phash_hex, to_signed
from imagematch.records import RECORD_FIELDS, CaptionStatus, ImageRecord, ImageText
from imagematch.store.shared import from_micros, to_micros


class Kind(StrEnum):
    ID = "id"  # the record's key
    DIGEST = "digest"  # text that identifies (the sha256 of the original): stored whole, never cut
    PHASH = "phash"  # the 64-bit perceptual hash; the record holds it as 16 hex digits
    TEXT = "text"  # may be cut to the field's limit, with a mark
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TIME = "time"  # an aware datetime
    METADATA = "metadata"  # the custom metadata: a JSON object of MetadataValue
    TEXT_READ = "text_read"  # ImageText as one JSON text; "" (or nothing) while the picture has not been read


# What a row written before a field existed (or a null) reads as, by kind.
_DEFAULTS: dict[Kind, Any] = {
    Kind.ID: "",
    Kind.DIGEST: "",
    Kind.TEXT: "",
    Kind.INT: 0,
    Kind.BOOL: False,
    Kind.FLOAT: None,
    Kind.TIME: None,
}
_REQUIRED = (Kind.ID, Kind.DIGEST, Kind.PHASH)  # never null in a row


@dataclass(frozen=True, slots=True)
class Field:
    """One stored field of ImageRecord.

    `max_bytes` is the most UTF-8 bytes of it a store with fixed text widths keeps (Milvus's max_length); 0 for
    none. `bits` is the integer width where an engine has several (LanceDB). `default` gives the value of a row
    without it from the fields read before it; `parse` turns the stored text into the record's type.
    """

    name: str
    kind: Kind
    max_bytes: int = 0
    bits: int = 64
    nullable: bool = False
    default: Callable[[Mapping[str, Any]], Any] | None = None
    parse: Callable[[Any], Any] | None = None

    @property
    def required(self) -> bool:
        return self.kind in _REQUIRED

    def missing(self, read: Mapping[str, Any]) -> Any:
        if self.default is not None:
            return self.default(read)
        if self.kind == Kind.METADATA:
            return {}
        if self.kind == Kind.TEXT_READ:
            return ImageText()
        return _DEFAULTS.get(self.kind)


def _caption_status(value: Any) -> CaptionStatus:
    return CaptionStatus(value or "none")


FIELDS: tuple[Field, ...] = (
    Field("id", Kind.ID, max_bytes=1024),
    Field("phash", Kind.PHASH),
    Field("file_hash", Kind.DIGEST, max_bytes=128),
    Field("filename", Kind.TEXT, max_bytes=4096),
    Field("size", Kind.INT),
    Field("width", Kind.INT, bits=32),
    Field("height", Kind.INT, bits=32),
    Field("format", Kind.TEXT, max_bytes=64),
    Field("created_at", Kind.TIME, default=lambda _read: datetime.now(UTC)),
    Field("updated_at", Kind.TIME, default=lambda read: read["created_at"]),
    Field("model_id", Kind.TEXT, max_bytes=1024),
    Field("description", Kind.TEXT, max_bytes=65535),
    Field("caption", Kind.TEXT, max_bytes=65535),
    Field("caption_status", Kind.TEXT, max_bytes=32, parse=_caption_status, default=lambda _read: CaptionStatus.NONE),
    Field("caption_error", Kind.TEXT, max_bytes=65535),
    Field("caption_edited", Kind.BOOL),
    Field("metadata", Kind.METADATA),
    Field("taken_at", Kind.TIME, nullable=True),
    Field("camera", Kind.TEXT, max_bytes=4096),
    Field("lens", Kind.TEXT, max_bytes=4096),
    Field("gps_lat", Kind.FLOAT, nullable=True),
    Field("gps_lon", Kind.FLOAT, nullable=True),
    Field("cutout", Kind.BOOL),
    Field("ocr", Kind.TEXT_READ, max_bytes=65535),
)
FIELD = {field.name: field for field in FIELDS}
if tuple(FIELD) != RECORD_FIELDS:
    raise RuntimeError("store/fields.py lists the fields of ImageRecord, in its order: add the new one there")

Convert = Callable[[Field, Any], Any]


def _same(_field: Field, value: Any) -> Any:
    return value


# What every backend reads the same way, after its own conversion.
_PLAIN: dict[Kind, Callable[[Any], Any]] = {
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.BOOL: bool,
    Kind.TEXT: str,
    Kind.TEXT_READ: ImageText.from_json,
}


@dataclass(frozen=True, slots=True)
class Codec:
    """How one engine stores each kind: `write` turns a record's value into the stored one, `read` the stored one
    back (a kind not named is stored as it is). Null is never converted: it reads as the field's default."""

    write: Mapping[Kind, Convert]
    read: Mapping[Kind, Convert]

    def row(self, record: ImageRecord, fields: Iterable[Field] = FIELDS) -> dict[str, Any]:
        """The record's `fields` (all by default; fewer for a table an older version made) as stored values."""
        row: dict[str, Any] = {}
        for field in fields:
            value = getattr(record, field.name)
            if value is not None and field.kind == Kind.TEXT:
                value = str(value)  # the caption status is an enum of texts
            row[field.name] = None if value is None else self.write.get(field.kind, _same)(field, value)
        return row

    def record(self, row: Mapping[str, Any]) -> ImageRecord:
        """The record a row holds; a field it lacks (written before the field existed) or holds as null reads
        as the field's default."""
        values: dict[str, Any] = {}
        for field in FIELDS:
            stored = row.get(field.name)
            if stored is None:
                values[field.name] = field.missing(values)
                continue
            value = _PLAIN.get(field.kind, lambda v: v)(self.read.get(field.kind, _same)(field, stored))
            values[field.name] = field.parse(value) if field.parse is not None else value
        return ImageRecord(**values)


# Conversions more than one engine uses.


def phash_to_signed(_field: Field, value: str) -> int:
    """The hash as a signed int64, the widest integer the engines keep."""
    return to_signed(phash_from_hex(value))


def phash_from_signed(_field: Field, value: Any) -> str:
    return phash_hex(from_signed(int(value)))


def time_to_micros(_field: Field, value: datetime) -> int:
    return to_micros(value)


def time_from_micros(_field: Field, value: Any) -> datetime:
    return from_micros(value)
