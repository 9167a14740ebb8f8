"""LanceDB tables: the file format new libraries are written in, and libraries made by earlier versions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lancedb
import pyarrow as pa

from imagematch.records import ImageText, TextLine
from imagematch.store.lancedb import FILE_FORMAT, SEARCH_TEXT, LanceStore, images_schema
from tests.store.test_conformance import DIM, MODEL, item, unit


def test_a_library_without_search_text_gets_it_on_open(tmp_path: Path) -> None:
    path = tmp_path / "lancedb"
    first = LanceStore(path)
    first.open(MODEL, DIM)
    first.upsert([item(1, caption="an invoice"), item(2, description="a dog", metadata={"album": "Zanzibar"})])
    old_schema = pa.schema([f for f in images_schema(DIM) if f.name not in (SEARCH_TEXT, "ocr")])
    rows = first._table.to_arrow().drop_columns([SEARCH_TEXT, "ocr"])  # the same records, as schema 1 stored them
    db = lancedb.connect(str(path))
    db.drop_table(first.table_name)
    db.create_table(first.table_name, data=rows.cast(old_schema), on_bad_vectors="null")
    first._state.merge_insert("key").when_matched_update_all().execute(
        pa.Table.from_pylist([{"key": "schema", "value": "1"}], schema=first._state.schema)
    )

    reopened = LanceStore(path)
    reopened.open(MODEL, DIM)
    assert reopened.count() == 2 and reopened.get(item(1).record.id) == item(1, caption="an invoice").record
    assert [h.record.id for h in reopened.keyword_search("invoice", k=5)] == [item(1).record.id]
    assert [h.record.id for h in reopened.keyword_search("zanzibar", k=5)] == [item(2).record.id]
    reopened.upsert([item(3, caption="another invoice")])
    assert {h.record.id for h in reopened.keyword_search("invoice", k=5)} == {item(1).record.id, item(3).record.id}
    assert reopened.search(unit(3), k=1)[0].record.id == item(3).record.id
    assert reopened._get_state("schema") == "3"


def test_a_library_from_before_text_was_read_gets_the_column_and_waits_to_be_read(tmp_path: Path) -> None:
    path = tmp_path / "lancedb"
    first = LanceStore(path)
    first.open(MODEL, DIM)
    first.upsert([item(1, caption="an invoice"), item(2)])
    rows = first._table.to_arrow().drop_columns(["ocr"])  # the same records, as schema 2 stored them
    db = lancedb.connect(str(path))
    db.drop_table(first.table_name)
    old_schema = pa.schema([f for f in images_schema(DIM) if f.name != "ocr"])
    db.create_table(first.table_name, data=rows.cast(old_schema), on_bad_vectors="null")

    reader = LanceStore(path)  # a process that only reads (imagematch check) reads it as it is
    assert {r.id for r in reader.page(limit=5)} == {item(1).record.id, item(2).record.id}
    assert reader.get(item(1).record.id) == item(1, caption="an invoice").record

    reopened = LanceStore(path)
    reopened.open(MODEL, DIM)
    stored = reopened.get(item(1).record.id)
    assert stored is not None and stored.ocr.pending and stored == item(1, caption="an invoice").record
    read = replace(stored, ocr=ImageText("reader", (TextLine("Zanzibar ferry", (0.1, 0.2, 0.5, 0.3), 0.97),)))
    reopened.update(read, None)
    assert reopened.get(item(1).record.id) == read
    assert [h.record.id for h in reopened.keyword_search("zanzibar", k=5)] == [item(1).record.id]
    assert reopened._get_state("schema") == "3"


def _file_versions(table_folder: Path) -> set[str]:
    """The format version each data file declares in its footer: major and minor (u16 each), then "LANC"."""
    versions = set()
    for data in (table_folder / "data").glob("*.lance"):
        footer = data.read_bytes()[-8:]
        assert footer[4:] == b"LANC"
        versions.add(f"{int.from_bytes(footer[:2], 'little')}.{int.from_bytes(footer[2:4], 'little')}")
    return versions


def test_new_libraries_are_written_in_the_fast_lookup_format(tmp_path: Path) -> None:
    store = LanceStore(tmp_path / "lancedb")
    store.open(MODEL, DIM)
    store.upsert([item(1), item(2)])
    store.maintain()
    store.upsert([item(3)])
    assert _file_versions(tmp_path / "lancedb" / f"{store.table_name}.lance") == {FILE_FORMAT}
    assert set(store.get_many([item(1).record.id, item(3).record.id])) == {item(1).record.id, item(3).record.id}
