"""The field table: every backend's codec reads a row written before a field existed with the field's default."""

from __future__ import annotations

from dataclasses import MISSING, fields, replace
from datetime import UTC, datetime

import pytest

from imagematch.records import CaptionStatus, ImageRecord, ImageText, TextLine
from imagematch.store import lancedb, milvus, pinecone
from imagematch.store.fields import FIELDS, Codec, Field
from tests.store.test_conformance import item

CODECS = {"lancedb": lancedb.CODEC, "milvus": milvus.CODEC, "pinecone": pinecone.CODEC}
FULL = replace(
    item(7).record,
    description="a ferry",
    caption="a boat at sea",
    caption_status=CaptionStatus.DONE,
    caption_edited=True,
    metadata={"album": "Zanzibar", "tags": ["sea", "boat"], "rating": 4},
    taken_at=datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC),
    camera="Canon EOS R5",
    lens="RF 24-70",
    gps_lat=-6.16,
    gps_lon=39.19,
    cutout=True,
    ocr=ImageText("reader", (TextLine("FERRY", (0.1, 0.2, 0.5, 0.3), 0.9),)),
)
DEFAULTS = {
    f.name: f.default_factory() if f.default is MISSING else f.default  # type: ignore[operator]
    for f in fields(ImageRecord)
    if f.default is not MISSING or f.default_factory is not MISSING
}
OPTIONAL = [f for f in FIELDS if f.name in DEFAULTS or f.name == "updated_at"]


@pytest.mark.parametrize("engine", sorted(CODECS))
def test_every_field_round_trips(engine: str) -> None:
    codec: Codec = CODECS[engine]
    assert codec.record(codec.row(FULL)) == FULL


@pytest.mark.parametrize("engine", sorted(CODECS))
@pytest.mark.parametrize("field", OPTIONAL, ids=[f.name for f in OPTIONAL])
def test_a_row_from_before_a_field_reads_its_default(engine: str, field: Field) -> None:
    codec: Codec = CODECS[engine]
    name = field.name
    row = {k: v for k, v in codec.row(FULL).items() if k != name}
    default = FULL.created_at if name == "updated_at" else DEFAULTS[name]
    assert getattr(codec.record(row), name) == default
