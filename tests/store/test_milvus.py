"""Milvus specifics beyond the conformance suite: where Milvus Lite lives, and the server layout."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from imagematch.factory import build_store
from imagematch.filters import parse_filter
from imagematch.fingerprint import phash_from_hex
from imagematch.records import ImageMatchError, ImageText, NotSupported, TextLine
from imagematch.settings import Settings, SettingsError, load_settings
from imagematch.store import milvus
from imagematch.store.fields import FIELDS
from imagematch.store.milvus import MilvusStore
from tests.store.test_conformance import DIM, MODEL, item, unit


def index_type(store: MilvusStore, field: str) -> str:
    described = MilvusClient(store.uri).describe_index(store.images, field)
    return str(described["index_type"])


def test_default_is_milvus_lite_in_the_data_directory(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, store="milvus", data_dir=tmp_path / "data")  # type: ignore[call-arg]
    store = build_store(settings)
    assert isinstance(store, MilvusStore) and store.lite and store.uri == str(tmp_path / "data" / "milvus.db")
    store.open(MODEL, DIM)
    store.upsert([item(1)])
    assert (tmp_path / "data" / "milvus.db").exists()
    assert index_type(store, "vector") == "FLAT"  # exact search: Lite holds small libraries


def test_server_layout_works_end_to_end(tmp_path: Path) -> None:
    """HNSW, an inverted index on file_hash, iterator scans and compaction: the code a Milvus server runs,
    exercised here on Milvus Lite, which implements the same calls."""
    store = MilvusStore(str(tmp_path / "milvus.db"))
    store.lite = False
    store.open(MODEL, DIM)
    assert index_type(store, "vector") == "HNSW" and index_type(store, "file_hash") == "INVERTED"
    store.upsert([item(i, words=True) for i in range(40)])
    assert [r.id for r in store.page(limit=3)] == [item(i).record.id for i in (39, 38, 37)]
    assert sorted(store.ids()) == sorted(item(i).record.id for i in range(40))
    assert store.search(unit(7), k=1)[0].record.id == item(7).record.id
    assert store.search(unit(1007), k=1, field="words")[0].record.id == item(7).record.id
    phash = phash_from_hex(item(9).record.phash)
    assert store.near_phash(phash, 0)[0][0].id == item(9).record.id
    assert store.find_file_hash(item(3).record.file_hash) == item(3).record
    store.maintain()
    assert store.count() == 40


def test_collection_names_are_checked_before_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImageMatchError, match="letters, digits and underscores"):
        MilvusStore(str(tmp_path / "milvus.db"), collection="my-images")
    monkeypatch.setenv("IMAGEMATCH_MILVUS_COLLECTION", "my-images")
    with pytest.raises(SettingsError, match="IMAGEMATCH_MILVUS_COLLECTION"):
        load_settings()


def test_an_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(ImageMatchError, match=r"cannot use Milvus at http://127\.0\.0\.1:1.*IMAGEMATCH_MILVUS_URI"):
        MilvusStore("http://127.0.0.1:1")


def test_a_library_written_by_another_process_opens_and_searches(tmp_path: Path) -> None:
    """Milvus Lite starts every collection released; a new process (the server after `imagematch index`)
    must load them before it can read."""
    import subprocess
    import sys

    uri = str(tmp_path / "milvus.db")
    writer = (
        "from imagematch.store.milvus import MilvusStore\n"
        "from tests.store.test_conformance import DIM, MODEL, item\n"
        f"store = MilvusStore({uri!r})\n"
        "store.open(MODEL, DIM)\n"
        "store.upsert([item(i, words=True) for i in range(3)])\n"
        "store.close()\n"
    )
    subprocess.run([sys.executable, "-c", writer], check=True, cwd=Path(__file__).parents[2], timeout=120)
    store = MilvusStore(uri)
    store.open(MODEL, DIM)
    assert store.count() == 3
    assert store.search(unit(1), k=1)[0].record.id == item(1).record.id
    assert store.stored_model() == (MODEL, DIM)


def test_a_collection_without_lower_cased_names_asks_for_a_reindex(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Collections made before camera and lens filters ignored case (schema 2) cannot answer them: a clear
    note, never a silently case-sensitive answer; the rebuild of `imagematch reindex` makes them answerable."""
    uri = str(tmp_path / "milvus.db")
    with monkeypatch.context() as old_version:
        old_version.setattr(milvus, "_LOWER_FIELDS", {})
        old = MilvusStore(uri)
        old.open(MODEL, DIM)
        old.upsert([item(1, camera="Canon EOS R5"), item(2, camera="Nikon Z 6")])
        old.close()
    store = MilvusStore(uri)
    store.open(MODEL, DIM)
    assert store.count(parse_filter({"image.format": "PNG"})) == 1  # other filters answer as before
    with pytest.raises(NotSupported, match="run `imagematch reindex`"):
        store.count(parse_filter({"$or": [{"album": "a"}, {"image.camera": "canon"}]}))
    rebuilt = store.start_rebuild(MODEL, DIM)
    rebuilt.upsert([item(1, camera="Canon EOS R5"), item(2, camera="Nikon Z 6")])
    store.finish_rebuild()
    assert store.count(parse_filter({"image.camera": "canon"})) == 1


def test_a_collection_without_text_in_pictures_refuses_a_correction_instead_of_losing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Collections made before the text in pictures was stored (schema 3 and older) have no field for it. A
    correction or `imagematch ocr` writing it is refused with a note to run `imagematch reindex`, never answered
    as stored and lost; an upload is kept, and the log says once that its text is not."""
    uri = str(tmp_path / "milvus.db")
    with monkeypatch.context() as old_version:
        old_version.setattr(milvus, "FIELDS", tuple(field for field in FIELDS if field.name != "ocr"))
        old = MilvusStore(uri)
        old.open(MODEL, DIM)
        old.upsert([item(1)])
        old.close()
    store = MilvusStore(uri)
    store.open(MODEL, DIM)
    stored = item(1).record
    for text in (ImageText(correction="Biscuit's bowl"), ImageText("ppocr", (TextLine("OPEN", (0, 0, 1, 1), 0.9),))):
        with pytest.raises(NotSupported, match="run `imagematch reindex`"):
            store.update(replace(stored, ocr=text), None)
    assert store.get(stored.id) == stored
    read = ImageText("ppocr", (TextLine("SALE", (0, 0, 1, 1), 0.9),))
    with caplog.at_level(logging.WARNING, logger=milvus.__name__):
        store.upsert([item(2, ocr=read)])
        store.upsert([item(3, ocr=read)])
    assert store.count() == 3
    notes = [r.getMessage() for r in caplog.records if "imagematch reindex" in r.getMessage()]
    assert len(notes) == 1 and "text in pictures" in notes[0], notes
    rebuilt = store.start_rebuild(MODEL, DIM)
    rebuilt.upsert([item(1, ocr=ImageText(correction="Biscuit's bowl"))])
    store.finish_rebuild()
    assert store.get(stored.id).ocr.correction == "Biscuit's bowl"  # type: ignore[union-attr]


def test_a_second_process_on_a_milvus_lite_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """Milvus Lite locks its file: the second process gets a message that says so, not 'check the URI'."""
    path = tmp_path / "milvus.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from imagematch.store.milvus import MilvusStore; "
            f"MilvusStore({str(path)!r}); print('open', flush=True); time.sleep(120)",
        ],
        env={**os.environ, "PYTHONPATH": str(Path(milvus.__file__).resolve().parents[2])},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(ImageMatchError, match="one process per file"):
            MilvusStore(str(path))
    finally:
        holder.kill()
        holder.wait()
